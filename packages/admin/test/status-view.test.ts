import { describe, expect, it } from 'vitest';
import { createProgressTracker, progressLine } from '../src/index.js';

describe('job progress', () => {
  it('reads PENDING(reason) → RUNNING → loading → ready with each phase duration', () => {
    const t = createProgressTracker();
    t.observeEvent({ type: 'submitted', at: 0, deployment: 'd', jobId: '7' });
    t.observeEvent({ type: 'running', at: 40_000, deployment: 'd', jobId: '7' });
    t.observeEvent({
      type: 'registered',
      at: 42_000,
      deployment: 'd',
      jobId: '7',
      workerId: '7.0.0',
    });
    t.observeEvent({
      type: 'registered',
      at: 42_500,
      deployment: 'd',
      jobId: '7',
      workerId: '7.0.1',
    });
    t.observeEvent({ type: 'ready', at: 57_000, deployment: 'd', jobId: '7', workerId: '7.0.0' });
    // A second worker registering after the first is ready does not go back to loading.
    t.observeEvent({
      type: 'registered',
      at: 58_000,
      deployment: 'd',
      jobId: '7',
      workerId: '7.0.2',
    });
    expect(progressLine(t.steps('7'), 60_000, 'RUNNING')).toBe(
      'PENDING 40s → RUNNING 2s → loading 15s → ready',
    );
  });

  it('a worker registering before the list shows RUNNING still passes through RUNNING', () => {
    const t = createProgressTracker();
    t.observeEvent({ type: 'submitted', at: 0, deployment: 'd', jobId: '8' });
    t.observeEvent({
      type: 'registered',
      at: 1_000,
      deployment: 'd',
      jobId: '8',
      workerId: '8.0.0',
    });
    t.observeEvent({ type: 'running', at: 2_000, deployment: 'd', jobId: '8' });
    expect(progressLine(t.steps('8'), 5_000, 'RUNNING')).toBe(
      'PENDING 1s → RUNNING 0s → loading 4s',
    );
  });

  it('a requeued job starts its line over from pending', () => {
    const t = createProgressTracker();
    t.observeEvent({ type: 'submitted', at: 0, deployment: 'd', jobId: '9' });
    t.observeEvent({ type: 'running', at: 1_000, deployment: 'd', jobId: '9' });
    t.observeEvent({ type: 'preempted', at: 5_000, deployment: 'd', jobId: '9' });
    t.observeStatus(
      {
        schedulerId: 's',
        provider: 'slurm',
        running: true,
        listFailures: 0,
        deployments: [
          {
            name: 'd',
            jobName: 'es-s-d',
            maxNodes: 1,
            readyWorkers: 0,
            submitting: 0,
            lastErrors: [],
            workers: [],
            jobs: [
              {
                jobId: '9',
                tag: 't',
                state: 'PENDING',
                reason: 'BeginTime',
                nodes: '',
                restartCount: 1,
                ageSeconds: 10,
                retiring: false,
                drained: true,
                workers: [],
              },
            ],
          },
        ],
      },
      8_000,
    );
    expect(progressLine(t.steps('9'), 20_000, 'PENDING')).toBe('PENDING(BeginTime) 12s');
  });
});
