/**
 * The admin API, `/metrics` and the `es` CLI against the scheduler's own wiring in-process
 * (`createScheduler`: local provider, real apps/worker processes, mock engines): requests, a
 * preemption, operator drains (the job's workers leave routing, then it is cancelled and
 * replaced), a scale-down, a stop. CLI commands run through `runCli` (the bin's code) and
 * once as the built `es` binary. Moved here from packages/admin, whose own tests use a fake
 * pool (issue 12).
 */
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type StatusResponse } from '../../../packages/client/src/index.js';
import {
  adminStatus,
  esCli,
  metric,
  readyWorkers,
  scrape,
  startAdminTestScheduler,
  until,
  type AdminTestScheduler,
} from './admin-harness.js';

const ES_CLI = fileURLToPath(new URL('../../../packages/client/dist/cli.mjs', import.meta.url));

let s: AdminTestScheduler;

beforeAll(async () => {
  s = await startAdminTestScheduler({ maxNodes: 2 });
  // 2 local nodes × (4 GPUs / TP 2) = 4 engine instances.
  await until(readyWorkers(s, 4), 30_000, '4 ready workers');
}, 60_000);

afterAll(async () => {
  await s?.close();
});

const es = (...argv: string[]) => esCli(s, ...argv);

describe('admin API and es CLI', () => {
  it('refuses the admin routes without the admin key', async () => {
    for (const path of ['/api/v1/admin/status', '/api/v1/admin/events', '/metrics']) {
      const res = await fetch(`${s.url}${path}`);
      expect(res.status, path).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
      const wrong = await fetch(`${s.url}${path}`, { headers: { authorization: 'Bearer nope' } });
      expect(wrong.status, path).toBe(401);
    }
    // `es status` shows the public view without a key (seed-cli.e2e.test.ts); `es workers` needs it.
    const cli = await runCli(['workers'], {
      stdout: () => undefined,
      stderr: (t) => expect(t).toMatch(/admin key.*--admin-key or set ES_ADMIN_KEY/),
      env: { ES_SCHEDULER_URL: s.url },
    });
    expect(cli).toBe(1);
  });

  it('es status prints deployments, nodes with state and time left, workers with GPU slices', async () => {
    await until(
      async () => {
        const st = await adminStatus(s);
        return st.deployments[0]?.jobs.every((j) => j.progressLine.includes('ready'))
          ? st
          : undefined;
      },
      30_000,
      'every job ready in its progress line',
    );
    const { code, stdout } = await es('status');
    expect(code).toBe(0);
    const lines = stdout.split('\n');
    expect(lines[0]).toMatch(/^scheduler adm\d+ \(local\)/);
    expect(stdout).toMatch(/^DEPLOYMENT\s+READY\s+JOBS\s+MAX\s+QUEUED/m);
    expect(stdout).toMatch(/^mock\s+4\/4\s+2\s+2\s+0/m);
    expect(stdout).toMatch(/^JOB\s+DEPLOYMENT\s+STATE\s+NODE\s+LEFT\s+RESTARTS\s+AGE\s+PROGRESS/m);
    const jobRows = lines.filter((l) => /^\S+\s+mock\s+RUNNING\s/.test(l));
    expect(jobRows).toHaveLength(2);
    for (const row of jobRows)
      expect(row).toMatch(/PENDING.* → RUNNING \d+s → loading \d+s → ready/);
    expect(stdout).toMatch(/^WORKER\s+JOB\s+NODE\s+STATE\s+GPUS\s+LOAD/m);
    const workerRows = lines.filter((l) => /\sready\s+(0-1|2-3)\s+0 in-flight/.test(l));
    expect(workerRows).toHaveLength(4);
    // Columns line up: every worker row has its GPUS column where the header has it.
    const header = lines.find((l) => l.startsWith('WORKER')) ?? '';
    for (const row of workerRows) {
      expect(
        row.slice(header.indexOf('GPUS')).startsWith('0-1') ||
          row.slice(header.indexOf('GPUS')).startsWith('2-3'),
      ).toBe(true);
    }

    const json = await es('status', '--json');
    const parsed = JSON.parse(json.stdout) as StatusResponse;
    expect(parsed.deployments[0]?.workers.filter((w) => w.state === 'ready')).toHaveLength(4);
    expect(parsed.deployments[0]?.jobs[0]?.progress.map((p) => p.phase)).toEqual([
      'pending',
      'running',
      'loading',
      'ready',
    ]);
  });

  it('es workers and es jobs list what is running', async () => {
    const workers = await es('workers');
    expect(workers.code).toBe(0);
    expect(workers.stdout.split('\n').filter((l) => /\sready\s/.test(l))).toHaveLength(4);
    const jobs = await es('jobs', '--json');
    const list = JSON.parse(jobs.stdout) as { state: string; workerIds: string[] }[];
    expect(list.map((j) => j.state)).toEqual(['RUNNING', 'RUNNING']);
    expect(list.every((j) => j.workerIds.length === 2)).toBe(true);
  });

  it('counts requests, tokens and TTFB in /metrics and /api/v1/admin/series', async () => {
    const before = await scrape(s);
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    for (let i = 0; i < 6; i++) {
      await client.chat.completions.create({
        model: 'mock-model',
        messages: [{ role: 'user', content: `hello ${i}` }],
        max_tokens: 4,
      });
    }
    const after = await scrape(s);
    const labels = { deployment: 'mock', status: '200', route: '/v1/chat/completions' };
    expect(
      metric(after, 'es_requests_total', labels) - metric(before, 'es_requests_total', labels),
    ).toBe(6);
    expect(
      metric(after, 'es_tokens_total', { deployment: 'mock', direction: 'out' }) -
        metric(before, 'es_tokens_total', { deployment: 'mock', direction: 'out' }),
    ).toBe(24);
    expect(
      metric(after, 'es_time_to_first_byte_seconds_count', { deployment: 'mock' }),
    ).toBeGreaterThanOrEqual(6);
    expect(metric(after, 'es_workers', { deployment: 'mock', state: 'ready' })).toBe(4);
    expect(metric(after, 'es_jobs', { deployment: 'mock', state: 'RUNNING' })).toBe(2);
    expect(metric(after, 'es_provider_calls_total', { operation: 'submit', outcome: 'ok' })).toBe(
      2,
    );
    expect(
      metric(after, 'es_provider_calls_total', { operation: 'list', outcome: 'ok' }),
    ).toBeGreaterThan(0);
    expect(after).toMatch(/^es_nodejs_eventloop_lag_seconds \d/m);

    const series = await until(
      async () => {
        const res = await fetch(`${s.url}/api/v1/admin/series`, {
          headers: { authorization: `Bearer ${s.adminKey}` },
        });
        const body = (await res.json()) as {
          samples: { requestsPerSecond: number; tokensPerSecond: number; ttfbMs?: number }[];
        };
        return body.samples.some((x) => x.requestsPerSecond > 0) ? body : undefined;
      },
      30_000,
      'a traffic sample',
    );
    const busy = series.samples.filter((x) => x.requestsPerSecond > 0);
    expect(busy.reduce((sum, x) => sum + x.tokensPerSecond, 0)).toBeGreaterThan(0);
    expect(busy.every((x) => x.ttfbMs !== undefined && x.ttfbMs >= 0)).toBe(true);
  });

  it('es logs tails an engine log and a job log', async () => {
    const worker = s.scheduler.registry.workers('mock').find((w) => w.state === 'ready');
    expect(worker?.logFile).toBeDefined();
    const engine = await es('logs', worker?.id ?? '');
    expect(engine.code).toBe(0);
    expect(engine.stdout.length).toBeGreaterThan(0);
    const job = await es('logs', worker?.jobId ?? '');
    expect(job.code).toBe(0);
    expect(job.stdout).toMatch(/\S/);
    const missing = await es('logs', 'no-such-job');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no worker no-such-job and no job log/);
  });

  it('es dashboard prints a one-time login link, without the key, that logs a browser in once', async () => {
    const { code, stdout } = await es('dashboard');
    expect(code).toBe(0);
    expect(stdout).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/dashboard\?login=[A-Za-z0-9_-]{43}\n$/);
    expect(stdout.startsWith(`${s.url}/dashboard?login=`)).toBe(true);
    expect(stdout).not.toContain(s.adminKey);
    const link = stdout.trim();
    const first = await fetch(link, { redirect: 'manual' });
    expect(first.status).toBe(303);
    const cookie = first.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(
      /^es_session=[A-Za-z0-9_-]{43}; Max-Age=43200; Path=\/; HttpOnly; SameSite=Strict$/,
    );
    expect(cookie).not.toContain(s.adminKey);
    const page = await fetch(`${s.url}/dashboard`, { headers: { cookie: cookie.split(';')[0]! } });
    expect(page.status).toBe(200);
    expect((await fetch(link, { redirect: 'manual' })).status).toBe(401);
  });

  it('es status --watch redraws in place until interrupted', async () => {
    const controller = new AbortController();
    let stdout = '';
    let frames = 0;
    const code = await runCli(['status', '--watch', '--interval', '0.2'], {
      stdout: (t) => {
        stdout += t;
        frames += 1;
        if (frames === 3) controller.abort();
      },
      stderr: () => undefined,
      env: { ES_SCHEDULER_URL: s.url, ES_ADMIN_KEY: s.adminKey },
      signal: controller.signal,
      isTTY: true,
    });
    expect(code).toBe(0);
    const screens = stdout.split('\x1b[H\x1b[2J').filter((x) => x !== '');
    expect(screens).toHaveLength(3);
    for (const screen of screens) expect(screen).toMatch(/^DEPLOYMENT\s+READY/m);
  });

  it('es logs --follow prints what is appended to a job log', async () => {
    const worker = s.scheduler.registry.workers('mock').find((w) => w.state === 'ready');
    const file = readdirSync(s.logDir).find((n) => n.endsWith(`-${worker?.jobId ?? ''}.out`));
    expect(file).toBeDefined();
    const controller = new AbortController();
    let stdout = '';
    const done = runCli(['logs', worker?.jobId ?? '', '--follow'], {
      stdout: (t) => {
        stdout += t;
        if (stdout.includes('follow-marker-2')) controller.abort();
      },
      stderr: () => undefined,
      env: { ES_SCHEDULER_URL: s.url, ES_ADMIN_KEY: s.adminKey },
      signal: controller.signal,
    });
    await until(() => (stdout.length > 0 ? true : undefined), 30_000, 'the tail');
    appendFileSync(join(s.logDir, file ?? ''), 'follow-marker-1\nfollow-marker-2\n');
    expect(await done).toBe(0);
    expect(stdout.indexOf('follow-marker-1')).toBeGreaterThan(0);
    expect(stdout.match(/follow-marker-1/g)).toHaveLength(1);
  });

  it('counts a preemption and its replacement; the events show both', async () => {
    const before = await scrape(s);
    const victim = (await adminStatus(s)).deployments[0]?.jobs.find((j) => j.state === 'RUNNING');
    expect(victim).toBeDefined();
    expect(s.preempt(victim?.jobId ?? '')).toBe(true);
    await until(
      async () => {
        const text = await scrape(s);
        return metric(text, 'es_preemptions_total', { deployment: 'mock' }) >
          metric(before, 'es_preemptions_total', { deployment: 'mock' }) &&
          metric(text, 'es_replacements_total', { deployment: 'mock' }) >
            metric(before, 'es_replacements_total', { deployment: 'mock' })
          ? text
          : undefined;
      },
      30_000,
      'preemption and replacement counted',
    );
    const events = await es('events', '--json');
    const list = JSON.parse(events.stdout) as { type: string; jobId?: string }[];
    expect(list.some((e) => e.type === 'preempted' && e.jobId === victim?.jobId)).toBe(true);
    expect(list.some((e) => e.type === 'replaced' && e.jobId === victim?.jobId)).toBe(true);
    await until(readyWorkers(s, 4), 30_000, '4 ready workers again');
  });

  it('es drain <worker> takes it out of routing; es drain <job> cancels it and it is replaced', async () => {
    const [first] = readyWorkers(s, 4)() ?? [];
    const drained = await es('drain', first ?? '');
    expect(drained.stdout).toBe(`worker ${first} draining\n`);
    expect(s.scheduler.registry.worker(first ?? '')?.state).toBe('draining');
    expect(s.scheduler.registry.routable('mock').map((w) => w.id)).not.toContain(first);

    const jobId = s.scheduler.registry.worker(first ?? '')?.jobId ?? '';
    const job = await es('drain', jobId);
    expect(job.stdout).toMatch(
      new RegExp(`^job ${jobId}: draining 2 worker\\(s\\); it is cancelled once idle`),
    );
    // Out of routing when the command answered, before any cancel.
    expect(
      s.scheduler.registry
        .routable('mock')
        .filter((w) => s.scheduler.registry.worker(w.id)?.jobId === jobId),
    ).toEqual([]);
    const cancelled = await until(
      () =>
        s.scheduler.registry
          .recentEvents()
          .find((e) => e.type === 'cancelled' && e.jobId === jobId),
      30_000,
      'the drained job cancelled',
    );
    expect(cancelled.reason).toBe('drained by an operator');
    await until(
      async () => {
        const st = await adminStatus(s);
        const jobs = st.deployments[0]?.jobs ?? [];
        const live = jobs.filter((j) => j.state === 'RUNNING' && j.jobId !== jobId);
        return live.length === 2 && st.deployments[0]?.readyWorkers === 4 ? st : undefined;
      },
      30_000,
      'the drained job replaced',
    );
  });

  it('es scale lowers max nodes at once, cancelling the surplus after its workers left routing', async () => {
    const result = await es('scale', 'mock', '--max-nodes', '1');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^mock: max nodes 2 → 1; cancelled \S+\n$/);
    const [cancelledJob] = /cancelled (\S+)/.exec(result.stdout)?.slice(1) ?? [];
    // Its workers were drained by the reconciler before the cancel, not by the admin after it.
    const events = s.scheduler.registry.recentEvents();
    const cancelAt = events.findIndex((e) => e.type === 'cancelled' && e.jobId === cancelledJob);
    const drains = events.filter(
      (e, i) => e.type === 'draining' && e.jobId === cancelledJob && i < cancelAt,
    );
    expect(cancelAt).toBeGreaterThan(0);
    expect(drains.map((e) => e.reason)).toEqual(['more than maxNodes 1', 'more than maxNodes 1']);
    const st = await adminStatus(s);
    expect(st.deployments[0]?.maxNodes).toBe(1);
    await until(
      async () => {
        const now = await adminStatus(s);
        const running = now.deployments[0]?.jobs.filter((j) => j.state === 'RUNNING') ?? [];
        return running.length === 1 ? now : undefined;
      },
      30_000,
      'one running job',
    );
    const bad = await es('scale', 'nope', '--max-nodes', '1');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/deployment nope is not served here/);
  });

  it('the built es binary finds the scheduler by env and derives the key from the secret file', async () => {
    expect(existsSync(ES_CLI), 'pnpm --filter @es/client build').toBe(true);
    const run = promisify(execFile);
    const { stdout } = await run(process.execPath, [ES_CLI, 'workers'], {
      env: {
        ...process.env,
        ES_SCHEDULER_URL: s.url,
        ES_SECRET_FILE: s.secretFile,
        ES_ADMIN_KEY: '',
      },
    });
    expect(stdout).toMatch(/^WORKER\s+JOB/);
    const down = await run(
      process.execPath,
      [ES_CLI, 'status', '--scheduler-url', 'http://127.0.0.1:9'],
      {
        env: { ...process.env, ES_ADMIN_KEY: 'x' },
      },
    ).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(
      /scheduler not reachable at http:\/\/127\.0\.0\.1:9: is it running\? Start it with `bash scripts\/run\.sh`/,
    );
  });

  it('es stop --cancel-jobs stops the scheduler and cancels its jobs', async () => {
    const jobName = (await adminStatus(s)).deployments[0]?.jobName ?? '';
    const result = await es('stop', '--cancel-jobs');
    expect(result.stdout).toBe('scheduler stopping and cancelling its jobs\n');
    await s.stopped;
    expect(
      s.logs.some((l) => /^stop requested through the admin API \(cancelling jobs\)/.test(l.msg)),
    ).toBe(true);
    const cancelled = s.logs.find((l) => /^cancelled \d+ job\(s\)$/.test(l.msg))?.cancelled;
    expect((cancelled as string[] | undefined)?.length).toBeGreaterThan(0);
    const jobs = await s.scheduler.provider.list({ names: [jobName] });
    expect(jobs.filter((j) => j.state === 'RUNNING' || j.state === 'PENDING')).toHaveLength(0);
  });
});
