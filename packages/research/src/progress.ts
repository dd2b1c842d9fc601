/** A one-line progress bar with rate and ETA for terminals; plain log lines otherwise. */

/** Counts shown by the progress bar. */
export interface ProgressState {
  done: number;
  total: number;
  failed: number;
  elapsedMs: number;
}

/**
 * Formats one progress line, e.g.
 * `[########------------]  8/20  40%  0.52/s  ETA 23s  failed 1`. Pure.
 */
export function formatProgress(state: ProgressState, width = 20): string {
  const fraction = state.total === 0 ? 1 : Math.min(1, state.done / state.total);
  const filled = Math.round(fraction * width);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
  const rate = state.elapsedMs > 0 ? state.done / (state.elapsedMs / 1000) : 0;
  const remaining = state.total - state.done;
  const eta = rate > 0 ? formatDuration((remaining / rate) * 1000) : '?';
  const count = `${String(state.done).padStart(String(state.total).length)}/${state.total}`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const failed = state.failed > 0 ? `  failed ${state.failed}` : '';
  return `${bar} ${count} ${percent}  ${rate.toFixed(2)}/s  ETA ${eta}${failed}`;
}

/** Formats milliseconds as `42s`, `3m05s` or `2h07m`. Pure. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, '0')}m`;
}

/** A progress display bound to a stream. */
export interface Progress {
  /** Records one finished item; `label` is printed on non-terminal streams. */
  tick(failed: boolean, label: string): void;
  /** Ends the bar's line. */
  stop(): void;
}

/**
 * Creates a progress display: a redrawn bar when `stream` is a TTY, one line per finished
 * item otherwise (logs stay readable in SLURM output files).
 */
export function createProgress(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  total: number,
  now: () => number = Date.now,
): Progress {
  const start = now();
  const state: ProgressState = { done: 0, total, failed: 0, elapsedMs: 0 };
  const tty = stream.isTTY === true;
  const draw = () => stream.write(`\r${formatProgress(state)}\x1b[K`);
  const timer = tty
    ? setInterval(() => {
        state.elapsedMs = now() - start;
        draw();
      }, 1000)
    : undefined;
  timer?.unref();
  if (tty) draw();
  return {
    tick(failed, label) {
      state.done += 1;
      if (failed) state.failed += 1;
      state.elapsedMs = now() - start;
      if (tty) draw();
      else stream.write(`[${state.done}/${state.total}] ${label}\n`);
    },
    stop() {
      if (timer) clearInterval(timer);
      if (tty) stream.write('\n');
    },
  };
}
