/**
 * The rig of the continuation tests: real mock-engine processes with request logs behind
 * the proxy on a real socket, and the official `openai` client.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestLogRecord } from '@es/mock-engine';
import type { DeploymentView } from '@es/pool';
import OpenAI from 'openai';
import { createProxyApp, startProxyServer } from '../src/index.js';
import type { ContinuationRecord, ProxyRequestRecord } from '../src/index.js';
import { spawnMockEngine } from './engine-process.js';
import { createStaticPool, deploymentView } from './static-pool.js';
import type { StaticPool } from './static-pool.js';

export const KEY = 'es-engine-test-key';

export interface Engine {
  name: string;
  child: ChildProcess;
  url: string;
  /** The requests this engine received (its request log). */
  requests(): RequestLogRecord[];
}

/** What a test started; each test file runs them after each test ({@link runCleanups}). */
export const cleanups: (() => Promise<void> | void)[] = [];

export async function runCleanups(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
}

/** A mock-engine process with a request log, serving the model `llama` with {@link KEY}. */
export async function startEngine(name: string, ...flags: string[]): Promise<Engine> {
  const dir = mkdtempSync(join(tmpdir(), `es-cont-${name}-`));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const args = ['--served-model-name', 'llama', '--api-key', KEY, '--request-log-dir', dir];
  const { child, url } = await spawnMockEngine([...args, '--ttft', '5', ...flags], cleanups);
  return {
    name,
    child,
    url,
    requests() {
      try {
        return readFileSync(join(dir, `requests-${child.pid}.jsonl`), 'utf8')
          .trim()
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => JSON.parse(line) as RequestLogRecord);
      } catch {
        return [];
      }
    },
  };
}

export interface Rig {
  pool: StaticPool;
  client: OpenAI;
  url: string;
  continuations: ContinuationRecord[];
  records: ProxyRequestRecord[];
  add(engine: Engine): void;
}

/** A proxy on a real socket in front of `engines` (deployment `llama`), and its records. */
export async function rig(
  engines: Engine[],
  continuation: { maxContinuations?: number; stallTimeoutMs?: number } = {},
  view: Partial<DeploymentView> = {},
): Promise<Rig> {
  const pool = createStaticPool([
    deploymentView('llama', 'least-outstanding', { upstreamApiKey: KEY, ...view }),
  ]);
  const continuations: ContinuationRecord[] = [];
  const records: ProxyRequestRecord[] = [];
  const app = createProxyApp({
    pool,
    continuation: { stallTimeoutMs: 800, ...continuation },
    onContinuation: (record) => continuations.push(record),
    onRequestComplete: (record) => records.push(record),
  });
  const server = await startProxyServer({ fetch: app.fetch });
  cleanups.push(async () => {
    await server.close(0);
    await app.close();
  });
  const add = (engine: Engine) => {
    pool.add({ id: engine.name, deployment: 'llama', baseUrl: engine.url });
  };
  for (const engine of engines) add(engine);
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
  return { pool, client, url: server.url, continuations, records, add };
}
