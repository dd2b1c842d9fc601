import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../src/index.js';

// Packs every publishable package with `pnpm pack` (which rewrites `workspace:^` and applies
// publishConfig) and installs the tarballs with npm into a scratch project outside the
// workspace: a published package must not need workspace-only paths or the `@es/source`
// export condition. Needs built `dist` folders (`pnpm build`; `pnpm test` builds first).
const run = promisify(execFile);
const PACKAGES: [dir: string, name: string, knownExport: string][] = [
  ['slurm', '@es/slurm', 'createSlurmClient'],
  ['pool', '@es/pool', 'classifyProviderError'],
  ['local', '@es/local', 'createLocalProvider'],
  ['proc', '@es/proc', 'terminateGroup'],
  ['protocol', '@es/protocol', 'deriveKeys'],
  ['proxy', '@es/proxy', 'createProxyApp'],
  ['worker', '@es/worker', 'createWorker'],
  ['mock-engine', '@es/mock-engine', 'createMockEngine'],
  ['admin', '@es/admin', 'mountAdmin'],
  ['client', '@es/client', 'createSchedulerClient'],
];

let scratch: string;
const tarballs = new Map<string, string>();

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'es-pack-'));
  const packs = join(scratch, 'tarballs');
  await mkdir(packs);
  for (const [dir, name] of PACKAGES) {
    const pkgDir = join(repoRoot, 'packages', dir);
    if (!existsSync(join(pkgDir, 'dist', 'index.mjs'))) {
      throw new Error(`${name} has no dist/index.mjs: run \`pnpm build\` first`);
    }
    const before = new Set(await readdir(packs));
    await run('pnpm', ['pack', '--pack-destination', packs], { cwd: pkgDir, timeout: 120_000 });
    const created = (await readdir(packs)).filter((f) => f.endsWith('.tgz') && !before.has(f));
    expect(created).toHaveLength(1);
    tarballs.set(name, `file:./tarballs/${created[0]}`);
  }
  const deps = Object.fromEntries(tarballs);
  await writeFile(
    join(scratch, 'package.json'),
    JSON.stringify({
      name: 'es-pack-check',
      private: true,
      type: 'module',
      dependencies: deps,
      overrides: deps,
    }),
  );
  await run(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--ignore-scripts',
      '--prefer-offline',
      '--loglevel=error',
    ],
    {
      cwd: scratch,
      timeout: 170_000,
    },
  );
}, 300_000);

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('published packages', () => {
  it.each(PACKAGES)(
    '%s installs from its tarball and imports outside the workspace',
    async (dir, name, known) => {
      const manifest = JSON.parse(
        (
          await run('node', ['-p', `JSON.stringify(require('${name}/package.json'))`], {
            cwd: scratch,
          })
        ).stdout,
      ) as Record<string, unknown>;
      const text = JSON.stringify(manifest);
      expect(text).not.toContain('@es/source');
      expect(text).not.toContain('workspace:');
      expect(manifest.version).toMatch(/^\d+\.\d+\.\d+/);
      // Only the build, the README and the manifest are shipped.
      const installed = join(scratch, 'node_modules', ...name.split('/'));
      const shipped = (await readdir(installed)).sort();
      expect(shipped).toEqual(expect.arrayContaining(['README.md', 'dist', 'package.json']));
      expect(
        shipped.filter((f) => !['README.md', 'dist', 'package.json', 'LICENSE'].includes(f)),
      ).toEqual([]);
      const { stdout } = await run(
        'node',
        [
          '--input-type=module',
          '-e',
          `const m = await import('${name}'); console.log(typeof m.${known});`,
        ],
        { cwd: scratch },
      );
      expect(stdout.trim(), `${dir}: typeof ${known}`).toBe('function');
    },
  );
});
