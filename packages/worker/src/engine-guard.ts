// The engine guard: `node engine-guard.mjs <workerPid> -- <command> [args...]`.
//
// The worker starts every engine through this process (the process-group leader) so that
// an engine never outlives its worker, even a SIGKILLed one: slurmd's proctrack/linuxproc
// finds a step's processes by parentage, and an engine reparented to init would escape the
// job's cleanup while holding the GPUs.
//
// - The engine runs in the guard's own process group, so the worker's group kill (SIGTERM,
//   then SIGKILL after its grace) reaches both.
// - The guard ignores SIGTERM: the worker owns the engine's shutdown; a SIGTERM sent to the
//   whole group reaches the engine directly, and the guard exits when the engine does.
// - The guard exits with the engine's exit code (128 + n for a death by signal n), so the
//   worker's crash detection sees the engine's outcome.
// - Every POLL_MS it checks that the worker is still alive (its pid exists and is still the
//   guard's parent); once it is gone the engine gets SIGTERM, then SIGKILL after KILL_MS.
//
// `@es/proc` stays an external import of the bundle: node resolves it from @es/worker's own
// dependencies, as it does for dist/index.mjs.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { isGroupAlive, signalGroup, terminateGroup } from '@es/proc';

const POLL_MS = 500;
const KILL_MS = 3000;

function usage(message: string): never {
  process.stderr.write(
    `engine-guard: ${message}\nusage: engine-guard <workerPid> -- <command> [args...]\n`,
  );
  process.exit(2);
}

const [pidArg, separator, command, ...args] = process.argv.slice(2);
const workerPid = Number(pidArg);
if (!Number.isInteger(workerPid) || workerPid <= 0) usage(`bad worker pid ${String(pidArg)}`);
if (separator !== '--' || command === undefined) usage('missing "-- <command>"');

// Drop the engine's argv from this process's command line, so that `ps`/`pgrep -f` on the
// engine's flags (its --port, its model) find the engine only.
process.title = `es-engine-guard (worker ${workerPid})`;

process.on('SIGTERM', () => {
  // Ignored on purpose: see the header.
});

const engine = spawn(command, args, { stdio: 'inherit' });

let workerGone = false;
const workerAlive = (): boolean => {
  if (process.ppid !== workerPid) return false;
  try {
    process.kill(workerPid, 0);
    return true;
  } catch (error) {
    // EPERM means the pid exists (owned by someone else): only ESRCH says it is gone.
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
};

// Spawned by the worker (detached), the guard leads its own process group; run by hand it
// may not, and then only the engine itself can be signalled.
const leadsGroup = isGroupAlive(process.pid);

const poll = setInterval(() => {
  if (workerGone || workerAlive()) return;
  workerGone = true;
  process.stderr.write(`engine-guard: worker ${workerPid} is gone; stopping the engine\n`);
  if (engine.pid === undefined) return;
  // The whole group: the engine's own children (vLLM's workers) go too; the guard ignores
  // SIGTERM and exits with the engine (the real timers of terminateGroup are unref'd).
  terminateGroup(leadsGroup ? process.pid : undefined, {
    graceMs: KILL_MS,
    onKill: () => {
      if (!leadsGroup) engine.kill('SIGKILL');
    },
  });
  if (!leadsGroup) engine.kill('SIGTERM');
}, POLL_MS);

engine.once('error', (error) => {
  process.stderr.write(`engine-guard: could not start ${command}: ${error.message}\n`);
  process.exit(127);
});

engine.once('exit', (code, signal) => {
  clearInterval(poll);
  if (workerGone && signal !== 'SIGKILL') {
    // Children the engine left behind in the group go with it.
    signalGroup(process.pid, 'SIGKILL');
  }
  const signo = signal === null ? 0 : (constants.signals[signal] ?? 0);
  process.exit(code ?? 128 + signo);
});
