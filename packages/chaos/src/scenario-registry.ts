/**
 * Every chaos scenario, once: its name (`scripts/chaos --only`), what it injects, which
 * profiles run it, the promise checks it adds and how it runs in each profile. `scripts/chaos`
 * (the long profile), the `reliability` vitest suite (the short profile) and the report iterate
 * this list; a scenario added here is in all three.
 */
import { join } from 'node:path';
import {
  controllerRestartScenario,
  controllerStopScenario,
  hostileScenario,
  sbatchFailureScenario,
} from './cluster-scenarios.js';
import { engineMisbehaviourScenario, launchFailureScenario } from './own-scheduler-scenarios.js';
import { OTHER_USER_CHECKS, OTHER_USER_FAULT, otherUserScenario } from './other-user.js';
import type { FaultResult } from './report.js';
import type { SbatchShim } from './sbatch-shim.js';
import {
  esProxyKillScenario,
  GAP_CHECK,
  OTHERS_CHECK,
  PROBE_CHECK,
  REPLACED_CHECK,
  RESPAWN_CHECK,
  schedulerDownScenario,
  schedulerRestartScenario,
} from './data-plane-scenarios.js';
import { scaleScenario } from './scale-scenario.js';
import type { ChaosContext } from './scenario-kit.js';
import {
  engineHangScenario,
  engineKillScenario,
  preemptionScenario,
  workerKillScenario,
} from './worker-scenarios.js';

/** `short`: the `reliability` vitest suite (CI); `long`: `scripts/chaos`. */
export type ChaosProfile = 'short' | 'long';

/** What a scenario runs with: the profile's settings and, for `shared` ones, the scheduler. */
export interface ScenarioRun {
  profile: ChaosProfile;
  /** The shared scheduler under load; `shared` scenarios throw without it. */
  ctx?: ChaosContext;
  /** The run's log directory; a scenario with its own scheduler logs under `<logDir>/<name>`. */
  logDir: string;
  /** The run's scheduler id; a scenario's own scheduler gets one derived from it. */
  schedulerId: string;
  /** The sbatch shim on the shared scheduler's PATH (the `sbatch-*` scenarios need it). */
  shim?: SbatchShim;
  /** Faults planted on purpose (`--plant`). */
  plants: ReadonlySet<string>;
  /** Environment of the schedulers scenarios start themselves (`ES_PLANT_FAULTS`). */
  env: Record<string, string>;
  /** Concurrent clients of a scenario's own load. */
  concurrency: number;
  /** `--stop-seconds`, `--sbatch-fail-seconds`, `--misbehaviour-seconds` of the long profile, ms. */
  stopMs: number;
  /** `--scheduler-down-seconds` of the long profile (default 120 s), ms. */
  schedulerDownMs: number;
  sbatchFailMs: number;
  misbehaviourMs: number;
  log: (message: string) => void;
}

/** One scenario of the registry. */
export interface Scenario {
  /** Its name on the command line (`--only`). */
  name: string;
  /** What it injects and what it promises (the reliability suite's test title). */
  description: string;
  /** `shared`: injected into the one scheduler under load; `own`: starts a scheduler of its own. */
  scheduler: 'shared' | 'own';
  /** The profiles that run it. */
  profiles: readonly ChaosProfile[];
  /**
   * The promise checks it adds to a result (the scenarios under load are judged by every
   * check of `judge` too, `CHECKS`; the shared scheduler's by the capacity check as well).
   */
  checks: readonly string[];
  /** Only as root (it creates an unprivileged user): the short profile skips it otherwise. */
  rootOnly?: boolean;
  /** A report section of its own: the `fault` of its results and the section's heading. */
  section?: { fault: string; heading: string };
  run(run: ScenarioRun): Promise<FaultResult>;
}

const shared = (run: ScenarioRun): ChaosContext => {
  if (run.ctx === undefined) throw new Error('a shared scenario needs the shared scheduler');
  return run.ctx;
};
const sbatchShim = (run: ScenarioRun): SbatchShim => {
  if (run.shim === undefined) throw new Error('the sbatch scenarios need the sbatch shim');
  return run.shim;
};
const long = (run: ScenarioRun) => run.profile === 'long';
const STREAMS_CUT = 'streams cut';
const SBATCH_CHECKS = [
  'sbatch calls beyond the backoff bound',
  'no sbatch retry during the failure',
  'late resumption',
];
const sbatch = (mode: 'transient' | 'hang' | 'policy'): Scenario => ({
  name: `sbatch-${mode}`,
  description: `sbatch ${mode === 'policy' ? 'refuses by policy' : mode === 'hang' ? 'hangs' : 'fails transiently'} while a node must be replaced: calls within the backoff bound, submissions resume within one step of recovery`,
  scheduler: 'shared',
  profiles: ['long'],
  checks: SBATCH_CHECKS,
  run: (run) =>
    sbatchFailureScenario(shared(run), sbatchShim(run), {
      mode,
      failMs: run.sbatchFailMs,
      passMode: run.plants.has('double-submit') ? 'double' : 'pass',
    }),
});
const LAUNCH_CHECKS = [
  'submissions beyond the bound',
  'jobs cancelled later than start-up timeout + 5 s',
  'over-acquisition',
];

