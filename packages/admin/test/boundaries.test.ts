/**
 * `@es/admin` is an HTTP edge over the pool's roles: neither its code nor its tests reach for
 * a cluster driver or the worker (issue 12). Coverage that needs them lives in
 * apps/scheduler/test.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FORBIDDEN = ['@es/slurm', '@es/worker', '@es/local'];

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => join(dir, name));
}

describe('@es/admin boundaries', () => {
  it('imports neither a node provider nor the worker, in its code or its tests', () => {
    const found: string[] = [];
    for (const file of [...sources('src'), ...sources('test')]) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const name of FORBIDDEN) {
        if (new RegExp(`from '${name}[/']|import\\('${name}`).test(text))
          found.push(`${file}: ${name}`);
      }
    }
    expect(found).toEqual([]);
  });

  it('does not depend on them either', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<
      string,
      Record<string, string> | undefined
    >;
    const deps = Object.keys({ ...pkg.dependencies, ...pkg.devDependencies });
    expect(deps.filter((d) => FORBIDDEN.includes(d))).toEqual([]);
  });
});
