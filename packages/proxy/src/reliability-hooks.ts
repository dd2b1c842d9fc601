/**
 * Hooks for reliability runs (`@es/chaos`), set through the environment so they never show
 * up in the flags a user reads:
 * - `ES_ROUTING_JOURNAL=<file>`: append the proxy's routing journal (every upstream attempt
 *   and every routing change, in order) to `<file>` as JSON lines, mode 0600, each naming the
 *   `pid` of the process that wrote it (the scheduler and every data-plane process append to
 *   one file, each judged against its own routing table);
 * - `ES_PLANT_FAULTS=stale-routing[=ms]`: plant a fault on purpose so a run proves that its
 *   checks see it (`stale-routing`: the proxy reads routable sets at most every `ms`, default
 *   5000, and so keeps sending to workers that left routing; `silent-stream-cut`: a stream
 *   whose worker fails mid-way ends without its error event; `continue-from-scratch`: a cut
 *   generation is continued from the prompt alone, so its text repeats and the engines see
 *   a restart).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { PlantedFaults, RoutingJournal, RoutingJournalEntry } from './journal.js';

/** What the proxy gets from the environment, and how to flush it on exit. */
export interface ReliabilityHooks {
  journal?: RoutingJournal;
  plantedFaults?: PlantedFaults;
  /** Human-readable list of the planted faults, for a loud start-up warning. */
  planted: string[];
  /** Flush and close the journal file. */
  close(): void;
}

/** Known planted faults: name → how its optional `=value` sets `PlantedFaults`. */
const FAULTS: Record<string, (value: string | undefined, into: PlantedFaults) => void> = {
  'stale-routing': (value, into) => {
    const ms = value === undefined ? 5_000 : Number(value);
    if (!Number.isFinite(ms) || ms <= 0) {
      throw new Error(`ES_PLANT_FAULTS: stale-routing=${value} must be a positive number of ms`);
    }
    into.staleRoutingMs = ms;
  },
  'silent-stream-cut': (value, into) => {
    if (value !== undefined) throw new Error('ES_PLANT_FAULTS: silent-stream-cut takes no value');
    into.silentStreamCut = true;
  },
  'continue-from-scratch': (value, into) => {
    if (value !== undefined) {
      throw new Error('ES_PLANT_FAULTS: continue-from-scratch takes no value');
    }
    into.continueFromScratch = true;
  },
};

/** Parse `ES_PLANT_FAULTS` (comma-separated `name[=value]`); throws naming a bad entry. */
export function parsePlantedFaults(text: string | undefined): PlantedFaults {
  const faults: PlantedFaults = {};
  for (const item of (text ?? '').split(',').map((s) => s.trim())) {
    if (item === '') continue;
    const [name = '', value] = item.split('=', 2);
    const apply = FAULTS[name];
    if (apply === undefined) {
      throw new Error(
        `ES_PLANT_FAULTS: unknown fault "${name}"; known: ${Object.keys(FAULTS).join(', ')}`,
      );
    }
    apply(value, faults);
  }
  return faults;
}

/**
 * A journal appended to `path`. Entries are buffered for at most one event-loop turn and
 * written with one synchronous write, so their order in the file is the order they happened
 * in, and a SIGKILL loses at most the current turn's entries.
 */
function fileJournal(path: string): { journal: RoutingJournal; close(): void } {
  const fd = openSync(path, 'a', 0o600);
  let pending: string[] = [];
  let scheduled = false;
  let closed = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0 || closed) return;
    const text = pending.join('');
    pending = [];
    writeSync(fd, text);
  };
  const write = (entry: RoutingJournalEntry | { type: 'start'; time: number; pid: number }) => {
    if (closed) return;
    pending.push(`${JSON.stringify({ ...entry, pid: process.pid })}\n`);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
  // A new process starts with nothing routable: the checker resets its view here.
  write({ type: 'start', time: Date.now(), pid: process.pid });
  flush();
  return {
    journal: write,
    close() {
      flush();
      closed = true;
      closeSync(fd);
    },
  };
}

/** Read the hooks from `env` (default `process.env`). */
export function reliabilityHooks(env: NodeJS.ProcessEnv = process.env): ReliabilityHooks {
  const plantedFaults = parsePlantedFaults(env.ES_PLANT_FAULTS);
  const planted = Object.entries(plantedFaults).map(([k, v]) => `${k}=${String(v)}`);
  const file = env.ES_ROUTING_JOURNAL;
  const sink = file === undefined || file === '' ? undefined : fileJournal(file);
  const hooks: ReliabilityHooks = { planted, close: () => sink?.close() };
  if (sink !== undefined) hooks.journal = sink.journal;
  if (planted.length > 0) hooks.plantedFaults = plantedFaults;
  return hooks;
}
