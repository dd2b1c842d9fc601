import { describe, expect, it } from 'vitest';
import {
  formatClusterFacts,
  formatClusterWorkers,
  formatDataPlane,
  formatDuration,
  formatPublicStatus,
  formatStatus,
  formatJobs,
  formatWorkers,
  table,
  type ClusterStatusResponse,
  type StatusResponse,
} from '../src/index.js';

const status: StatusResponse = {
  schedulerId: 'demo',
  provider: 'slurm',
  running: true,
  now: 0,
  startedAt: 0,
  listFailures: 0,
  deployments: [
    {
      name: 'qwen',
      jobName: 'es-demo-qwen',
      maxNodes: 2,
      readyWorkers: 1,
      submitting: 0,
      queued: 0,
      lastErrors: [],
      jobs: [
        {
          jobId: '4242',
          deployment: 'qwen',
          state: 'PENDING',
          reason: 'Priority',
          nodes: '',
          restartCount: 0,
          ageSeconds: 75,
          retiring: false,
          drained: false,
          progress: [],
          progressLine: 'PENDING(Priority) 1m15s',
          workerIds: [],
        },
        {
          jobId: '17',
          deployment: 'qwen',
          state: 'RUNNING',
          reason: 'None',
          nodes: 'gpu-a01',
          restartCount: 1,
          ageSeconds: 7300,
          timeLeftSeconds: 3600 * 3 + 60,
          retiring: false,
          drained: false,
          progress: [],
          progressLine: 'RUNNING 2h01m → ready',
          workerIds: ['17.1.0'],
        },
      ],
      workers: [
        {
          id: '17.1.0',
          deployment: 'qwen',
          jobId: '17',
          node: 'gpu-a01',
          gpus: [3, 2, 0, 1],
          baseUrl: 'http://gpu-a01:8001',
          state: 'ready',
          inFlight: 3,
          requestsServed: 120,
          requestErrors: 2,
          load: { running: 3, waiting: 1, kvCacheUsage: 0.42 },
          ejected: false,
          registeredAt: 0,
          lastHeartbeat: 0,
        },
      ],
    },
  ],
};

describe('status tables', () => {
  it.each([
    [undefined, '-'],
    [0, '0s'],
    [59.6, '1m00s'],
    [75, '1m15s'],
    [3661, '1h01m'],
    [3 * 86400 + 7200, '3d02h'],
  ])('formatDuration(%s) is %s', (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });

  it('shows TARGET only when a deployment scales with its load: target, floor, load, need and the pending delay', () => {
    expect(formatStatus(status)).not.toContain('TARGET');
    const now = Date.now();
    const scaling = {
      minNodes: 0,
      target: 2,
      load: 13.5,
      need: 1,
      policy: {
        targetInFlight: 8,
        targetKvCacheUsage: 0.9,
        windowMs: 30_000,
        upDelayMs: 60_000,
        downDelayMs: 600_000,
      },
      downSince: now - 60_000,
    };
    const scaled = { ...status, deployments: [{ ...status.deployments[0]!, scaling }] };
    const text = formatStatus(scaled);
    expect(text).toMatch(/DEPLOYMENT\s+READY\s+JOBS\s+TARGET\s+MAX\s+QUEUED/);
    expect(text).toMatch(/qwen .*2 \(min 0, load 13\.5 → 1, down in (8m59s|9m00s)\)\s+2\s+0/);
  });

  it('pads columns to the widest cell', () => {
    expect(
      table(
        ['A', 'BB', 'C'],
        [
          ['xxx', 'y', 'z'],
          ['', 'long', ''],
        ],
      ),
    ).toBe(['A    BB    C', 'xxx  y     z', '     long'].join('\n'));
  });

  it('shows a pending job with its SLURM reason and a running one with its time left', () => {
    const lines = formatJobs(status).split('\n');
    expect(lines[1]).toMatch(
      /^4242\s+qwen\s+PENDING \(Priority\)\s+-\s+-\s+0\s+1m15s\s+PENDING\(Priority\) 1m15s$/,
    );
    expect(lines[2]).toMatch(/^17\s+qwen\s+RUNNING\s+gpu-a01\s+3h01m\s+1\s+2h01m\s+RUNNING/);
  });

  it('shows a requeued job with its expected start, and that it was released', () => {
    const job = status.deployments[0]?.jobs[0];
    if (job === undefined) throw new Error('no job');
    const requeued: StatusResponse = {
      ...status,
      now: 1_000_000,
      deployments: [
        {
          ...(status.deployments[0] as StatusResponse['deployments'][number]),
          jobs: [
            { ...job, reason: 'BeginTime', restartCount: 1, expectedStart: 1_000_000 + 118_000 },
            {
              ...job,
              jobId: '4243',
              reason: 'Resources',
              restartCount: 1,
              expectedStart: 1_000_000 - 5_000,
              releasedAt: 990_000,
            },
          ],
        },
      ],
    };
    const lines = formatJobs(requeued).split('\n');
    expect(lines[1]).toMatch(
      /^4242\s+qwen\s+PENDING \(BeginTime, expected start in 1m58s\)\s+-\s+-\s+1\s/,
    );
    expect(lines[2]).toMatch(/^4243\s+qwen\s+PENDING \(Resources, starts now, released\)\s/);
  });

  it('shows a worker with its GPU slice as a range, its load, served and errors', () => {
    const [header, row] = formatWorkers(status).split('\n');
    expect(header).toMatch(
      /^WORKER\s+JOB\s+NODE\s+STATE\s+GPUS\s+LOAD\s+PORT\s+SERVED\s+ERRORS\s+REASON$/,
    );
    expect(row).toMatch(
      /^17\.1\.0\s+17\s+gpu-a01\s+ready\s+0-3\s+3 in-flight, 3 run, 1 wait, kv 42%\s+8001\s+120\s+2$/,
    );
  });
});

