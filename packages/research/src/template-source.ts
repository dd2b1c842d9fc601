/**
 * Where a model's chat template comes from: a local model directory, the Hugging Face cache
 * (`models--org--name/snapshots/<rev>/`), or the hub when it can be reached. The bundled
 * test template only when asked for by name; never as a silent fallback, since trajectories
 * rendered with another model's template are worthless.
 */
import { readdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  BUNDLED_TEMPLATE_DIR,
  createChatTemplate,
  loadChatTemplate,
  templateFromFiles,
} from './chat-template.js';
import type { ChatTemplate, LoadChatTemplateOptions } from './chat-template.js';
import { ResearchError } from './errors.js';
import { isDirectory, isMissingFile, messageOf, readTextIfExists } from './util.js';

/** `--chat-template` value that selects the bundled Harmony-style test template. */
export const BUNDLED_TEST_TEMPLATE = 'bundled-test';

/** The Hugging Face settings that template resolution uses. */
export interface HuggingFaceOptions {
  /** The hub cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`). */
  cacheDir?: string;
  /** The hub (`HF_ENDPOINT`, else `https://huggingface.co`). */
  endpoint?: string;
  /** `HF_TOKEN`, for gated models. */
  token?: string;
  /** `HF_HUB_OFFLINE=1`: never contact the hub. */
  offline?: boolean;
  /** Per hub request, default 15000 ms. */
  timeoutMs?: number;
}

/** Options of {@link resolveChatTemplate}. */
export interface ResolveChatTemplateOptions extends LoadChatTemplateOptions {
  /** The model: a local directory or a hub id (`openai/gpt-oss-120b`). */
  model: string;
  /** Where the template is instead of the model: a directory or a hub id (`--tokenizer`). */
  tokenizer?: string;
  /** `bundled-test`, or a `.jinja` file (`--chat-template`); wins over everything else. */
  chatTemplate?: string;
  /** Hub revision (branch, tag or commit), default `main`. */
  revision?: string;
  huggingFace?: HuggingFaceOptions;
  fetch?: typeof fetch;
}

/** The default hub. */
export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co';

const TRUTHY = new Set(['1', 'true', 'yes', 'on']);

/**
 * Hugging Face settings from the environment as `huggingface_hub` reads them: `HF_HUB_CACHE`
 * (or the older `HUGGINGFACE_HUB_CACHE`), `HF_HOME`, `XDG_CACHE_HOME`, `HF_ENDPOINT`,
 * `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), `HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`. Pure.
 */
export function huggingFaceOptionsFromEnv(
  env: Record<string, string | undefined>,
  home: string = homedir(),
): HuggingFaceOptions {
  const hfHome = env.HF_HOME || join(env.XDG_CACHE_HOME || join(home, '.cache'), 'huggingface');
  const options: HuggingFaceOptions = {
    cacheDir: env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || join(hfHome, 'hub'),
    endpoint: (env.HF_ENDPOINT || DEFAULT_HF_ENDPOINT).replace(/\/+$/, ''),
    offline: [env.HF_HUB_OFFLINE, env.TRANSFORMERS_OFFLINE].some(
      (v) => v !== undefined && TRUTHY.has(v.toLowerCase()),
    ),
  };
  const token = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (token) options.token = token;
  return options;
}

// A hub repo id: `name` or `org/name`, letters, digits, `-`, `_`, `.` (no `..`).
const REPO_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;

/**
 * Finds and loads the chat template for a model. In order: `chatTemplate` (`bundled-test`
 * or a `.jinja` file); `tokenizer` or `model` as a local directory; as a hub id, the newest
 * matching snapshot of the Hugging Face cache, then, for an `org/name` id, the hub itself
 * (unless offline). Throws
 * `template_not_found` saying what was tried and how to provide a template.
 *
 * @example
 * ```ts
 * const template = await resolveChatTemplate({
 *   model: 'openai/gpt-oss-120b',
 *   huggingFace: huggingFaceOptionsFromEnv(process.env),
 * });
 * ```
 */
