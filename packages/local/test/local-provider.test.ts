import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ProviderError, classifyProviderError, isProviderError } from '@es/pool';
import type { NodeRequest, ObservedJob } from '@es/pool';
import { until } from '@es/testkit';
import type { LocalProvider, LocalProviderOptions } from '../src/index.js';
import { LocalProviderError, createLocalProvider } from '../src/index.js';

const NAME = 'es-test-m';
const providers: LocalProvider[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close({ kill: true })));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function provider(options: LocalProviderOptions = {}): LocalProvider {
  const p = createLocalProvider({ killGraceMs: 500, ...options });
  providers.push(p);
  return p;
}

function logDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'es-local-provider-'));
  dirs.push(dir);
  return dir;
}

/** A node request running `script` with `node -e`. */
function request(dir: string, script: string, extra: Partial<NodeRequest> = {}): NodeRequest {
  return {
    deployment: 'm',
    name: NAME,
    tag: `es:test:m:${Math.random().toString(36).slice(2)}`,
    gpusPerNode: 4,
    command: [process.execPath, '-e', script],
    env: {},
    logDir: dir,
    ...extra,
  };
}

const SLEEP = 'setInterval(() => {}, 1000)';

async function job(p: LocalProvider, id: string): Promise<ObservedJob | undefined> {
  return (await p.list({ names: [NAME] })).find((j) => j.id === id);
}

async function jobIn(p: LocalProvider, id: string, states: string[]): Promise<ObservedJob> {
  return until(async () => {
    const j = await job(p, id);
    return j && states.includes(j.state) ? j : undefined;
  });
}

/** Whether a process exists (`kill -0`, as an operator would check). */
function alive(pid: number): boolean {
  return spawnSync('kill', ['-0', String(pid)], { stdio: 'ignore' }).status === 0;
}

