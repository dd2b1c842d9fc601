import { describe, expect, it } from 'vitest';
import {
  formatDuration,
  formatJobs,
  formatWorkers,
  table,
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

  it('shows a worker with its GPU slice as a range, its load, served and errors', () => {
    const [header, row] = formatWorkers(status).split('\n');
    expect(header).toMatch(
      /^WORKER\s+JOB\s+NODE\s+STATE\s+GPUS\s+LOAD\s+SERVED\s+ERRORS\s+REASON$/,
    );
    expect(row).toMatch(
      /^17\.1\.0\s+17\s+gpu-a01\s+ready\s+0-3\s+3 in-flight, 3 run, 1 wait, kv 42%\s+120\s+2$/,
    );
  });
});
