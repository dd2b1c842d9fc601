/**
 * The seed client's commands as its users run them: the built `es` binary, started from a
 * directory other than the scheduler's with nothing but the scheduler's URL (a flag, one of
 * the environment variables, or the URL file of its log directory), against the built
 * `es-scheduler` on the local backend with mock engines. `status` shows the public view
 * without a key and nodes, ports and jobs with one; `models`, `health` and `test` need no key.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deriveKeys } from '@es/protocol';
import {
  assertBuilt,
  freePort,
  runEs,
  startBuiltScheduler,
  until,
  type BuiltScheduler,
} from './built.js';

let root: string;
/** Where the scheduler runs (its `logs/` with the secret and the URL file). */
let schedulerDir: string;
/** Where `es` runs: no `logs/`, nothing of the scheduler's. */
let elsewhere: string;
let url: string;
let scheduler: BuiltScheduler;

/** `es <args>` from `elsewhere`, with PATH and `env` only. */
const es = (env: Record<string, string>, ...args: string[]) => runEs(elsewhere, env, args);

interface SeedWorker {
  worker_id: string;
  port: number;
  hostname: string;
  slurm_job_id: string;
  requests_served: number;
}

/** `/cluster_status` with the admin key: worker ids, nodes and ports are shown only then. */
const clusterStatus = async () => {
  const secret = readFileSync(join(schedulerDir, 'logs', 'secret'), 'utf8');
  const headers = { authorization: `Bearer ${deriveKeys(secret).adminToken}` };
  return (await (await fetch(`${url}/cluster_status`, { headers })).json()) as {
    ready_workers: number;
    workers: SeedWorker[];
  };
};

/** The lines `es status` shows in the seed's layout of facts for this scheduler. */
const FACTS = [
  /^Model:\s+mock-model$/m,
  /^Engine:\s+mock$/m,
  /^Parallelism:\s+TP=4, DP=2\/node$/m,
  /^Nodes:\s+2 active \/ 2 max, 0 pending$/m,
  /^Workers:\s+4 ready, 0 loading, 0 offline$/m,
];

beforeAll(async () => {
  assertBuilt();
  root = mkdtempSync(join(tmpdir(), 'es-seed-cli-'));
  schedulerDir = join(root, 'scheduler');
  elsewhere = join(root, 'elsewhere');
  mkdirSync(schedulerDir);
  mkdirSync(elsewhere);
  scheduler = await startBuiltScheduler(schedulerDir, `seed${process.pid}`);
  url = scheduler.url;
  await until(
    async () =>
      (await clusterStatus().catch(() => undefined))?.ready_workers === 4 ? true : undefined,
    30_000,
    '4 ready workers',
  );
}, 60_000);

