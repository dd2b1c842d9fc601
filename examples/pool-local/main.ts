/**
 * @es/pool without the scheduler: a registry, the worker protocol on a real socket and a
 * reconciler that keeps `maxNodes` local "nodes" busy with a trivial worker (worker.mjs,
 * one tiny HTTP server per GPU slice). Preempted or crashed nodes are replaced.
 *
 * Run it (Node 20 needs a TypeScript loader): `npx tsx examples/pool-local/main.ts`
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { createLocalProvider } from '@es/local';
import type { LocalProvider } from '@es/local';
import { createReconciler, createRegistry, createWorkerApi } from '@es/pool';
import { deriveKeys, WORKER_ENV } from '@es/protocol';
import type { PoolEvent, Reconciler, Registry } from '@es/pool';

/** Options of {@link startPoolLocalExample}. */
export interface PoolLocalExampleOptions {
  /** Local "nodes" with 4 GPU ids each (default 2). */
  nodes?: number;
  /** Node jobs to keep (default 2). */
  maxNodes?: number;
  /** Where job logs go (default `logs/pool-local`). */
  logDir?: string;
  /** Port of the worker API (default 0: any free port). */
  port?: number;
  /** Reconciler tick (default 1 000 ms). */
  intervalMs?: number;
  /** Called with every lifecycle event. */
  onEvent?: (event: PoolEvent) => void;
}

/** A running example. */
export interface PoolLocalExample {
  /** Where workers reach the worker API, e.g. `http://127.0.0.1:41234`. */
  url: string;
  registry: Registry;
  reconciler: Reconciler;
  provider: LocalProvider;
  /** Stop the reconciler, kill the local jobs, close the socket. */
  close(): Promise<void>;
}

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.mjs', import.meta.url));

/** Start the registry, the worker API, the local provider and the reconciler. */
export async function startPoolLocalExample(
  options: PoolLocalExampleOptions = {},
): Promise<PoolLocalExample> {
  const registry = createRegistry({
    heartbeatIntervalMs: 1_000,
    deployments: [
      {
        name: 'demo',
        model: 'example-model',
        engine: 'mock',
        gpusPerNode: 4,
        tensorParallelSize: 2, // two instances per node, GPUs 0,1 and 2,3
        maxNodes: options.maxNodes ?? 2,
      },
    ],
  });
  if (options.onEvent) registry.on(options.onEvent);

  // Same-user trust: workers sign their requests (and the scheduler its answers) with a key
  // derived from a shared secret; the key itself never crosses the wire.
  const { workerKey } = deriveKeys(randomBytes(32).toString('hex'));
  const api = createWorkerApi(registry, { workerKey });
  const server = serve({ fetch: api.fetch, port: options.port ?? 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const url = `http://127.0.0.1:${address.port}`;

  const provider = createLocalProvider({ nodes: options.nodes ?? 2, gpusPerNode: 4 });
  const reconciler = createReconciler({
    registry,
    provider,
    schedulerId: `example-${process.pid}`,
    intervalMs: options.intervalMs ?? 1_000,
    startupTimeoutMs: 30_000,
    heartbeatTimeoutMs: 5_000,
    buildNodeRequest: (deployment) => ({
      command: [process.execPath, WORKER_SCRIPT],
      env: {
        [WORKER_ENV.schedulerUrl]: url,
        EXAMPLE_WORKER_KEY: workerKey,
        EXAMPLE_MODEL: deployment.model,
        EXAMPLE_TENSOR_PARALLEL_SIZE: String(deployment.tensorParallelSize),
      },
      logDir: options.logDir ?? 'logs/pool-local',
    }),
  });
  reconciler.start();

  return {
    url,
    registry,
    reconciler,
    provider,
    async close() {
      await reconciler.stop();
      await provider.close({ kill: true });
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function main(): Promise<void> {
  const example = await startPoolLocalExample({
    onEvent: (e) =>
      console.log(`${e.type.padEnd(10)} ${e.workerId ?? e.jobId ?? ''} ${e.reason ?? ''}`),
  });
  console.log(`worker API on ${example.url}; Ctrl-C stops`);
  const timer = setInterval(() => {
    const ready = example.registry.routable('demo').map((w) => w.baseUrl);
    console.log(`ready: ${ready.join(' ') || 'none yet'}`);
  }, 3_000);
  process.once('SIGINT', () => {
    clearInterval(timer);
    void example.close();
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
