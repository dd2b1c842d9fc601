import { WORKER_ENV } from '@es/protocol';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../src/resolve-config.js';
import { workerArgs, workerRequest, type NodeRequestContext } from '../src/node-request.js';
// @es/scheduler does not depend on apps/worker: its argv parser is read from source.
import { parseWorkerArgs } from '../../../apps/worker/src/args.js';

const ctx: NodeRequestContext = {
  schedulerUrl: 'http://login1:8781',
  secretFile: '/shared/es/secret',
  logDir: '/shared/es/logs',
  workerCommand: ['/usr/bin/node', '/opt/es/apps/worker/dist/cli.mjs'],
  anyPort: false,
};

describe('the worker command of a deployment', () => {
  it('passes the deployment as es-worker flags, and the scheduler in the environment', () => {
    const [d] = resolveConfig(
      {
        model: 'Qwen/Qwen3-32B',
        engine: 'sglang',
        tensorParallelSize: 4,
        maxModelLen: 32768,
        servedModelName: 'qwen',
        engineExtraArgs: '--enable-torch-compile',
      },
      {},
    ).deployments;
    if (!d) throw new Error('no deployment');
    expect(workerRequest(d, ctx)).toEqual({
      command: [
        ...ctx.workerCommand,
        '--engine=sglang',
        '--model=Qwen/Qwen3-32B',
        '--base-port=8001',
        '--tensor-parallel-size=4',
        `--gpus-per-node=${d.gpusPerNode}`,
        '--gpu-memory-utilization=0.9',
        '--max-model-len=32768',
        '--served-model-name=qwen',
        '--engine-extra-args=--enable-torch-compile',
        '--deployment=qwen',
        '--log-dir=/shared/es/logs',
      ],
      env: {
        [WORKER_ENV.schedulerUrl]: 'http://login1:8781',
        [WORKER_ENV.schedulerUrlFile]: '/shared/es/logs/worker-url',
        [WORKER_ENV.secretFile]: '/shared/es/secret',
        [WORKER_ENV.deployment]: 'qwen',
      },
      logDir: '/shared/es/logs',
    });
  });

  it('lets local nodes take any port and leaves out what is not set', () => {
    const [d] = resolveConfig({ model: 'm', backend: 'local', engine: 'mock' }, {}).deployments;
    if (!d) throw new Error('no deployment');
    const argv = workerArgs(d, { ...ctx, anyPort: true });
    expect(argv).toContain('--base-port=0');
    for (const flag of ['--engine-extra-args', '--served-model-name', '--max-model-len']) {
      expect(argv.some((a) => a.startsWith(flag))).toBe(false);
    }
  });

  it("passes the scheduler's drain grace and hand-over margin to the worker, which parses them back", async () => {
    const [d] = resolveConfig({ model: 'm', drainGrace: 20, handoverMargin: 6 }, {}).deployments;
    if (!d) throw new Error('no deployment');
    const argv = workerArgs(d, ctx);
    const at = argv.indexOf('--drain-grace=20');
    expect(argv.slice(at, at + 2)).toEqual(['--drain-grace=20', '--handover-margin=6']);
    const parsed = await parseWorkerArgs(
      [...argv.slice(ctx.workerCommand.length), '--scheduler-url', ctx.schedulerUrl],
      {},
    );
    expect(parsed).toMatchObject({ drainGraceSeconds: 20, handoverMarginSeconds: 6 });
    // Unset: left to the worker's defaults (15 s, a margin of 5 s).
    const [plain] = resolveConfig({ model: 'm' }, {}).deployments;
    if (!plain) throw new Error('no deployment');
    expect(workerArgs(plain, ctx).some((a) => /--(drain-grace|handover-margin)/.test(a))).toBe(
      false,
    );
  });
});
