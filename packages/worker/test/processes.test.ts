import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { expectedGeneration } from '@es/mock-engine';
import { deriveEngineKey } from '@es/protocol';
import type { HeartbeatRequest, RegisterRequest } from '@es/protocol';
import { processAlive, startFakeScheduler } from '@es/testkit';
import type { FakeScheduler, SchedulerCall } from '@es/testkit';
import { createWorker } from '../src/index.js';
import { fakeVllmOnPath, groupAlive, openStream } from './engine-helpers.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const SECRET = 'process-test-secret';
const cleanups: (() => Promise<unknown> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function scheduler(heartbeatMs = 150): Promise<FakeScheduler> {
  const started = await startFakeScheduler(heartbeatMs, SECRET);
  cleanups.push(() => started.close());
  return started;
}

const ready = (id: string) => (call: SchedulerCall) =>
  call.route === 'heartbeat' &&
  call.workerId === id &&
  (call.body as unknown as HeartbeatRequest).state === 'ready';

/** Process ids whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) found.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

/** Options of a worker process running two mock engines (one GPU each) for job `jobId`. */
function mockWorker(schedulerUrl: string, jobId: string, extra: object = {}): object {
  return {
    schedulerUrl,
    deployment: 'default',
    engine: 'mock',
    model: 'mock-model',
    jobId,
    basePort: 0,
    gpusPerNode: 2,
    visibleDevices: '',
    logDir: mkdtempSync(join(tmpdir(), 'es-worker-logs-')),
    probeIntervalMs: 50,
    ...extra,
  };
}

function runWorkerProcess(options: object, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(
    process.execPath,
    [join(fixtures, 'run-worker.mjs'), JSON.stringify(options)],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  cleanups.push(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return child;
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });

describe('the worker with real processes', () => {
  it('starts a fake `vllm` from PATH with the exact argv and GPU slice of each instance', async () => {
    const { bin, env } = fakeVllmOnPath();
    const fake = await scheduler();
    const worker = createWorker({
      schedulerUrl: fake.url,
      deployment: 'default',
      engine: 'vllm',
      model: 'org/model',
      jobId: '77',
      basePort: 0,
      tensorParallelSize: 2,
      gpusPerNode: 4,
      visibleDevices: '2,3,6,7',
      gpuMemoryUtilization: 0.85,
      maxModelLen: 4096,
      servedModelName: 'served',
      engineExtraArgs: `--chat-template "/t/my template.jinja" --enforce-eager`,
      secret: SECRET,
      logDir: bin,
      probeIntervalMs: 50,
      // The fake always reports requests in flight: the cleanup stop waits this long.
      drainGraceMs: 300,
      env,
    });
    cleanups.push(() => worker.stop('cleanup'));
    await worker.start();
    const loaded = await fake.waitFor(ready('77.0.1'));
    await fake.waitFor(ready('77.0.0'));
    expect((loaded.body as unknown as HeartbeatRequest).load).toEqual({
      running: 2,
      waiting: 1,
      kvCacheUsage: 0.125,
    });
    const engineKey = deriveEngineKey(SECRET, '77');
    for (const instance of worker.instances()) {
      const record = JSON.parse(
        readFileSync(join(bin, `instance-${instance.gpus.join(',')}.json`), 'utf8'),
      ) as { argv: string[]; cuda: string; vllmKey: string | null };
      expect(record.cuda).toBe(instance.index === 0 ? '2,3' : '6,7');
      // vLLM 0.12 takes a Unix socket: in the worker's private directory, one per instance.
      const uds = record.argv[2] ?? '';
      expect(uds).toMatch(new RegExp(`^--uds=.*/es-[^/]+/engine-${instance.index}\\.sock$`));
      expect(statSync(dirname(uds.slice('--uds='.length))).mode & 0o777).toBe(0o700);
      expect(record.argv).toEqual([
        'serve',
        'org/model',
        uds,
        '--tensor-parallel-size=2',
        '--gpu-memory-utilization=0.85',
        '--max-model-len=4096',
        '--served-model-name=served',
        // The seed's engine flag; no --disable-log-requests: the fake says it is vLLM 0.12.0.
        '--trust-remote-code',
        '--chat-template',
        '/t/my template.jinja',
        '--enforce-eager',
      ]);
      // The job's own key, in vLLM's variable: never in the argv.
      expect(record.vllmKey).toBe(engineKey);
      expect(record.argv.join(' ')).not.toContain(engineKey);
    }
    const registered = fake.calls.filter((call) => call.route === 'register');
    expect(registered.map((c) => (c.body as unknown as RegisterRequest).gpus)).toContainEqual([
      6, 7,
    ]);
  });

  it.each<[string, { engine: 'vllm' | 'sglang'; version?: string; extra?: string }, string[]]>([
    [
      'vLLM 0.11.2: --trust-remote-code and --disable-log-requests',
      { engine: 'vllm', version: '0.11.2' },
      ['--trust-remote-code', '--disable-log-requests'],
    ],
    [
      'vLLM 0.12.0: no --disable-log-requests (removed)',
      { engine: 'vllm', version: '0.12.0' },
      ['--trust-remote-code'],
    ],
    [
      '`vllm --version` fails: started as a current vLLM',
      { engine: 'vllm', version: 'fail' },
      ['--trust-remote-code'],
    ],
    [
      'vLLM 0.11.2 with --no-trust-remote-code in the extra args',
      { engine: 'vllm', version: '0.11.2', extra: '--no-trust-remote-code --enforce-eager' },
      ['--disable-log-requests', '--enforce-eager'],
    ],
    [
      'SGLang (engine binary: the fake)',
      { engine: 'sglang' },
      ['--trust-remote-code', '--enable-metrics'],
    ],
  ])(
    '%s, from the argv the fake engine recorded',
    async (_label, { engine, version, extra }, tail) => {
      const { bin, env } = fakeVllmOnPath();
      const fake = await scheduler();
      const worker = createWorker({
        schedulerUrl: fake.url,
        deployment: 'default',
        engine,
        model: 'org/model',
        jobId: '78',
        basePort: 0,
        gpusPerNode: 2,
        visibleDevices: '0,1',
        secret: SECRET,
        logDir: bin,
        probeIntervalMs: 50,
        drainGraceMs: 300,
        ...(extra === undefined ? {} : { engineExtraArgs: extra }),
        ...(engine === 'sglang' ? { engineBin: join(bin, 'vllm') } : {}),
        env: { ...env, ...(version === undefined ? {} : { FAKE_VLLM_VERSION: version }) },
      });
      cleanups.push(() => worker.stop('cleanup'));
      await worker.start();
      await fake.waitFor(ready('78.0.0'));
      await fake.waitFor(ready('78.0.1'));
      for (const instance of worker.instances()) {
        const { argv, vllmKey, launcherKey } = JSON.parse(
          readFileSync(join(bin, `instance-${instance.gpus.join(',')}.json`), 'utf8'),
        ) as { argv: string[]; vllmKey: string | null; launcherKey: string | null };
        expect(
          argv.slice(
            argv.findIndex(
              (arg) => arg.startsWith('--gpu-memory') || arg.startsWith('--mem-fraction'),
            ) + 1,
          ),
        ).toEqual(tail);
        // SGLang gets its key through the launcher's variable, vLLM through its own.
        const key = deriveEngineKey(SECRET, '78');
        expect({ vllmKey, launcherKey }).toEqual(
          engine === 'sglang'
            ? { vllmKey: null, launcherKey: key }
            : { vllmKey: key, launcherKey: null },
        );
        // A vLLM whose version is unknown, and SGLang, listen on loopback only.
        const loopback = engine === 'sglang' || version === 'fail';
        expect(argv.some((arg) => arg === '--host=127.0.0.1')).toBe(loopback);
        expect(argv.some((arg) => arg.startsWith('--uds='))).toBe(!loopback);
      }
      // Asked once per worker (two instances), and only for vLLM.
      const calls = existsSync(join(bin, 'version-calls'))
        ? readFileSync(join(bin, 'version-calls'), 'utf8').trim().split('\n')
        : [];
      expect(calls).toEqual(engine === 'vllm' ? [version] : []);
    },
  );

  it('SIGTERM: the drain notice reaches the scheduler at once, engines stop after it, exit 0, nothing left', async () => {
    const fake = await scheduler();
    const engineGroups: number[] = [];
    let drainSeenEnginesAlive = 0;
    fake.onDrain = () => {
      if (engineGroups.every((pid) => groupAlive(pid))) drainSeenEnginesAlive += 1;
    };
    const worker = runWorkerProcess(
      mockWorker(fake.url, '88', { secret: SECRET, engineExtraArgs: '--tokens-per-second 0' }),
    );
    await fake.waitFor(ready('88.0.0'));
    await fake.waitFor(ready('88.0.1'));
    engineGroups.push(...childrenOf(worker.pid ?? 0));
    expect(engineGroups).toHaveLength(2);
    const sentAt = Date.now();
    worker.kill('SIGTERM');
    const drain = await fake.waitFor((call) => call.route === 'drain', 2000);
    expect(drain.at - sentAt).toBeLessThan(500);
    expect(drain.body.reason).toBe('SIGTERM');
    expect(await exited(worker)).toBe(0);
    expect(drainSeenEnginesAlive).toBe(2);
    expect(fake.calls.filter((call) => call.route === 'deregister')).toHaveLength(2);
    for (const pid of engineGroups) expect(groupAlive(pid)).toBe(false);
  });

  it('an uncaught error in the worker process still takes its engines down', async () => {
    const fake = await scheduler();
    const logDir = mkdtempSync(join(tmpdir(), 'es-worker-logs-'));
    const worker = runWorkerProcess(mockWorker(fake.url, '99', { logDir }), {
      FAIL_ON_SIGNAL: 'SIGUSR2',
    });
    await fake.waitFor(ready('99.0.0'));
    await fake.waitFor(ready('99.0.1'));
    const groups = childrenOf(worker.pid ?? 0);
    expect(groups).toHaveLength(2);
    // Crash once both engines are up: a crash timer raced their start-up on a busy machine.
    worker.kill('SIGUSR2');
    expect(await exited(worker)).toBe(1);
    for (const pid of groups)
      await expect.poll(() => groupAlive(pid), { timeout: 10_000 }).toBe(false);
    // The crash handler killed them, not the engine guards' fallback (which notices an
    // orphaned engine by itself and says so in the engine's log).
    for (const file of readdirSync(logDir))
      expect(readFileSync(join(logDir, file), 'utf8')).not.toContain('is gone');
  });

  it('SIGKILL of the worker: the engine guards stop every engine within seconds', async () => {
    const fake = await scheduler();
    const worker = runWorkerProcess(mockWorker(fake.url, '66'));
    await fake.waitFor(ready('66.0.0'));
    await fake.waitFor(ready('66.0.1'));
    const guards = childrenOf(worker.pid ?? 0);
    expect(guards).toHaveLength(2);
    const engines = guards.flatMap((pid) => childrenOf(pid));
    expect(engines).toHaveLength(2);
    const port = (id: string) =>
      (
        fake.calls.find((c) => c.route === 'register' && c.workerId === id)?.body as
          RegisterRequest | undefined
      )?.port;
    const url = `http://127.0.0.1:${port('66.0.0') ?? 0}/health`;
    expect((await fetch(url)).status).toBe(200);
    const killedAt = Date.now();
    worker.kill('SIGKILL');
    for (const pid of [...engines, ...guards])
      await expect.poll(() => processAlive(pid), { timeout: 6000, interval: 100 }).toBe(false);
    expect(Date.now() - killedAt).toBeLessThan(5000);
    await expect(fetch(url)).rejects.toThrow();
  });

  it('preemption (worker and engines SIGTERMed together): the stream in flight still completes', async () => {
    const fake = await scheduler();
    const worker = runWorkerProcess(
      mockWorker(fake.url, '55', {
        secret: SECRET,
        drainGraceMs: 10_000,
        engineExtraArgs: '--tokens-per-second 20 --ttft 0',
      }),
    );
    await fake.waitFor(ready('55.0.0'));
    await fake.waitFor(ready('55.0.1'));
    const guards = childrenOf(worker.pid ?? 0);
    expect(guards).toHaveLength(2);
    const register = fake.calls.find((c) => c.route === 'register' && c.workerId === '55.0.0');
    const port = (register?.body as RegisterRequest | undefined)?.port ?? 0;
    const stream = await openStream(`http://127.0.0.1:${port}`, deriveEngineKey(SECRET, '55'), 30);
    let text = '';
    let finish: string | null | undefined;
    let signalledAt = 0;
    for await (const part of stream) {
      text += part.choices[0]?.delta.content ?? '';
      finish ??= part.choices[0]?.finish_reason;
      if (signalledAt === 0 && text.length > 0) {
        // What slurmstepd does on preemption: SIGTERM to every process of the step at once.
        signalledAt = Date.now();
        worker.kill('SIGTERM');
        for (const pid of guards) process.kill(-pid, 'SIGTERM');
      }
    }
    expect(signalledAt).toBeGreaterThan(0);
    expect(finish).toBe('length');
    // The whole answer (30 tokens), although worker and engine were SIGTERMed after the first.
    expect(text).toBe(
      expectedGeneration(
        { kind: 'chat', messages: [{ role: 'user', content: 'hi' }] },
        { maxTokens: 30 },
      ).text,
    );
    expect(await exited(worker)).toBe(0);
    // The worker waited for the engine to finish, not for the whole grace.
    expect(Date.now() - signalledAt).toBeLessThan(8000);
    expect(fake.calls.filter((call) => call.route === 'drain')).toHaveLength(2);
    for (const pid of guards) expect(groupAlive(pid)).toBe(false);
  });
});