describe('createLocalProvider', () => {
  it('creates the log directory, the job output and the state file owner-only, whatever the umask', async () => {
    const previous = process.umask(0o022);
    try {
      const dir = join(logDir(), 'logs');
      const stateFile = join(logDir(), 'state', 'local-jobs.json');
      const p = provider({ nodes: 1, stateFile });
      const id = await p.submit(request(dir, 'console.log("done")'));
      await jobIn(p, id, ['COMPLETED', 'FAILED']);
      const mode = (path: string) => statSync(path).mode & 0o777;
      expect(mode(dir)).toBe(0o700);
      expect(mode(join(dir, `${NAME}-${id}.out`))).toBe(0o600);
      expect(mode(stateFile)).toBe(0o600);
      expect(mode(join(stateFile, '..'))).toBe(0o700);
    } finally {
      process.umask(previous);
    }
  });

  it('runs the command with SLURM-like variables, its own GPU ids and the request env, logging to logDir', async () => {
    const dir = logDir();
    const p = provider({ nodes: 1, gpusPerNode: 8 });
    const script = `const e = process.env; console.log(JSON.stringify({ id: e.SLURM_JOB_ID, restart: e.SLURM_RESTART_COUNT, gpus: e.CUDA_VISIBLE_DEVICES, node: e.SLURMD_NODENAME, name: e.SLURM_JOB_NAME, url: e.ES_SCHEDULER_URL }))`;
    const id = await p.submit(
      request(dir, script, { env: { ES_SCHEDULER_URL: 'http://127.0.0.1:1' } }),
    );
    const done = await jobIn(p, id, ['COMPLETED', 'FAILED']);
    expect(done).toMatchObject({
      state: 'COMPLETED',
      name: NAME,
      nodes: 'local-0',
      restartCount: 0,
    });
    const printed = JSON.parse(readFileSync(join(dir, `${NAME}-${id}.out`), 'utf8'));
    expect(printed).toEqual({
      id,
      restart: '0',
      gpus: '0,1,2,3',
      node: 'local-0',
      name: NAME,
      url: 'http://127.0.0.1:1',
    });
  });

  it('gives a whole-node job every GPU of its node, as SLURM does (cluster.wholeNodeGpus)', async () => {
    const dir = logDir();
    const p = provider({ nodes: 1, gpusPerNode: 8 });
    const script =
      'const e = process.env; console.log(e.CUDA_VISIBLE_DEVICES, e.SLURM_GPUS_ON_NODE)';
    const id = await p.submit(request(dir, script, { cluster: { wholeNodeGpus: true } }));
    expect((await jobIn(p, id, ['COMPLETED', 'FAILED'])).state).toBe('COMPLETED');
    expect(readFileSync(join(dir, `${NAME}-${id}.out`), 'utf8')).toBe('0,1,2,3,4,5,6,7 8\n');
  });

  it('keeps jobs beyond the free nodes PENDING (Resources) and starts them when a node frees', async () => {
    const dir = logDir();
    const p = provider({
      nodeGpus: [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
      ],
    });
    const script = `console.log(process.env.CUDA_VISIBLE_DEVICES); ${SLEEP}`;
    const a = await p.submit(request(dir, script));
    const b = await p.submit(request(dir, script));
    const c = await p.submit(request(dir, script));
    const jobs = await p.list({ names: [NAME] });
    expect(jobs.map((j) => [j.id, j.state, j.reason, j.nodes])).toEqual([
      [a, 'RUNNING', '', 'local-0'],
      [b, 'RUNNING', '', 'local-1'],
      [c, 'PENDING', 'Resources', ''],
    ]);
    await until(async () => readFileSync(join(dir, `${NAME}-${b}.out`), 'utf8') || undefined);
    expect(readFileSync(join(dir, `${NAME}-${b}.out`), 'utf8').trim()).toBe('4,5,6,7');
    await p.cancel([b]);
    expect((await jobIn(p, c, ['RUNNING'])).nodes).toBe('local-1');
    expect((await job(p, b))?.state).toBe('CANCELLED');
    expect(p.nodes()).toEqual([
      { name: 'local-0', gpus: [0, 1, 2, 3], jobId: a },
      { name: 'local-1', gpus: [4, 5, 6, 7], jobId: c },
    ]);
  });

  it('cancels with SIGTERM to the whole process group, then SIGKILL after the grace', async () => {
    const dir = logDir();
    const p = provider({ nodes: 1, killGraceMs: 700 });
    // The job ignores SIGTERM and leaves a grandchild in its group: both must die.
    const script = `
      const { spawn } = require('node:child_process');
      const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
      process.on('SIGTERM', () => console.log('got SIGTERM'));
      console.log('grandchild ' + child.pid);
      ${SLEEP}`;
    const id = await p.submit(request(dir, script));
    const out = join(dir, `${NAME}-${id}.out`);
    const grandchild = Number(
      await until(async () => /grandchild (\d+)/.exec(readFileSync(out, 'utf8'))?.[1]),
    );
    expect(alive(grandchild)).toBe(true);
    const started = Date.now();
    await p.cancel([id, 'no-such-job']);
    expect((await job(p, id))?.state).toBe('COMPLETING');
    const ended = await jobIn(p, id, ['CANCELLED']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
    expect(ended.nodes).toBe('local-0');
    expect(readFileSync(out, 'utf8')).toContain('got SIGTERM');
    await until(async () => (alive(grandchild) ? undefined : true));
    expect(p.nodes()[0]?.jobId).toBeUndefined();
  });

  it('kills what the job started in other process groups when it ends, as a cgroup would', async () => {
    const dir = logDir();
    const p = provider({ nodes: 1 });
    // Like the worker with its engines: a child in its own group, then the leader dies.
    const script = `
      const { spawn } = require('node:child_process');
      const engine = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { detached: true, stdio: 'ignore' });
      console.log('engine ' + engine.pid);
      setTimeout(() => process.exit(1), 300);`;
    const id = await p.submit(request(dir, script));
    const out = join(dir, `${NAME}-${id}.out`);
    const engine = Number(
      await until(async () => /engine (\d+)/.exec(readFileSync(out, 'utf8'))?.[1]),
    );
    expect(await jobIn(p, id, ['FAILED'])).toMatchObject({ reason: 'NonZeroExitCode:1' });
    await until(async () => (alive(engine) ? undefined : true), 5_000);
  });

  it('lets a job drain on SIGTERM and exit before the grace (cancel and preempt)', async () => {
    const dir = logDir();
    const p = provider({ nodes: 2, killGraceMs: 10_000 });
    const script = `process.on('SIGTERM', () => { console.log('draining'); setTimeout(() => process.exit(0), 100); }); console.log('ready'); ${SLEEP}`;
    const a = await p.submit(request(dir, script));
    const b = await p.submit(request(dir, script));
    for (const id of [a, b]) {
      await until(async () =>
        readFileSync(join(dir, `${NAME}-${id}.out`), 'utf8').includes('ready') ? true : undefined,
      );
    }
    await p.cancel([a]);
    expect(p.preempt(b)).toBe(true);
    expect(p.preempt('no-such-job')).toBe(false);
    const started = Date.now();
    expect((await jobIn(p, a, ['CANCELLED'])).state).toBe('CANCELLED');
    expect((await jobIn(p, b, ['PREEMPTED'])).state).toBe('PREEMPTED');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(readFileSync(join(dir, `${NAME}-${b}.out`), 'utf8')).toContain('draining');
  });

  it('reports failures with SLURM-shaped states and reasons', async () => {
    const dir = logDir();
    const p = provider({ nodes: 3 });
    const exit3 = await p.submit(request(dir, 'process.exit(3)'));
    const killed = await p.submit(request(dir, `process.kill(process.pid, 'SIGKILL')`));
    const missing = await p.submit({ ...request(dir, ''), command: ['/nonexistent/es-worker'] });
    expect(await jobIn(p, exit3, ['FAILED'])).toMatchObject({ reason: 'NonZeroExitCode:3' });
    expect(await jobIn(p, killed, ['FAILED'])).toMatchObject({ reason: 'RaisedSignal:SIGKILL' });
    expect((await jobIn(p, missing, ['FAILED'])).reason).toMatch(/^LaunchFailed: .*ENOENT/);
    expect(p.nodes().every((n) => n.jobId === undefined)).toBe(true);
  });

  it('refuses a request for more GPUs than a node has, as a permanent failure', async () => {
    const p = provider({ nodes: 2, gpusPerNode: 4 });
    const error = await p.submit({ ...request(logDir(), SLEEP), gpusPerNode: 8 }).catch((e) => e);
    expect(error).toBeInstanceOf(LocalProviderError);
    expect(error).toBeInstanceOf(ProviderError);
    expect(isProviderError(error)).toBe(true);
    expect(error).toMatchObject({
      name: 'LocalProviderError',
      code: 'unsatisfiable',
      kind: 'permanent',
      ambiguous: false,
      param: 'gpusPerNode',
      message:
        "a job asks for 8 GPUs but local nodes have at most 4 (raise the local provider's gpusPerNode or lower the deployment's)",
    });
    expect(classifyProviderError(error)).toMatchObject({ kind: 'permanent', ambiguous: false });
  });

  it('refuses a configuration without nodes, as a permanent failure', () => {
    const error = (() => {
      try {
        return createLocalProvider({ nodeGpus: [] });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(LocalProviderError);
    expect(error).toMatchObject({
      code: 'invalid_config',
      kind: 'permanent',
      param: 'nodes',
      message: 'the local provider needs at least one node',
    });
  });

  it('ends a job at its time limit (TIMEOUT) and reports the time left while it runs', async () => {
    const dir = logDir();
    const p = provider({ nodes: 1, killGraceMs: 300 });
    const id = await p.submit(request(dir, SLEEP, { timeLimitMinutes: 0.02 }));
    const running = await jobIn(p, id, ['RUNNING']);
    expect(running.timeLeftSeconds).toBeGreaterThan(0);
    expect(running.timeLeftSeconds).toBeLessThanOrEqual(2);
    expect(await jobIn(p, id, ['TIMEOUT'])).toMatchObject({ reason: 'TimeLimit' });
  });

  it('lists only the named jobs, and ended jobs only for keepEndedMs', async () => {
    let t = 1_000_000;
    const dir = logDir();
    const p = provider({ nodes: 2, keepEndedMs: 60_000, now: () => t });
    const ours = await p.submit(request(dir, 'process.exit(0)'));
    const theirs = await p.submit(request(dir, SLEEP, { name: 'es-other-m' }));
    await jobIn(p, ours, ['COMPLETED']);
    expect((await p.list({ names: [NAME] })).map((j) => j.id)).toEqual([ours]);
    expect((await p.list({ names: ['es-other-m'] })).map((j) => j.id)).toEqual([theirs]);
    t += 59_000;
    expect(await job(p, ours)).toBeDefined();
    t += 2_000;
    expect(await job(p, ours)).toBeUndefined();
    expect((await p.list({ names: ['es-other-m'] })).map((j) => j.state)).toEqual(['RUNNING']);
  });

  it('on close kills running jobs by default, or leaves them running when asked', async () => {
    const script = `console.log('pid ' + process.pid); ${SLEEP}`;
    const pid = async (dir: string, id: string) =>
      Number(
        await until(
          async () => /pid (\d+)/.exec(readFileSync(join(dir, `${NAME}-${id}.out`), 'utf8'))?.[1],
        ),
      );

    const killing = createLocalProvider({ nodes: 1, killGraceMs: 300 });
    const dir = logDir();
    const killed = await pid(dir, await killing.submit(request(dir, script)));
    const queued = await killing.submit(request(dir, script));
    await killing.close();
    expect(alive(killed)).toBe(false);
    expect((await job(killing, queued))?.state).toBe('CANCELLED');
    const refused = await killing.submit(request(dir, script)).catch((e) => e);
    expect(refused).toBeInstanceOf(LocalProviderError);
    expect(refused).toMatchObject({
      code: 'closed',
      kind: 'permanent',
      message: 'the local provider is closed',
    });

    const leaving = createLocalProvider({ nodes: 1, killOnClose: false });
    const otherDir = logDir();
    const left = await pid(otherDir, await leaving.submit(request(otherDir, script)));
    await leaving.close();
    try {
      expect(alive(left)).toBe(true);
    } finally {
      process.kill(-left, 'SIGKILL');
    }
  });
});

describe('createLocalProvider with a state file', () => {
  it('lets a new provider adopt the jobs a closed one left running and pending', async () => {
    const dir = logDir();
    const stateFile = join(dir, 'state', 'local-jobs.json');
    const script = `process.on('SIGTERM', () => process.exit(0)); console.log('ready'); ${SLEEP}`;
    const first = createLocalProvider({ nodes: 1, stateFile, killOnClose: false });
    const running = await first.submit(request(dir, script, { timeLimitMinutes: 10 }));
    const queued = await first.submit(request(dir, script));
    await until(async () =>
      readFileSync(join(dir, `${NAME}-${running}.out`), 'utf8').includes('ready')
        ? true
        : undefined,
    );
    await first.close();

    const second = provider({ nodes: 1, stateFile, adoptedPollMs: 50 });
    const adopted = await second.list({ names: [NAME] });
    expect(adopted.map((j) => [j.id, j.state, j.nodes])).toEqual([
      [running, 'RUNNING', 'local-0'],
      [queued, 'PENDING', ''],
    ]);
    expect(adopted[0]?.timeLeftSeconds).toBeGreaterThan(500);
    const fresh = await second.submit(request(dir, script));
    expect(Number(fresh)).toBeGreaterThan(Number(queued));

    // The adopted job is not a child of this process: cancelling it still ends it, and the
    // queued job takes the node.
    await second.cancel([running]);
    expect(await jobIn(second, running, ['CANCELLED'])).toMatchObject({ nodes: 'local-0' });
    expect((await jobIn(second, queued, ['RUNNING'])).nodes).toBe('local-0');
  });

  it('reports a job that ended while no provider watched as COMPLETED with an unknown exit code', async () => {
    const dir = logDir();
    const stateFile = join(dir, 'local-jobs.json');
    const first = createLocalProvider({ nodes: 1, stateFile, killOnClose: false });
    const id = await first.submit(request(dir, `console.log('pid ' + process.pid); ${SLEEP}`));
    const pid = Number(
      await until(
        async () => /pid (\d+)/.exec(readFileSync(join(dir, `${NAME}-${id}.out`), 'utf8'))?.[1],
      ),
    );
    await first.close();
    process.kill(-pid, 'SIGKILL');
    await until(async () => (alive(pid) ? undefined : true));

    const second = provider({ nodes: 1, stateFile });
    expect(await job(second, id)).toMatchObject({ state: 'COMPLETED', reason: 'ExitCodeUnknown' });
    const next = await second.submit(request(dir, SLEEP));
    expect((await jobIn(second, next, ['RUNNING'])).nodes).toBe('local-0');
  });
});
