import type { JobState } from '@es/pool';

/** A job as `squeue` reports it (see {@link parseSqueue}). */
export interface SlurmJob {
  id: string;
  name: string;
  /** The `--comment`, '' when none. */
  comment: string;
  state: JobState;
  /** SLURM's reason, '' for `None`. */
  reason: string;
  /** Node list, '' while pending. */
  nodes: string;
  /** How often the job was requeued (0 when never). */
  restartCount: number;
  /** Seconds left before the time limit; undefined when unlimited or unknown. */
  timeLeftSeconds?: number;
  /** Start time (ms since epoch); for a pending job, SLURM's expected start when it has one. */
  startTime?: number;
  /** Submit time (ms since epoch). */
  submitTime?: number;
}

/** Field separator in squeue output: ASCII unit separator, which no SLURM field contains. */
export const SQUEUE_SEPARATOR = '\x1f';

const FIELDS = [
  'JobID',
  'State',
  'Reason',
  'NodeList',
  'Name',
  'Comment',
  'TimeLeft',
  'StartTime',
  'SubmitTime',
  'RestartCnt',
] as const;

/**
 * The `squeue --Format` value {@link parseSqueue} reads: every field unpadded and
 * untruncated (`:0`) and followed by {@link SQUEUE_SEPARATOR}.
 */
export const SQUEUE_FORMAT: string = FIELDS.map((f) => `${f}:0${SQUEUE_SEPARATOR}`).join(',');

const STATES: ReadonlySet<string> = new Set<JobState>([
  'PENDING',
  'CONFIGURING',
  'RUNNING',
  'COMPLETING',
  'COMPLETED',
  'CANCELLED',
  'FAILED',
  'TIMEOUT',
  'PREEMPTED',
  'NODE_FAIL',
  'BOOT_FAIL',
  'DEADLINE',
  'OUT_OF_MEMORY',
  'SUSPENDED',
  'STOPPED',
  'REQUEUED',
  'REQUEUE_HOLD',
  'REQUEUE_FED',
  'RESIZING',
  'SIGNALING',
  'SPECIAL_EXIT',
  'STAGE_OUT',
  'REVOKED',
  'RESV_DEL_HOLD',
  'UNKNOWN',
]);

/** Maps a SLURM state name to {@link JobState}; unknown names become `UNKNOWN`. */
export function parseJobState(value: string): JobState {
  // squeue may append flags ("CANCELLED by 0", "RUNNING+") in some versions.
  const state = value.trim().split(/[\s+]/)[0]?.toUpperCase() ?? '';
  return STATES.has(state) ? (state as JobState) : 'UNKNOWN';
}

/**
 * Parses a SLURM duration (`59`, `12:34`, `1:02:03`, `2-03:04:05`, `2-03`) into seconds;
 * undefined for `UNLIMITED`, `INVALID`, `NOT_SET`, `N/A` and anything unparseable.
 */
export function parseDuration(value: string): number | undefined {
  const match = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(value.trim());
  if (!match) return undefined;
  const [, days, a, b, c] = match;
  const d = Number(days ?? 0);
  const nums = [a, b, c].filter((x): x is string => x !== undefined).map(Number);
  // With days, or with three parts: hours[:minutes[:seconds]]. Two parts: minutes:seconds.
  // A bare number is minutes (sbatch --time syntax; squeue prints seconds as 0:ss).
  const [h, m, s] =
    days !== undefined || nums.length === 3
      ? [nums[0] ?? 0, nums[1] ?? 0, nums[2] ?? 0]
      : nums.length === 2
        ? [0, nums[0] ?? 0, nums[1] ?? 0]
        : [0, nums[0] ?? 0, 0];
  return ((d * 24 + h) * 60 + m) * 60 + s;
}

/**
 * Parses a SLURM timestamp (`2026-11-29T03:32:21`, the controller host's local time, as
 * squeue prints it) into ms since epoch; undefined for `N/A`, `Unknown`, `None`.
 */
export function parseSlurmTime(value: string): number | undefined {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$/.exec(value.trim());
  if (!match) return undefined;
  const [, y, mo, d, h, mi, s] = match.map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return new Date(y, mo - 1, d, h, mi, s).getTime();
}

function text(value: string | undefined): string {
  const v = (value ?? '').trim();
  return v === '(null)' || v === 'None' || v === 'N/A' ? '' : v;
}

/**
 * Parses the output of `squeue -h -O <SQUEUE_FORMAT>` (pure). Lines that do not have
 * every field (e.g. warnings) are skipped.
 */
export function parseSqueue(stdout: string): SlurmJob[] {
  const jobs: SlurmJob[] = [];
  for (const line of stdout.split('\n')) {
    const fields = line.split(SQUEUE_SEPARATOR);
    if (fields.length < FIELDS.length) continue;
    const [id, state, reason, nodes, name, comment, timeLeft, start, submit, restarts] = fields;
    const jobId = (id ?? '').trim();
    if (!/^\d+/.test(jobId)) continue;
    const job: SlurmJob = {
      id: jobId,
      name: (name ?? '').trim(),
      comment: text(comment),
      state: parseJobState(state ?? ''),
      reason: text(reason),
      nodes: text(nodes),
      restartCount: Number.parseInt(restarts ?? '', 10) || 0,
    };
    const timeLeftSeconds = parseDuration(timeLeft ?? '');
    if (timeLeftSeconds !== undefined) job.timeLeftSeconds = timeLeftSeconds;
    const startTime = parseSlurmTime(start ?? '');
    if (startTime !== undefined) job.startTime = startTime;
    const submitTime = parseSlurmTime(submit ?? '');
    if (submitTime !== undefined) job.submitTime = submitTime;
    jobs.push(job);
  }
  return jobs;
}

/** Parses `sbatch --parsable` output (`<id>` or `<id>;<cluster>`); undefined when it is not one. */
export function parseSbatchOutput(stdout: string): string | undefined {
  const lines = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const last = lines.at(-1);
  const id = last?.split(';')[0];
  return id !== undefined && /^\d+$/.test(id) ? id : undefined;
}
