import { ProviderError } from '@es/pool';
import type { FailureKind } from '@es/pool';

/** Every `code` a {@link SlurmError} can carry. The README documents each one. */
export type SlurmErrorCode =
  /** The controller could not be reached (connection refused, no route, DNS). Transient. */
  | 'slurm_unreachable'
  /** SLURM's own RPC timed out ("Socket timed out on send/recv operation"). Transient. */
  | 'slurm_socket_timeout'
  /** The command did not finish within our timeout and was killed. Transient. */
  | 'slurm_timeout'
  /** The controller is busy or rate limits us ("Resource temporarily unavailable"). Transient. */
  | 'slurm_busy'
  /** A QOS, association or submit limit refuses the job. Policy. */
  | 'slurm_policy_limit'
  /** The partition does not exist or may not be used. Permanent. */
  | 'slurm_invalid_partition'
  /** The account does not exist or may not be used. Permanent. */
  | 'slurm_invalid_account'
  /** The QOS does not exist or may not be used. Permanent. */
  | 'slurm_invalid_qos'
  /** A rejected option or request (bad flag, time, feature, impossible node configuration). Permanent. */
  | 'slurm_invalid_request'
  /** The job spec cannot be rendered safely (line break in a value, bad number, empty command). Permanent. */
  | 'slurm_invalid_spec'
  /** The SLURM command is not installed or not executable. Permanent. */
  | 'slurm_command_not_found'
  /** The command succeeded but its output could not be understood. Transient. */
  | 'slurm_bad_output'
  /** Any other failure (non-zero exit with an unrecognised message). Transient. */
  | 'slurm_failed';

/** Fields of a {@link SlurmError}. */
export interface SlurmErrorOptions {
  code: SlurmErrorCode;
  kind: FailureKind;
  /** True when the call may have taken effect (e.g. sbatch timed out after the job was accepted). */
  ambiguous?: boolean;
  /** The command line, as argv. */
  command?: string[];
  /** Exit code, when the process exited. */
  exitCode?: number;
  stderr?: string;
  cause?: unknown;
}

/**
 * The one error class of `@es/slurm`, a `ProviderError` of `@es/pool`. `kind` tells a
 * caller how to react (retry later, back off until a limit frees up, or give up);
 * `ambiguous` says the call may have taken effect. `isProviderError` and
 * `classifyProviderError` of `@es/pool` understand it.
 *
 * @example
 * try {
 *   await client.submit(spec);
 * } catch (error) {
 *   if (error instanceof SlurmError && error.ambiguous) {
 *     // look the job up by its --comment tag before submitting again
 *   }
 * }
 */
export class SlurmError extends ProviderError<SlurmErrorCode> {
  override readonly name = 'SlurmError';
  readonly command: string[];
  readonly exitCode: number | undefined;
  readonly stderr: string;

  constructor(message: string, options: SlurmErrorOptions) {
    super(options.code, message, {
      kind: options.kind,
      ambiguous: options.ambiguous ?? false,
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.command = options.command ?? [];
    this.exitCode = options.exitCode;
    this.stderr = options.stderr ?? '';
  }
}

/** The classification of a SLURM error message. */
export interface SlurmFailureClass {
  code: SlurmErrorCode;
  kind: FailureKind;
}

// Ordered: the first match wins. Messages are SLURM 22.05's (slurm_strerror and client
// errors); the patterns are loose enough for neighbouring versions' wording.
const RULES: readonly [RegExp, SlurmErrorCode, FailureKind][] = [
  [/socket timed out|timed out on send\/recv/i, 'slurm_socket_timeout', 'transient'],
  [
    /unable to contact slurm controller|connect(ion)? (failure|refused)|communication connection failure|zero bytes were transmitted|no route to host|backup controller in standby|slurmctld.*(not responding|down)/i,
    'slurm_unreachable',
    'transient',
  ],
  [
    /rate limit|resource temporarily unavailable|temporarily unable to accept job|controller is busy|try again later|too many (rpcs|requests)/i,
    'slurm_busy',
    'transient',
  ],
  [
    /QOSMax|QOSGrp|AssocMax|AssocGrp|MaxSubmit|job submit limit|violates accounting\/qos policy|qos.*limit|association.*limit|partition.*limit.*exceeded/i,
    'slurm_policy_limit',
    'policy',
  ],
  [
    /invalid partition|partition.*not (available|permitted|valid)|not permitted to use this partition/i,
    'slurm_invalid_partition',
    'permanent',
  ],
  [/invalid account|account.*(not valid|not permitted)/i, 'slurm_invalid_account', 'permanent'],
  [/invalid qos|qos.*(not valid|not permitted)/i, 'slurm_invalid_qos', 'permanent'],
  [
    /unrecognized option|invalid option|unknown option|invalid .*specification|requested node configuration is not available|requested time limit is invalid|invalid (argument|job id|generic resource|gres|feature|node name|dependency)|access\/permission denied|try ".* --help"/i,
    'slurm_invalid_request',
    'permanent',
  ],
];

/**
 * Classifies a SLURM command's stderr (pure). Unrecognised messages are `slurm_failed`,
 * transient: retrying an unknown failure later is safer than giving up on a deployment.
 */
export function classifySlurmMessage(stderr: string): SlurmFailureClass {
  for (const [pattern, code, kind] of RULES) {
    if (pattern.test(stderr)) return { code, kind };
  }
  return { code: 'slurm_failed', kind: 'transient' };
}