afterAll(async () => {
  await scheduler?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('es with only the URL, from another directory', () => {
  it('es test sends one chat completion and prints the answer and the latency', async () => {
    const run = await es(
      { ES_SCHEDULER_URL: url },
      ...['test', '--prompt', 'Say hello', '--max-tokens', '12', '--temperature', '0'],
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // The same request through the official client: the mock engine answers the same text.
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'EMPTY', maxRetries: 0 });
    const same = await client.chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'user', content: 'Say hello' }],
      max_tokens: 12,
      temperature: 0,
    });
    const answer = same.choices[0]?.message.content ?? '';
    expect(answer.length).toBeGreaterThan(0);
    expect(run.stdout).toContain(`Answer:   ${answer}\n`);
    expect(run.stdout).toMatch(/^Model:\s+mock-model$/m);
    expect(run.stdout).toMatch(/^Prompt:\s+Say hello$/m);
    expect(run.stdout).toMatch(
      new RegExp(
        `^Latency:\\s+\\d+\\.\\d\\d s \\(${same.usage?.completion_tokens} tokens, [\\d.]+ tokens/s, finish ${same.choices[0]?.finish_reason}\\)$`,
        'm',
      ),
    );
  });

  it('es status shows the public view in the seed layout with --url alone', async () => {
    // Requests served through es-proxy are counted from its reports (one a second).
    const run = await until(async () => {
      const status = await es({}, 'status', '--url', url);
      const counted = status.stdout
        .split('\n')
        .filter((l) => /^#\d+\s/.test(l))
        .reduce((n, r) => n + Number(r.split(/\s+/)[3]), 0);
      return counted >= 2 ? status : undefined;
    }, 10_000);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^Elastic Serving at ${url} \\(public view\\)`));
    for (const line of FACTS) expect(run.stdout).toMatch(line);
    const { workers } = await clusterStatus();
    // The public view names no worker (an id holds the job id): rows are numbered.
    const rows = run.stdout.split('\n').filter((l) => /^#\d+\s/.test(l));
    expect(rows.map((r) => r.split(/\s+/).slice(0, 3)).sort()).toEqual(
      workers.map((_, i) => [`#${i + 1}`, 'READY', '4']).sort(),
    );
    for (const w of workers) expect(run.stdout).not.toContain(w.worker_id);
    // Requests served per worker: the two completions of the test above.
    const served = rows.map((r) => Number(r.split(/\s+/)[3]));
    expect(served.reduce((a, b) => a + b, 0)).toBe(2);
    // No admin key: no node names, ports or jobs.
    expect(run.stdout).not.toMatch(/^JOB\s/m);
    expect(run.stdout).not.toMatch(/local-\d/);
    for (const w of workers) expect(run.stdout).not.toContain(String(w.port));
    expect(run.stdout).toMatch(/need the admin key: --admin-key, ES_ADMIN_KEY/);
  });

  it('finds the URL in ES_SCHEDULER_URL, the seed variable ELASTIC_SERVING_URL, or the log directory', async () => {
    const envs: Record<string, string>[] = [
      { ES_SCHEDULER_URL: url },
      { ELASTIC_SERVING_URL: url },
    ];
    for (const env of envs) {
      const run = await es(env, 'status');
      expect(run.code, JSON.stringify(env)).toBe(0);
      for (const line of FACTS) expect(run.stdout).toMatch(line);
    }
    // The log directory holds the URL file and the secret: the admin view, nothing else given.
    const logDir = join(schedulerDir, 'logs');
    expect(readFileSync(join(logDir, 'scheduler-url'), 'utf8')).toBe(`${url}\n`);
    const run = await es({ ES_LOG_DIR: logDir }, 'status');
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    for (const line of FACTS) expect(run.stdout).toMatch(line);
    expect(run.stdout).toMatch(new RegExp(`^scheduler seed${process.pid} \\(local\\)`));
    expect(run.stdout).toMatch(/^JOB\s+DEPLOYMENT\s+STATE\s+NODE/m);
  });

  it('es status with the admin key also shows nodes, ports and jobs', async () => {
    const secret = readFileSync(join(schedulerDir, 'logs', 'secret'), 'utf8');
    const run = await es(
      { ES_SCHEDULER_URL: url, ES_ADMIN_KEY: deriveKeys(secret).adminToken },
      'status',
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    for (const line of FACTS) expect(run.stdout).toMatch(line);
    const { workers } = await clusterStatus();
    const jobs = new Set(workers.map((w) => w.slurm_job_id));
    const jobRows = run.stdout
      .split('\n')
      .filter((l) => /^\d+\s+mock-model\s+RUNNING\s+local-\d/.test(l));
    expect(new Set(jobRows.map((r) => r.split(/\s+/)[0]))).toEqual(jobs);
    expect(run.stdout).toMatch(/^WORKER\s+JOB\s+NODE\s+STATE\s+GPUS\s+LOAD\s+PORT\s+SERVED/m);
    for (const w of workers) {
      const row = run.stdout.split('\n').find((l) => l.startsWith(`${w.worker_id} `)) ?? '';
      expect(row).toMatch(
        new RegExp(
          `^${w.worker_id}\\s+${w.slurm_job_id}\\s+${w.hostname}\\s+ready\\s.*\\s${w.port}\\s+\\d+\\s`,
        ),
      );
    }
  });

  it('es models lists /v1/models and es health prints /health', async () => {
    const models = await es({ ELASTIC_SERVING_URL: url }, 'models');
    expect(models).toEqual({ code: 0, stdout: 'mock-model\n', stderr: '' });
    const health = await es({ ELASTIC_SERVING_URL: url }, 'health');
    expect(health.code).toBe(0);
    expect(JSON.parse(health.stdout)).toEqual({ status: 'ok', ready_workers: 4 });
  });
});

describe('es errors name the fix', () => {
  it('an unknown model names the served ones and the flag', async () => {
    const run = await es({ ES_SCHEDULER_URL: url }, 'test', '--model', 'llama-9000');
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      "es: The model 'llama-9000' does not exist. Served models: mock-model. Pass --model with one of them (es models lists them).\n",
    );
  });

  it('an unreachable URL says where the URL came from and how to point es at the scheduler', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    for (const command of ['status', 'models', 'health', 'test']) {
      const run = await es({ ELASTIC_SERVING_URL: closed }, command);
      expect(run.code, command).toBe(1);
      expect(run.stderr, command).toBe(
        `es: scheduler not reachable at ${closed}: is it running? Start it with \`bash scripts/run.sh\` or \`scripts/es-scheduler --model ...\`, or point --url (ES_SCHEDULER_URL, ELASTIC_SERVING_URL) at it (URL from ELASTIC_SERVING_URL)\n`,
      );
    }
    const empty = join(root, 'no-scheduler-logs');
    mkdirSync(empty, { recursive: true });
    const noFile = await es({ ES_LOG_DIR: empty }, 'status');
    expect(noFile.code).toBe(1);
    expect(noFile.stderr).toMatch(
      /no scheduler URL in .*no-scheduler-logs\/scheduler-url \(ES_LOG_DIR=.*\): the scheduler writes it while it serves .*pass --url or ES_SCHEDULER_URL/,
    );
  });

  it('a URL that is not one, or a bad --max-tokens, is a usage error naming the flag', async () => {
    const badUrl = await es({}, 'status', '--url', 'login1:8780');
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toBe(
      `es: --url: expected the scheduler's http(s) URL such as http://login1:8780, got "login1:8780"\n`,
    );
    const badTokens = await es({ ES_SCHEDULER_URL: url }, 'test', '--max-tokens', '0');
    expect(badTokens.code).toBe(2);
    expect(badTokens.stderr).toBe('es: --max-tokens: expected a whole number above 0, got 0\n');
  });
});
