/**
 * "SIGTERM the process group, then SIGKILL after a grace", written once. A group is named
 * by its leader's pid (a child spawned with `detached: true` leads its own group), and
 * every signal goes to `-pgid`, so a wrapper's or an engine's own children go too.
 */

/** Timers used by {@link terminateGroup}; inject fakes to test timing without waiting. */
export interface GroupTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: GroupTimers = {
  setTimeout: (callback, ms) => {
    const timer = setTimeout(callback, ms);
    // A pending SIGKILL must not keep the process alive on its own.
    timer.unref();
    return timer;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/**
 * How a termination ended: the group's leader exited in the grace, the group was
 * SIGKILLed, or the caller cancelled the pending SIGKILL.
 */
export type TerminationResult = 'exited' | 'killed' | 'cancelled';

/** Options of {@link terminateGroup}. */
export interface TerminateGroupOptions {
  /** Time between SIGTERM and SIGKILL, in ms. */
  graceMs: number;
  /**
   * Settles when the leader has exited (its `exit`/`close` event). Without it the group is
   * SIGKILLed after the grace whatever happened, as SLURM's KillWait does.
   */
  exited?: PromiseLike<unknown>;
  /**
   * SIGKILL the group once the leader has exited in the grace too: children it left
   * behind in its group (an engine's own workers) go with it. Default false.
   */
  sweep?: boolean;
  /** Called right after the SIGKILL, e.g. to kill processes outside the group. */
  onKill?: () => void;
  /** First signal (default SIGTERM). */
  signal?: NodeJS.Signals;
  /** Timers (default: the real ones, unref'd). */
  timers?: GroupTimers;
}

/** A termination under way. */
export interface Termination {
  /** Resolves once the leader exited (with `exited`), the SIGKILL was sent, or on `cancel()`. */
  readonly done: Promise<TerminationResult>;
  /** Stop the pending SIGKILL (the group was dealt with otherwise). */
  cancel(): void;
}

/**
 * Send `signal` to process group `pgid`. Returns false when the group is gone (ESRCH) or
 * not ours (EPERM); never throws. An undefined pgid (a child that never started) is a no-op.
 * @example
 * signalGroup(child.pid, 'SIGKILL');
 */
export function signalGroup(pgid: number | undefined, signal: NodeJS.Signals): boolean {
  if (pgid === undefined || !Number.isInteger(pgid) || pgid <= 1) return false;
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Whether any process of group `pgid` still exists (signal 0 reaches it). */
export function isGroupAlive(pgid: number | undefined): boolean {
  return signalGroup(pgid, 0 as unknown as NodeJS.Signals);
}

/**
 * SIGTERM process group `pgid` now and SIGKILL it `graceMs` later unless its leader exits
 * first (`exited`). Never throws.
 * @example
 * const child = spawn(cmd, args, { detached: true });
 * const exited = new Promise((resolve) => child.once('close', resolve));
 * await terminateGroup(child.pid, { graceMs: 5_000, exited, sweep: true }).done;
 */
export function terminateGroup(
  pgid: number | undefined,
  options: TerminateGroupOptions,
): Termination {
  const timers = options.timers ?? realTimers;
  let settle: (result: TerminationResult) => void = () => {};
  const done = new Promise<TerminationResult>((resolve) => {
    settle = resolve;
  });
  let finished = false;
  const finish = (result: TerminationResult) => {
    if (finished) return;
    finished = true;
    timers.clearTimeout(timer);
    settle(result);
  };
  const kill = () => {
    if (finished) return;
    signalGroup(pgid, 'SIGKILL');
    options.onKill?.();
    finish('killed');
  };
  // A group already gone still waits out the grace: `onKill` may have processes outside it.
  signalGroup(pgid, options.signal ?? 'SIGTERM');
  const timer = timers.setTimeout(kill, options.graceMs);
  options.exited?.then(
    () => {
      if (finished) return;
      if (options.sweep === true) signalGroup(pgid, 'SIGKILL');
      finish('exited');
    },
    () => {},
  );
  return {
    done,
    cancel: () => finish('cancelled'),
  };
}
