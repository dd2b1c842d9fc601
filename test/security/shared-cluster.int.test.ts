/**
 * Issue 14, "Safe on a shared cluster (1)", tried the way another user of the cluster would:
 * the built scheduler runs as root with the local backend (real es-worker processes, mock
 * engines), and an unprivileged user created for the test (the intruder) attacks it with
 * what every user has: the addresses the job processes listen on (found as root in /proc,
 * as a user finds them with a port scan), `ps` and /proc, and every file it may read.
 * A model name that is a flag is refused at start-up. The checks (checks.ts) return
 * findings; the first tests plant one violation of each kind to show they can fail.
 *
 * Root only: creating a user needs it (CI runs as root). Elsewhere the file is skipped.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deriveEngineKey, readDataPlaneState } from '@es/protocol';
import {
  FAST_FLAGS,
  SCHEDULER_CLI,
  descendants,
  killStartedSchedulers,
  runSchedulerToExit,
  startSchedulerProcess,
  waitFor,
  type SchedulerProcess,
} from '../../apps/scheduler/test/harness.js';
import { expectedGeneration } from '../../packages/mock-engine/src/index.js';
import { processesMentioning } from '../scripts/processes.js';
import {
  ANY_ENGINE_KEY,
  ENGINE_PATHS,
  environOf,
  isWorkerProcess,
  listenersOf,
  probeTcp,
  probeUnix,
  scanFiles,
  scanProcesses,
  targetsOf,
  tcpOutsideWorkers,
  type Secret,
  adminStatus,
  createIntruder,
  engineCredentials,
  engineTargets,
  runningAsRoot,
  secretsOfRun,
  type Intruder,
  type WalkRoot,
} from '../../packages/chaos/src/index.js';
import { processAlive } from '../../packages/testkit/src/index.js';

const SKIP_REASON = runningAsRoot()
  ? undefined
  : 'not running as root: the test cannot create the unprivileged intruder user (CI runs as root)';

/** Two jobs (local "nodes") of one mock engine each: engine keys differ per job. */
const JOBS = 2;

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

/** A directory other users may enter, so that what protects the files in it is their own mode. */
function openDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

let intruder: Intruder;

const suite = SKIP_REASON === undefined ? describe : describe.skip;