export async function resolveChatTemplate(
  options: ResolveChatTemplateOptions,
): Promise<ChatTemplate> {
  const load = { ...(options.name === undefined ? {} : { name: options.name }) };
  if (options.chatTemplate !== undefined) return explicitTemplate(options.chatTemplate);

  const target = options.tokenizer ?? options.model;
  const flag = options.tokenizer === undefined ? '--model' : '--tokenizer';
  if (await isDirectory(target)) return loadChatTemplate(target, load);
  if (!REPO_ID.test(target) || target.includes('..')) {
    throw new ResearchError(
      'template_not_found',
      `${flag} "${target}" is neither a local directory nor a Hugging Face model id ` +
        `(org/name); pass --tokenizer <model directory>`,
      { param: flag.slice(2) },
    );
  }

  const hf = options.huggingFace ?? {};
  const revision = options.revision ?? 'main';
  const tried: string[] = [`"${target}" is not a local directory`];

  const cacheDir = hf.cacheDir;
  if (cacheDir !== undefined) {
    const repoDir = join(cacheDir, `models--${target.replace('/', '--')}`);
    for (const snapshot of await cacheSnapshots(repoDir, revision)) {
      const found = await templateFromFiles(
        (name) => readTextIfExists(join(snapshot, name)),
        (name) => join(snapshot, name),
        load,
      );
      if (found !== undefined) return found;
    }
    tried.push(`no snapshot with a chat template in the Hugging Face cache (${repoDir})`);
  }

  if (hf.offline) {
    tried.push('the hub was not asked (HF_HUB_OFFLINE is set)');
  } else if (!target.includes('/')) {
    // A served name such as "mock-model" or "gpt-oss" is no hub id worth a network call.
    tried.push(`the hub was not asked ("${target}" is not an org/name id)`);
  } else {
    const endpoint = (hf.endpoint ?? DEFAULT_HF_ENDPOINT).replace(/\/+$/, '');
    const base = `${endpoint}/${target}/resolve/${encodeURIComponent(revision)}`;
    const hubRead = hubReader(base, target, hf, options.fetch ?? fetch);
    try {
      const found = await templateFromFiles(hubRead, (name) => `${base}/${name}`, load);
      if (found !== undefined) return found;
      tried.push(`the hub (${endpoint}) has no chat template for ${target}@${revision}`);
    } catch (error) {
      if (!(error instanceof HubUnreachable)) throw error;
      tried.push(`the hub (${endpoint}) could not be reached: ${error.message}`);
    }
  }

  throw new ResearchError(
    'template_not_found',
    `no chat template for ${flag === '--model' ? 'model' : 'tokenizer'} "${target}": ` +
      `${tried.join('; ')}. Provide one: --tokenizer <model directory> (with ` +
      `tokenizer_config.json or chat_template.jinja), or fill the cache with ` +
      `\`huggingface-cli download ${target} tokenizer_config.json chat_template.jinja\` ` +
      `(set HF_HOME or HF_HUB_CACHE if it lives elsewhere, HF_ENDPOINT for a mirror), ` +
      `or --chat-template <file.jinja>. Only with the mock engine: --chat-template ` +
      `${BUNDLED_TEST_TEMPLATE}`,
    { param: 'tokenizer' },
  );
}

/**
 * Which name of a listed model to look the template up by: `root` (what the server serves,
 * e.g. the hub id behind a short served name) when it is a local directory or a hub id,
 * else the `id`.
 */
export async function templateTarget(root: string | undefined, id: string): Promise<string> {
  if (root === undefined || root === id) return id;
  if (await isDirectory(root)) return root;
  return REPO_ID.test(root) && !root.includes('..') ? root : id;
}

async function explicitTemplate(spec: string): Promise<ChatTemplate> {
  if (spec === BUNDLED_TEST_TEMPLATE) return loadChatTemplate(BUNDLED_TEMPLATE_DIR);
  const text = await readTextIfExists(spec);
  if (text === undefined) {
    throw new ResearchError(
      'template_not_found',
      `--chat-template ${spec}: no such file; pass a .jinja file or "${BUNDLED_TEST_TEMPLATE}"`,
      { param: 'chat-template' },
    );
  }
  return createChatTemplate(text, { source: spec });
}

/**
 * Snapshot directories of a cached repo to look in, best first: the one `refs/<revision>`
 * points to (or the revision itself when it is a commit); without that ref, every snapshot,
 * newest first.
 */
async function cacheSnapshots(repoDir: string, revision: string): Promise<string[]> {
  const snapshots = join(repoDir, 'snapshots');
  const ref = (await readTextIfExists(join(repoDir, 'refs', revision)))?.trim();
  const commit = ref || (/^[0-9a-f]{40}$/.test(revision) ? revision : undefined);
  if (commit !== undefined) {
    const dir = join(snapshots, commit);
    return (await isDirectory(dir)) ? [dir] : [];
  }
  let names: string[];
  try {
    names = await readdir(snapshots);
  } catch (error) {
    if (isMissingFile(error)) return [];
    throw error;
  }
  const dated = await Promise.all(
    names.map(async (name) => {
      const dir = join(snapshots, name);
      const info = await stat(dir);
      return { dir, isDir: info.isDirectory(), mtime: info.mtimeMs };
    }),
  );
  return dated
    .filter((d) => d.isDir)
    .sort((a, b) => b.mtime - a.mtime)
    .map((d) => d.dir);
}

class HubUnreachable extends Error {}

function hubReader(
  base: string,
  repo: string,
  hf: HuggingFaceOptions,
  doFetch: typeof fetch,
): (name: string) => Promise<string | undefined> {
  const headers: Record<string, string> = {};
  if (hf.token) headers.authorization = `Bearer ${hf.token}`;
  return async (name) => {
    let response: Response;
    try {
      response = await doFetch(`${base}/${name}`, {
        headers,
        signal: AbortSignal.timeout(hf.timeoutMs ?? 15_000),
      });
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause;
      throw new HubUnreachable(cause === undefined ? messageOf(error) : messageOf(cause));
    }
    if (response.ok) return response.text();
    await response.body?.cancel();
    if (response.status === 404) return undefined;
    if (response.status === 401 || response.status === 403) {
      throw new ResearchError(
        'template_not_found',
        `the hub refused ${base}/${name} (HTTP ${response.status}): ${repo} is gated, ` +
          `private or does not exist; check the id, set HF_TOKEN to a token with access, or pass --tokenizer <model directory>`,
        { param: 'tokenizer', status: response.status },
      );
    }
    throw new HubUnreachable(`HTTP ${response.status} for ${base}/${name}`);
  };
}