/** The seed's `/cluster_status` (its own scheduler sends no `deployments`). */
const cluster: ClusterStatusResponse = {
  model: 'openai/gpt-oss-120b',
  engine: 'vllm',
  tensor_parallel_size: 4,
  dp_per_node: 2,
  max_nodes: 16,
  total_nodes_active: 3,
  total_workers: 6,
  ready_workers: 4,
  loading_workers: 1,
  offline_workers: 1,
  pending_slurm_jobs: 2,
  workers: [
    { worker_id: '4242.0.0', status: 'READY', tensor_parallel_size: 4, requests_served: 17 },
    { worker_id: '4242.0.1', status: 'LOADING', tensor_parallel_size: 4, requests_served: 0 },
  ],
};

describe('the public status', () => {
  it("shows the seed's facts and each worker's id, state, TP and requests served", () => {
    expect(formatPublicStatus(cluster, 'http://login1:8780')).toBe(
      [
        'Elastic Serving at http://login1:8780 (public view)',
        '',
        'Model:        openai/gpt-oss-120b',
        'Engine:       vllm',
        'Parallelism:  TP=4, DP=2/node',
        'Nodes:        3 active / 16 max, 2 pending',
        'Workers:      4 ready, 1 loading, 1 offline',
        '',
        'WORKER    STATE    TP  SERVED',
        '4242.0.0  READY    4   17',
        '4242.0.1  LOADING  4   0',
      ].join('\n'),
    );
  });

  it('numbers the workers when the scheduler names none (its public view, without the key)', () => {
    const unnamed = cluster.workers.map(({ worker_id: _, ...w }) => w);
    expect(formatClusterWorkers({ ...cluster, workers: unnamed })).toBe(
      ['WORKER  STATE    TP  SERVED', '#1      READY    4   17', '#2      LOADING  4   0'].join(
        '\n',
      ),
    );
  });

  it('shows a block per deployment when there are several', () => {
    const two: ClusterStatusResponse = {
      ...cluster,
      deployments: [
        {
          name: 'gpt',
          model: 'openai/gpt-oss-120b',
          engine: 'vllm',
          tensor_parallel_size: 8,
          dp_per_node: 1,
          max_nodes: 4,
          total_nodes_active: 1,
          ready_workers: 1,
          loading_workers: 0,
          offline_workers: 0,
        },
        {
          name: 'qwen',
          model: 'Qwen/Qwen3-8B',
          engine: 'sglang',
          tensor_parallel_size: 1,
          dp_per_node: 8,
          max_nodes: 2,
          total_nodes_active: 2,
          ready_workers: 15,
          loading_workers: 1,
          offline_workers: 0,
        },
      ],
    };
    const text = formatClusterFacts(two);
    expect(text).toContain(
      [
        'Deployment:   qwen',
        'Model:        Qwen/Qwen3-8B',
        'Engine:       sglang',
        'Parallelism:  TP=1, DP=8/node',
        'Nodes:        2 active / 2 max',
        'Workers:      15 ready, 1 loading, 0 offline',
      ].join('\n'),
    );
    expect(text.startsWith('Deployment:   gpt\nModel:        openai/gpt-oss-120b\n')).toBe(true);
    expect(text.endsWith('\nPending jobs: 2')).toBe(true);
  });
});

describe('the data plane', () => {
  const dataPlane = {
    tableVersion: 9,
    subscribers: 1,
    processes: [
      {
        id: 'login1:4242',
        host: 'login1',
        pid: 4242,
        listen: 'http://0.0.0.0:8780',
        state: 'serving' as const,
        startedAt: 0,
        lastReportAt: 0,
        lastContactSeconds: 0.4,
        tableVersion: 9,
        subscribed: true,
        inFlight: 3,
        ejected: [],
        missedReports: 0,
        droppedRecords: 0,
      },
      {
        id: 'login2:77',
        host: 'login2',
        pid: 77,
        listen: 'http://0.0.0.0:8780',
        state: 'silent' as const,
        startedAt: 0,
        lastReportAt: 0,
        lastContactSeconds: 75,
        tableVersion: 7,
        subscribed: false,
        inFlight: 0,
        ejected: ['1.0.0'],
        missedReports: 2,
        droppedRecords: 0,
      },
    ],
  };

  it("lists each process with its state, last contact and table version against the scheduler's", () => {
    expect(formatDataPlane(dataPlane).split('\n')).toEqual([
      'DATA PLANE   LISTEN               STATE                  LAST CONTACT  TABLE  IN-FLIGHT  EJECTED  NOTE',
      'login1:4242  http://0.0.0.0:8780  serving                0s ago        9/9    3          -',
      'login2:77    http://0.0.0.0:8780  silent (unsubscribed)  1m15s ago     7/9    0          1.0.0    2 reports lost',
    ]);
  });

  it('is part of es status when the scheduler has one', () => {
    expect(formatStatus(status)).not.toContain('DATA PLANE');
    expect(formatStatus({ ...status, dataPlane })).toContain(formatDataPlane(dataPlane));
  });
});