suite(`safe on a shared cluster${SKIP_REASON ? ` (skipped: ${SKIP_REASON})` : ''}`, () => {
  beforeAll(() => {
    intruder = createIntruder();
  });
  afterAll(() => intruder?.remove());

  describe('the checks report planted violations', () => {
    const plantedKey = deriveEngineKey(hex(16), 'plant');
    const planted: Secret = { name: 'the planted key', value: plantedKey };
    const cleanups: (() => void)[] = [];
    afterAll(() => {
      for (const cleanup of cleanups.reverse()) cleanup();
    });

    it('ps: a process with a key in its argv', async () => {
      // `; :` keeps sh from exec'ing sleep, so its argv (with the key as $0) stays in ps.
      const child = spawn('sh', ['-c', 'sleep 30; :', `--api-key=${plantedKey}`], {
        stdio: 'ignore',
      });
      cleanups.push(() => child.kill('SIGKILL'));
      await waitFor('the planted process', () => processAlive(child.pid ?? 0), Boolean, 5_000, 20);

      const findings = await scanProcesses(intruder, [planted]);
      child.kill('SIGKILL');
      expect(findings).toContainEqual(
        expect.stringMatching(/^ps shows the planted key: \d+ sh -c/),
      );
      expect(findings).toContainEqual(
        expect.stringMatching(new RegExp(`^/proc/${child.pid}/cmdline .* holds the planted key`)),
      );
    });

    it('files: a 0644 file with a key (and not the 0600 one beside it)', async () => {
      const dir = openDir('es-security-plant-');
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      mkdirSync(join(dir, 'logs'));
      chmodSync(join(dir, 'logs'), 0o755);
      const readable = join(dir, 'logs', 'engine-1.log');
      writeFileSync(readable, `started with --api-key ${plantedKey}\n`);
      chmodSync(readable, 0o644);
      writeFileSync(join(dir, 'secret'), plantedKey, { mode: 0o600 });
      // A key of a scheme the test does not know of: found by its shape.
      const older = join(dir, 'logs', 'es-job-1.out');
      writeFileSync(older, `engine 0 started: vllm serve m --api-key es-engine-${hex(20)}\n`);
      chmodSync(older, 0o644);

      expect((await scanFiles(intruder, [{ dir }], [planted, ANY_ENGINE_KEY])).sort()).toEqual(
        [
          `${readable} (mode 0644, readable by the intruder) holds the planted key, an engine key (es-engine-…)`,
          `${older} (mode 0644, readable by the intruder) holds an engine key (es-engine-…)`,
        ].sort(),
      );
    });

    it('requests: a server on 127.0.0.1 that answers 200 to anyone (not one that answers 401)', async () => {
      const listen = async (status: number): Promise<number> => {
        const server: Server = createHttpServer((_req, res) => {
          res.writeHead(status, { 'content-type': 'text/plain' });
          res.end(status === 200 ? 'vllm:num_requests_running 0\n' : 'unauthorized\n');
        });
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        cleanups.push(() => server.close());
        const address = server.address();
        return typeof address === 'object' && address !== null ? address.port : 0;
      };
      const open = await listen(200);
      const refusing = await listen(401);

      // Found the way the job processes' addresses are: this process's sockets in /proc.
      const listeners = listenersOf([process.pid]).filter(
        (l) => l.kind === 'tcp' && (l.port === open || l.port === refusing),
      );
      expect(listeners.map((l) => (l.kind === 'tcp' ? l.port : 0)).sort()).toEqual(
        [open, refusing].sort(),
      );
      expect(tcpOutsideWorkers(listeners)).toHaveLength(2);

      const findings = await probeTcp(
        intruder,
        targetsOf(listeners),
        [{ name: 'no Authorization', headers: {} }],
        [],
      );
      expect(findings).toHaveLength(ENGINE_PATHS.length * 2);
      for (const finding of findings) {
        expect(finding).toMatch(
          new RegExp(
            `: (GET|POST) http://127\\.0\\.0\\.1:${open}/.* answered 200 .* to no Authorization$`,
          ),
        );
      }
    });

    it('Unix sockets: one anyone may connect to (not one in a 0700 directory)', async () => {
      const dir = openDir('es-security-plant-');
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      mkdirSync(join(dir, 'private'), { mode: 0o700 });
      const listen = async (path: string, mode: number) => {
        const server = createNetServer((socket) => {
          // The intruder closes at once: its reset is no failure of the test.
          socket.on('error', () => undefined);
          socket.end('hello\n');
        });
        await new Promise<void>((resolve) => server.listen(path, resolve));
        chmodSync(path, mode);
        cleanups.push(() => server.close());
      };
      const exposed = join(dir, 'engine.sock');
      await listen(exposed, 0o777);
      await listen(join(dir, 'private', 'engine.sock'), 0o777);

      const listeners = listenersOf([process.pid]).filter(
        (l) => l.kind === 'unix' && l.path.startsWith(dir),
      );
      expect(listeners).toHaveLength(2);
      const findings = await probeUnix(intruder, listeners);
      expect(findings).toEqual([
        expect.stringMatching(`listens on Unix socket ${exposed}: the intruder connected`),
      ]);
    });
  });

  describe('a scheduler with two jobs of mock engines', () => {
    const tmpRoots = [...new Set([tmpdir(), '/tmp'])];
    // What the temp directories held before the run: only what it adds is the intruder's to read.
    let tmpBefore = new Map<string, string[]>();
    let dir = '';
    let logDir = '';
    const secret = hex(32);
    const clientKey = `es-client-${hex(16)}`;
    const adminKey = `es-admin-${hex(16)}`;
    let scheduler: SchedulerProcess;
    let startedAt = 0;

    const status = () => adminStatus(scheduler.url, adminKey);

    /**
     * The job processes: everything the scheduler started (es-worker, engine guards, engines)
     * but its data plane — es-proxy serves the client port (the scheduler's own, probed by
     * the chat test with the client key and by the key/file/ps checks below like every
     * process of the run), and is no job's.
     */
    const jobProcesses = () => {
      const plane = readDataPlaneState(join(logDir, 'data-plane.json'));
      const dataPlane = new Set(plane === undefined ? [] : [plane.pid, ...plane.workers]);
      return descendants(scheduler.pid).filter((pid) => !dataPlane.has(pid));
    };

    /** Every key of the run; an engine key for each job the scheduler or /proc knows of. */
    async function secrets(): Promise<Secret[]> {
      const jobIds = new Set(
        (await status()).deployments.flatMap((d) => d.jobs.map((j) => j.jobId)),
      );
      for (const pid of jobProcesses()) {
        const id = environOf(pid, 'SLURM_JOB_ID');
        if (id !== undefined) jobIds.add(id);
      }
      return [
        ANY_ENGINE_KEY,
        ...secretsOfRun(secret, jobIds, [
          { name: 'the client API key', value: clientKey },
          { name: 'the admin key', value: adminKey },
        ]),
      ];
    }

    beforeAll(async () => {
      tmpBefore = new Map(tmpRoots.map((d) => [d, readdirSync(d)]));
      dir = openDir('es-security-');
      logDir = join(dir, 'logs');
      // Every key from an owner-only file: nothing on a command line.
      writeFileSync(join(dir, 'secret'), `${secret}\n`, { mode: 0o600 });
      writeFileSync(join(dir, 'api-keys'), `${clientKey}\n`, { mode: 0o600 });
      writeFileSync(join(dir, 'admin-key'), `${adminKey}\n`, { mode: 0o600 });
      startedAt = Date.now();
      scheduler = await startSchedulerProcess({
        args: [
          ...['--backend', 'local', '--engine', 'mock', '--model', 'mock-model'],
          ...['--max-nodes', String(JOBS), '--local-nodes', String(JOBS)],
          ...['--gpus-per-node', '1', '--tensor-parallel-size', '1'],
          ...['--secret-file', join(dir, 'secret'), '--api-key-file', join(dir, 'api-keys')],
          ...['--admin-key-file', join(dir, 'admin-key')],
          ...['--scheduler-id', `sec${hex(3)}`, ...FAST_FLAGS],
          // The scheduler creates its log directory itself (the harness makes `logDir`, the
          // test's own directory, which exists already).
          ...['--log-dir', logDir],
        ],
        logDir: dir,
      });
      await waitFor(
        `${JOBS} ready workers`,
        status,
        (s) =>
          s.deployments.flatMap((d) => d.workers).filter((w) => w.state === 'ready').length ===
          JOBS,
        40_000,
      );
    }, 60_000);

    afterAll(async () => {
      await killStartedSchedulers();
      if (dir !== '') rmSync(dir, { recursive: true, force: true });
    });

    it('serves a chat through the scheduler (official openai client, client API key)', async () => {
      const client = new OpenAI({
        baseURL: `${scheduler.url}/v1`,
        apiKey: clientKey,
        maxRetries: 0,
      });
      const messages = [{ role: 'user' as const, content: 'hello' }];
      const chat = await client.chat.completions.create({
        model: 'mock-model',
        messages,
        max_tokens: 5,
      });
      expect(chat.choices[0]?.message.content).toBe(
        expectedGeneration({ kind: 'chat', messages }, { maxTokens: 5 }).text,
      );
    });

    it('job processes listen on TCP only in es-worker, at the addresses the scheduler advertises', async () => {
      const listeners = listenersOf(jobProcesses());
      const workers = (await status()).deployments.flatMap((d) => d.workers);
      const forwarders = new Set(
        listeners
          .filter((l) => l.kind === 'tcp' && isWorkerProcess(l.args))
          .map((l) => (l.kind === 'tcp' ? l.port : 0)),
      );
      const findings = [
        ...tcpOutsideWorkers(listeners),
        ...workers
          .filter((w) => !forwarders.has(Number(new URL(w.baseUrl).port)))
          .map(
            (w) => `worker ${w.id} is advertised at ${w.baseUrl}, which no es-worker listens on`,
          ),
      ];
      expect(listeners.filter((l) => l.kind === 'tcp').length).toBeGreaterThanOrEqual(JOBS);
      expect(findings).toEqual([]);
    });

    it('engines listen on Unix sockets the intruder cannot connect to', async () => {
      const listeners = listenersOf(jobProcesses());
      const engines = listeners.filter((l) => l.kind === 'unix' && !isWorkerProcess(l.args));
      expect(await probeUnix(intruder, listeners)).toEqual([]);
      expect(
        engines.length,
        `listening Unix sockets of the job processes: ${JSON.stringify(listeners.filter((l) => l.kind === 'unix'))}`,
      ).toBeGreaterThanOrEqual(JOBS);
    });

    it('refuses every request without the engine key, at every address a job process listens on', async () => {
      const listeners = listenersOf(jobProcesses());
      const all = await secrets();
      const jobIds = new Set(listeners.map((l) => environOf(l.pid, 'SLURM_JOB_ID') ?? ''));
      jobIds.delete('');
      // Each job's addresses get the other jobs' engine keys: one leaked key opens one job.
      const byAddress = engineTargets(
        secret,
        jobIds,
        listeners,
        (await status()).deployments.flatMap((d) => d.workers),
        (pid) => environOf(pid, 'SLURM_JOB_ID') ?? '',
      );
      const credentials = engineCredentials(secret, {
        'the client API key': clientKey,
        'the admin key': adminKey,
      });
      const targets = [...byAddress.values()].map((t) => t.target);
      expect(targets.length).toBeGreaterThanOrEqual(JOBS);
      expect(await probeTcp(intruder, targets, credentials, all)).toEqual([]);

      // The control: each address serves its job's own key, so the refusals are the key check's.
      const withOwnKey = await Promise.all(
        [...byAddress].map(async ([url, { jobId }]) => {
          const res = await fetch(`${url}/v1/models`, {
            headers: { authorization: `Bearer ${deriveEngineKey(secret, jobId)}` },
            signal: AbortSignal.timeout(5_000),
          });
          return `${url}: ${res.status}`;
        }),
      );
      expect(withOwnKey).toEqual([...byAddress.keys()].map((url) => `${url}: 200`));
    });

    it('shows the intruder no key in ps, /proc/*/cmdline or /proc/*/environ', async () => {
      expect(await scanProcesses(intruder, await secrets())).toEqual([]);
    });

    /** The log directory and the test's files (new in the temp directory), the scheduler's cwd. */
    const fileRoots = (cwd: string): WalkRoot[] => [
      ...tmpRoots.map((d) => ({ dir: d, skip: tmpBefore.get(d) ?? [] })),
      { dir: cwd, since: startedAt },
    ];

    it('leaves no key in any file the intruder can read (log dir, temp dirs, the scheduler’s cwd)', async () => {
      const roots = fileRoots(readlinkSync(`/proc/${scheduler.pid}/cwd`));
      expect(existsSync(logDir)).toBe(true);
      expect(await scanFiles(intruder, roots, await secrets())).toEqual([]);
    });

    it('leaves no key in any file the intruder can read once the scheduler has stopped', async () => {
      const roots = fileRoots(readlinkSync(`/proc/${scheduler.pid}/cwd`));
      const all = await secrets();
      // SIGTERM: the scheduler ends its local jobs; workers and engines log their way out.
      expect(await scheduler.stop()).toEqual({ code: 0, signal: null });
      expect(await scanFiles(intruder, roots, all)).toEqual([]);
    });
  });

  describe('a model name that is a flag', () => {
    let dir = '';
    beforeAll(() => {
      dir = openDir('es-security-names-');
    });
    afterAll(() => {
      if (dir !== '') rmSync(dir, { recursive: true, force: true });
    });

    /**
     * Run the scheduler with `flags` until it exits (at most 10 s), watching the processes it
     * starts: a finding for any that runs /bin/sh, or that was given the name as a word of its
     * own (`--engine-bin=/bin/sh`, which es-worker or an engine would read as a flag).
     */
    async function attack(flags: string[]) {
      const logDir = join(mkdtempSync(join(dir, 'attack-')), 'logs');
      const findings = new Set<string>();
      const watch = () => {
        for (const p of processesMentioning(logDir)) {
          let argv: string[];
          try {
            argv = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0');
          } catch {
            continue;
          }
          if (argv.includes(SCHEDULER_CLI)) continue;
          const line = argv.join(' ').slice(0, 300);
          if (argv.includes('/bin/sh')) findings.add(`pid ${p.pid} runs /bin/sh: ${line}`);
          if (argv.includes('--engine-bin=/bin/sh')) {
            findings.add(`pid ${p.pid} got the name as a flag of its own: ${line}`);
          }
        }
      };
      const timer = setInterval(watch, 100);
      let outcome: { code: number | null; output: string } | { error: string };
      try {
        const exit = await runSchedulerToExit(
          [
            ...['--backend', 'local', '--engine', 'mock', ...flags],
            ...['--max-nodes', '1', '--local-nodes', '1', '--gpus-per-node', '1'],
            ...['--tensor-parallel-size', '1', '--port', '0', '--log-dir', logDir],
            ...['--scheduler-id', `name${hex(3)}`, ...FAST_FLAGS],
          ],
          10_000,
        );
        outcome = { code: exit.code, output: `${exit.stderr}\n${exit.stdout}` };
      } catch (error) {
        outcome = { error: (error as Error).message.slice(0, 300) };
      } finally {
        clearInterval(timer);
        watch();
        // What a scheduler that did not exit started (it was SIGKILLed, its jobs were not).
        for (const p of processesMentioning(logDir)) {
          try {
            process.kill(p.pid, 'SIGKILL');
          } catch {
            // Gone meanwhile.
          }
        }
      }
      // The worker logs each engine's command line as it starts it.
      for (const file of existsSync(logDir) ? readdirSync(logDir) : []) {
        const text = readFileSync(join(logDir, file), 'latin1');
        for (const line of text.split('\n')) {
          if (/started: (\S+ )?\/bin\/sh\b/.test(line)) {
            findings.add(`${file}: an engine started as /bin/sh: ${line.slice(0, 300)}`);
          }
        }
      }
      return { outcome, findings: [...findings] };
    }

    it.each([
      [
        'served-model-name',
        ['--model', 'mock-model', '--served-model-name=--engine-bin=/bin/sh'],
        /--served-model-name|served_model_name/,
      ],
      ['model', ['--model=--engine-bin=/bin/sh'], /--model\b|"model"/],
      ['model (next word)', ['--model', '--engine-bin=/bin/sh'], /--model\b|engine-bin/],
    ])(
      '%s: exits non-zero naming the field; the name reaches no command line as a flag',
      async (name, flags, field) => {
        const { outcome, findings } = await attack(flags);
        expect(findings).toEqual([]);
        if ('error' in outcome) throw new Error(`the scheduler took the ${name}: ${outcome.error}`);
        expect(outcome.code).not.toBe(0);
        expect(outcome.output).toMatch(field);
      },
    );
  });
});
