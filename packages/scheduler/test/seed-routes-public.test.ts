/**
 * What the seed routes show to anyone and what only to the admin key, over a real socket:
 * a registry holding a worker with a recognizable node, address, job id and log file, and a
 * deployment with a recognizable SLURM error. `/health`, `/cluster_status` and `/workers`
 * answer with counts and states to everyone; the planted values appear only for a request
 * that proves the admin key (bearer, or signed as `es` signs), never for a wrong key or a
 * replayed signature.
 */
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountAdmin, signAdminRequest, type MountedAdmin } from '@es/admin';
import { createRegistry } from '@es/pool';
import { createSeedRoutes, type DeploymentNote } from '../src/seed-routes.js';

const KEY = 'seed-routes-admin-key';
const PLANTED = {
  node: 'planted-node-77',
  host: 'planted-host-77.example',
  port: 45_677,
  jobId: '9876543',
  logFile: '/planted/logs/engine-9876543.0.0.log',
  error: 'sbatch: error: PLANTED-ERROR invalid partition planted-partition',
};

let server: ServerType;
let url: string;
let admin: MountedAdmin;

beforeAll(async () => {
  const registry = createRegistry({
    deployments: [
      {
        name: 'mock',
        model: 'mock-model',
        engine: 'mock',
        tensorParallelSize: 1,
        gpusPerNode: 2,
        maxNodes: 2,
      },
    ],
  });
  for (const index of [0, 1]) {
    registry.register({
      deployment: 'mock',
      jobId: PLANTED.jobId,
      restartCount: 0,
      index,
      host: PLANTED.host,
      port: PLANTED.port + index,
      gpus: [index],
      engine: 'mock',
      model: 'mock-model',
      node: PLANTED.node,
      state: index === 0 ? 'ready' : 'loading',
      logFile: PLANTED.logFile,
      pid: 4242,
    });
  }
  const app = new Hono();
  admin = mountAdmin(app, { events: registry, logDir: '/nonexistent', adminKey: KEY });
  const notes = new Map<string, DeploymentNote>([['mock', { permanentError: PLANTED.error }]]);
  app.route(
    '/',
    createSeedRoutes({
      registry,
      jobCounts: () => ({ pending: 1, running: 1 }),
      deploymentNotes: () => notes,
      isAdmin: (request) => admin.isAdmin(request),
    }),
  );
  server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  admin.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const ROUTES = ['/health', '/cluster_status', '/workers', '/'];

/** Every planted value (and each address field name) that `text` contains. */
function leaks(text: string): string[] {
  const values = [
    PLANTED.node,
    PLANTED.host,
    String(PLANTED.port),
    String(PLANTED.port + 1),
    PLANTED.jobId,
    PLANTED.logFile,
    'PLANTED-ERROR',
    '4242',
  ];
  const fields = ['base_url', 'hostname', 'ip_address', '"port"', 'slurm_job_id', 'worker_id'];
  return [...values, ...fields].filter((v) => text.includes(v));
}

const get = async (path: string, headers: Record<string, string> = {}) => {
  const response = await fetch(`${url}${path}`, { headers });
  expect(response.status, path).toBe(200);
  return response.text();
};

describe('seed routes: public counts and states, the rest with the admin key', () => {
  it('answer everyone with counts and states, and no node, address, id, log file or error', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong-key' }] as Record<string, string>[]) {
      for (const path of ROUTES) expect(leaks(await get(path, headers)), path).toEqual([]);
    }
    const cluster = JSON.parse(await get('/cluster_status')) as Record<string, unknown> & {
      workers: Record<string, unknown>[];
      deployments: Record<string, unknown>[];
    };
    expect(cluster).toMatchObject({
      total_workers: 2,
      ready_workers: 1,
      loading_workers: 1,
      total_nodes_active: 1,
      pending_slurm_jobs: 1,
    });
    expect(cluster.workers.map((w) => w.status).sort()).toEqual(['LOADING', 'READY']);
    // Which problem stops the deployment, not sbatch's text.
    expect(cluster.deployments[0]).toMatchObject({ name: 'mock', problem: 'permanent_error' });
    const { workers } = JSON.parse(await get('/workers')) as { workers: unknown[] };
    expect(workers).toEqual([
      { status: 'READY', deployment: 'mock', model_name: 'mock-model', requests_served: 0 },
      { status: 'LOADING', deployment: 'mock', model_name: 'mock-model', requests_served: 0 },
    ]);
    expect(JSON.parse(await get('/health'))).toEqual({ status: 'ok', ready_workers: 1 });
  });

  it('show nodes, addresses, ids, log files and errors to the admin key (bearer)', async () => {
    const auth = { authorization: `Bearer ${KEY}` };
    const cluster = await get('/cluster_status', auth);
    expect(leaks(cluster).sort()).toEqual(
      [
        PLANTED.node,
        PLANTED.host,
        String(PLANTED.port),
        String(PLANTED.port + 1),
        PLANTED.jobId,
        'PLANTED-ERROR',
        'base_url',
        'hostname',
        'ip_address',
        '"port"',
        'slurm_job_id',
        'worker_id',
      ].sort(),
    );
    const { workers } = JSON.parse(await get('/workers', auth)) as {
      workers: { worker_id: string; base_url: string; hostname: string }[];
    };
    expect(workers[0]).toMatchObject({
      worker_id: `${PLANTED.jobId}.0.0`,
      base_url: `http://${PLANTED.host}:${PLANTED.port}/v1`,
      hostname: PLANTED.node,
    });
  });

  it('show them to a signed request once; the same signature again gets the public view', async () => {
    const headers = signAdminRequest(KEY, { method: 'GET', path: '/workers', body: '' });
    expect(await get('/workers', headers)).toContain(PLANTED.host);
    expect(leaks(await get('/workers', headers))).toEqual([]);
    const wrongKey = signAdminRequest('another-key', { method: 'GET', path: '/workers', body: '' });
    expect(leaks(await get('/workers', wrongKey))).toEqual([]);
    // Signed for another path: not valid here.
    const elsewhere = signAdminRequest(KEY, { method: 'GET', path: '/health', body: '' });
    expect(leaks(await get('/cluster_status', elsewhere))).toEqual([]);
  });
});
