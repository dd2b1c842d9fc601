/**
 * ARCHITECTURE.md cannot go stale silently: every path, package and symbol it names in
 * backquotes must exist. A path is a file or folder of this repository, a package an
 * `@es/…` name of a package.json, a symbol (camelCase, PascalCase or UPPER_CASE) a name
 * exported by, or a member declared in, a source file of packages/*\/src or apps/*\/src.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Every .ts file below `dir` (node_modules and dist left out). */
function sources(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name === 'dist') continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...sources(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) found.push(path);
  }
  return found;
}

/** What the code of the repository offers to be named. */
export interface Codebase {
  exists(path: string): boolean;
  packages: ReadonlySet<string>;
  /** Names exported by some source file. */
  exported: ReadonlySet<string>;
  /** Names declared as a member of an interface or class (`name(`, `name:`, `name?:`). */
  members: ReadonlySet<string>;
}

function readCodebase(root: string): Codebase {
  const exported = new Set<string>();
  const members = new Set<string>();
  const packages = new Set<string>();
  const files: string[] = [];
  for (const group of ['packages', 'apps']) {
    for (const name of readdirSync(join(root, group))) {
      const manifest = join(root, group, name, 'package.json');
      if (existsSync(manifest)) {
        packages.add((JSON.parse(readFileSync(manifest, 'utf8')) as { name: string }).name);
      }
      files.push(...sources(join(root, group, name, 'src')));
    }
  }
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(
      /export\s+(?:declare\s+)?(?:default\s+)?(?:async\s+)?(?:function\*?|const|let|class|interface|type|enum|abstract\s+class)\s+([A-Za-z_$][\w$]*)/g,
    )) {
      exported.add(m[1]!);
    }
    for (const m of text.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}/g)) {
      for (const part of m[1]!.split(',')) {
        const name = part
          .trim()
          .split(/\s+as\s+/)
          .pop()
          ?.replace(/^type\s+/, '');
        if (name) exported.add(name);
      }
    }
    for (const m of text.matchAll(
      /^\s+(?:readonly\s+|async\s+|private\s+|override\s+)*([A-Za-z_$][\w$]*)\??\s*[(:<]/gm,
    )) {
      members.add(m[1]!);
    }
  }
  return { exists: (path) => existsSync(join(root, path)), packages, exported, members };
}

/** The problems of `markdown` against `code`: names that do not exist. */
export function staleNames(markdown: string, code: Codebase): string[] {
  const problems: string[] = [];
  for (const m of markdown.matchAll(/`([^`\n]+)`/g)) {
    const token = m[1]!.trim();
    if (/^@es\/[\w-]+$/.test(token)) {
      if (!code.packages.has(token)) problems.push(`package ${token} does not exist`);
    } else if (/^[\w.-]+(\/[\w.*-]+)+\/?$/.test(token)) {
      if (!code.exists(token.replace(/\/$/, ''))) problems.push(`path ${token} does not exist`);
    } else if (/^[A-Za-z_$][\w$]*(\(\))?$/.test(token)) {
      const name = token.replace(/\(\)$/, '');
      const symbol = /[A-Z]/.test(name.slice(1)) || /^[A-Z]/.test(name);
      if (symbol && !code.exported.has(name) && !code.members.has(name)) {
        problems.push(`symbol ${name} is neither exported nor a declared member`);
      }
    }
  }
  return problems;
}

describe('ARCHITECTURE.md', () => {
  const code = readCodebase(ROOT);

  it('names only paths, packages and symbols that exist', () => {
    const text = readFileSync(join(ROOT, 'ARCHITECTURE.md'), 'utf8');
    expect(staleNames(text, code)).toEqual([]);
    // It does name things: a check of nothing would pass any page.
    expect(text.match(/`[^`\n]+`/g)?.length ?? 0).toBeGreaterThan(100);
  });

  it('reports a planted path, package and symbol that do not exist (the check can fail)', () => {
    const planted =
      'See `packages/pool/src/no-such-file.ts`, `@es/nothing`, `createNothing` and `NoSuchType`; ' +
      'but `packages/pool/src/registry.ts`, `@es/pool`, `createRegistry`, `resolveModel` and `ready` are fine.';
    expect(staleNames(planted, code)).toEqual([
      'path packages/pool/src/no-such-file.ts does not exist',
      'package @es/nothing does not exist',
      'symbol createNothing is neither exported nor a declared member',
      'symbol NoSuchType is neither exported nor a declared member',
    ]);
  });
});