/**
 * The scenarios, in the order a run injects them: the shared scheduler's first, then the ones
 * with a scheduler of their own.
 */
export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'preemption',
    description:
      'preemption: no request to the draining worker, nothing lost, 0 streams cut, no over-acquisition',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [STREAMS_CUT],
    run: (run) => preemptionScenario(shared(run), { highJobSeconds: long(run) ? 30 : 20 }),
  },
  {
    name: 'preemption-grace',
    description: 'preemption with GraceTime 15: the drain lets in-flight streams finish',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: ['streams cut despite the grace period'],
    run: (run) =>
      preemptionScenario(shared(run), { highJobSeconds: long(run) ? 30 : 20, graceTime: 15 }),
  },
  {
    name: 'engine-kill',
    description:
      'SIGKILL of an engine instance: non-streaming requests retried, streams continued elsewhere (0 cut, none restarted)',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [STREAMS_CUT],
    run: (run) => engineKillScenario(shared(run)),
  },
  {
    name: 'engine-hang',
    description:
      'a hung engine (SIGSTOP 15 s short, 20 s long): out of routing within seconds, waiting requests moved, its streams continued after the 3 s stall timeout, nothing hangs',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [STREAMS_CUT],
    run: (run) => engineHangScenario(shared(run), { frozenMs: long(run) ? 20_000 : 15_000 }),
  },
  {
    name: 'worker-kill',
    description:
      'SIGKILL of a worker daemon: its node is replaced, nothing lost, 0 streams cut, its engines do not outlive it',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [STREAMS_CUT, 'engine processes outliving the job'],
    run: (run) => workerKillScenario(shared(run)),
  },
  {
    name: 'es-proxy-kill',
    description:
      'SIGKILL of one of 2 data-plane processes (es-proxy): only its in-flight requests fail (counted), the port keeps answering, the process is respawned, nothing else lost',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [
      OTHERS_CHECK,
      PROBE_CHECK,
      RESPAWN_CHECK,
      'the kill hit no request in flight',
      GAP_CHECK,
    ],
    run: (run) =>
      esProxyKillScenario(shared(run), {
        killEveryProcess: run.plants.has('proxy-kill-every-process'),
        noRespawn: run.plants.has('proxy-no-respawn'),
      }),
  },
  {
    name: 'scheduler-restart',
    description:
      'scheduler SIGKILL and restart, the data plane in its own processes, clients without retries: 0 lost, 0 streams cut, no gap over 1 s, 0 duplicate submissions, workers ready within 2 heartbeats',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [
      STREAMS_CUT,
      GAP_CHECK,
      'duplicate submissions',
      'workers not ready within 2 heartbeats',
    ],
    // Clients with 0 retries: a failed request is then one the data plane let fail, not one a
    // client's retry hid (openai's default of 2 retries would hide a connection refused).
    run: (run) =>
      schedulerRestartScenario(shared(run), {
        downMs: long(run) ? 2_000 : 500,
        clientRetries: 0,
      }),
  },
  {
    name: 'scheduler-down',
    description:
      'scheduler SIGKILLed and kept down (--scheduler-down-seconds, 120 s), a worker SIGKILLed meanwhile, then restarted: 0 lost, 0 streams cut (continued by the data plane on its own), no gap over 1 s, the dead node replaced after the restart',
    scheduler: 'shared',
    // CI's budget: the outage's promises are proven by the long profile (and planted in CI).
    profiles: ['long'],
    checks: [STREAMS_CUT, GAP_CHECK, REPLACED_CHECK, 'engine processes outliving the job'],
    run: (run) =>
      schedulerDownScenario(shared(run), {
        downMs: run.schedulerDownMs,
        stayDown: run.plants.has('scheduler-stays-down'),
      }),
  },
  {
    name: 'slurmctld-stop',
    description:
      'slurmctld frozen (SIGSTOP, --stop-seconds): nothing cancelled or removed, serving continues',
    scheduler: 'shared',
    profiles: ['long'],
    checks: ['jobs cancelled', 'workers removed', 'no request served while stopped'],
    run: (run) => controllerStopScenario(shared(run), { stopMs: run.stopMs }),
  },
  {
    name: 'slurmctld-restart',
    description:
      'slurmctld restart (5 s down): nothing cancelled, removed or resubmitted; serving continues',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [
      'jobs cancelled',
      'workers removed',
      'submissions',
      'no request served while it was down',
    ],
    run: (run) => controllerRestartScenario(shared(run), { downMs: 5_000 }),
  },
  sbatch('transient'),
  sbatch('hang'),
  sbatch('policy'),
  {
    name: 'hostile',
    description: 'hostile input: every answer a clean 4xx, no crash, memory back near baseline',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: [
      'scheduler crashes',
      'data-plane processes crashed',
      'answers not a clean 4xx',
      'memory not back near baseline (>64 MB above)',
    ],
    run: (run) =>
      hostileScenario(shared(run), {
        logDir: run.logDir,
        model: 'mock-model',
        // Long: longer than the proxy's 30 s body deadline, so the report shows it ending them.
        ...(long(run) ? { lorisMs: 35_000 } : {}),
      }),
  },
  {
    name: 'scale',
    description:
      '1,024 simulated workers heartbeating every second: every heartbeat answered, none timed out, client TTFB p50 grown by at most 5 ms',
    scheduler: 'shared',
    profiles: ['long'],
    checks: [
      'registrations refused',
      'heartbeats not answered 200',
      'simulated workers timed out',
      'time to first byte p50 grown by more than 5 ms',
    ],
    run: (run) =>
      scaleScenario(shared(run), { logDir: run.logDir, model: 'mock-model', durationMs: 30_000 }),
  },
  {
    // Last of the shared ones: until workers ignore unsigned answers, its squatter makes every
    // worker exit.
    name: 'other-user',
    description:
      'another user of the cluster: engines refuse it, nothing it can read holds a key, public routes show no address, a squatter on the scheduler port during a restart learns nothing replayable and stops no worker, a replayed admin request is refused',
    scheduler: 'shared',
    profiles: ['short', 'long'],
    checks: Object.values(OTHER_USER_CHECKS),
    rootOnly: true,
    section: {
      fault: OTHER_USER_FAULT,
      heading:
        'Another user of the cluster (attacks run as an unprivileged user; every figure must be 0)',
    },
    run: (run) => otherUserScenario(shared(run), long(run) ? { logDir: run.logDir } : {}),
  },
  // Engines that misbehave by flag, under their own one-node scheduler. Every stream dies
  // once, half-way (40 of its 80 tokens): continued on the node's other engine, it must end
  // whole (its 40 remaining tokens are the continuation's last, which the flag never cuts).
  {
    name: 'engine-die-mid-stream',
    description:
      'engines that die mid-stream: every stream they cut half-way is continued on the other engine: 0 cut, none restarted, content exact; nothing hangs',
    scheduler: 'own',
    profiles: ['short', 'long'],
    checks: [STREAMS_CUT, 'fault never hit a stream'],
    run: (run) =>
      misbehaving(run, 'engine-die-mid-stream', 'engine dies mid-stream', '--die-mid-stream 40', {
        continuable: true,
      }),
  },
  {
    name: 'engine-crash',
    description:
      'engines that crash (exit after 40 requests): non-streaming requests retried or failed with a status, nothing hangs, nothing restarted from scratch',
    scheduler: 'own',
    profiles: ['long'],
    checks: ['fault never hit a stream'],
    run: (run) =>
      misbehaving(
        run,
        'engine-crash',
        'engine crashes (exit after 40 requests)',
        '--crash-after 40',
        { continuable: false },
      ),
  },
  // Jobs that never serve, under their own one-node scheduler.
  {
    name: 'launch-failure',
    description:
      'a batch script that fails at launch: resubmitted with a backoff, never more than max_nodes live jobs',
    scheduler: 'own',
    profiles: ['long'],
    checks: LAUNCH_CHECKS,
    run: (run) =>
      launchFailureScenario({
        logDir: join(run.logDir, 'launch-failure'),
        schedulerId: `${run.schedulerId}f`,
        label: 'batch script fails at launch',
        setup: ['exit 1'],
        startupTimeoutS: 15,
        durationMs: 60_000,
        log: run.log,
      }),
  },
  {
    name: 'never-registers',
    description:
      'a job that runs but whose worker never registers: cancelled after the start-up timeout and replaced',
    scheduler: 'own',
    profiles: ['long'],
    checks: [...LAUNCH_CHECKS, 'no job cancelled for not registering'],
    run: (run) =>
      launchFailureScenario({
        logDir: join(run.logDir, 'never-registers'),
        schedulerId: `${run.schedulerId}n`,
        label: 'job runs, worker never registers',
        setup: ['sleep 100000'],
        startupTimeoutS: 15,
        durationMs: 60_000,
        log: run.log,
      }),
  },
];

/** An engine-misbehaviour scenario of the registry, in either profile. */
function misbehaving(
  run: ScenarioRun,
  name: string,
  label: string,
  flags: string,
  options: { continuable: boolean },
): Promise<FaultResult> {
  return engineMisbehaviourScenario({
    logDir: join(run.logDir, name),
    schedulerId: `${run.schedulerId}m`,
    label,
    engineFlags: `${flags}${run.plants.has('drop-chunk') ? ' --drop-chunk 3' : ''}`,
    durationMs: long(run) ? run.misbehaviourMs : 15_000,
    concurrency: run.concurrency,
    continuable: options.continuable,
    env: run.env,
    log: run.log,
  });
}

/** The scenarios a profile runs, in order. */
export function scenariosOf(profile: ChaosProfile): Scenario[] {
  return SCENARIOS.filter((s) => s.profiles.includes(profile));
}
