// A trivial worker for examples/pool-local: no engine, one tiny HTTP server per GPU slice,
// speaking the worker protocol of @es/pool (register, heartbeat, drain, deregister) through
// the typed client of @es/protocol, which signs every request and ignores any answer not
// signed by the scheduler (a squatter's 409 cannot stop it).
// The local provider starts it with SLURM-like variables, as SLURM would start apps/worker.
import { createServer } from 'node:http';
import process from 'node:process';
import { clearInterval, setInterval } from 'node:timers';
import { createWorkerClient } from '@es/protocol';

const env = process.env;
const schedulerUrl = env.ES_SCHEDULER_URL;
const deployment = env.ES_DEPLOYMENT;
// A real worker derives this from ES_SECRET_FILE (deriveKeys); the example passes it directly.
const workerKey = env.EXAMPLE_WORKER_KEY;
const jobId = env.SLURM_JOB_ID;
const restartCount = Number(env.SLURM_RESTART_COUNT ?? '0');
const node = env.SLURMD_NODENAME ?? 'localhost';
const model = env.EXAMPLE_MODEL ?? 'example-model';
const tp = Number(env.EXAMPLE_TENSOR_PARALLEL_SIZE ?? '1');
const gpus = (env.CUDA_VISIBLE_DEVICES ?? '0').split(',').map(Number);
const client = createWorkerClient({ schedulerUrl, workerKey });

/** One "engine instance": answers GET / with who it is. */
async function startInstance(index) {
  const slice = gpus.slice(index * tp, index * tp + tp);
  const instance = { index, slice, id: undefined, timer: undefined, server: undefined };
  instance.server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ worker: instance.id, node, gpus: slice }));
  });
  await new Promise((resolve) => instance.server.listen(0, '127.0.0.1', resolve));
  instance.port = instance.server.address().port;
  await register(instance);
  return instance;
}

async function register(instance) {
  const res = await client.register({
    deployment,
    jobId,
    restartCount,
    index: instance.index,
    host: '127.0.0.1',
    port: instance.port,
    gpus: instance.slice,
    engine: 'mock',
    model,
    node,
    state: 'loading',
    pid: process.pid,
  });
  if (res.kind === 'fenced') process.exit(0); // a newer incarnation owns this job
  if (!res.ok) throw new Error(`register: ${res.message}`);
  const { workerId, heartbeatIntervalMs } = res.body;
  instance.id = workerId;
  clearInterval(instance.timer);
  // Loading takes no time here: the first heartbeat already says ready.
  instance.timer = setInterval(() => void heartbeat(instance), heartbeatIntervalMs);
  await heartbeat(instance);
}

async function heartbeat(instance) {
  const res = await client.heartbeat(instance.id, {
    state: 'ready',
    restartCount,
    load: { running: 0, waiting: 0 },
  });
  // `unreachable` (no answer, or an unsigned one): keep serving, try again next interval.
  if (res.kind === 'unknown') await register(instance); // the scheduler restarted
  if (res.kind === 'fenced') process.exit(0);
}

const instances = await Promise.all(
  Array.from({ length: Math.max(1, Math.floor(gpus.length / tp)) }, (_, i) => startInstance(i)),
);

process.once('SIGTERM', async () => {
  // Drain first so the scheduler stops routing here at once, then leave cleanly.
  await Promise.all(instances.map((i) => client.drain(i.id, { reason: 'SIGTERM' })));
  for (const i of instances) {
    clearInterval(i.timer);
    i.server.close();
  }
  await Promise.all(instances.map((i) => client.deregister(i.id, { reason: 'exit' })));
  process.exit(0);
});
