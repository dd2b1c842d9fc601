/**
 * Where generate-trajectories finds the model's chat template: a local model directory, a
 * Hugging Face cache laid out as huggingface_hub writes it (in a temp dir), or the hub (a
 * local server standing in for it through HF_ENDPOINT); with none of them, an error that
 * says how to provide one. The bundled test template is used only when asked for by name.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BUNDLED_TEMPLATE_DIR } from '../src/chat-template.js';
import { huggingFaceOptionsFromEnv, resolveChatTemplate } from '../src/template-source.js';
import type { HuggingFaceOptions } from '../src/template-source.js';
import { startFakeTools } from './fake-tools.js';
import type { FakeAnswer, FakeTools } from './fake-tools.js';
import { startMock } from './mock.js';

const run = promisify(execFile);
const SCRIPT = join(import.meta.dirname, '..', '..', '..', 'scripts', 'generate-trajectories');
const RESEARCH_SCRIPT = join(import.meta.dirname, '..', 'mock', 'research-script.json');
const BUNDLED = await readFile(join(BUNDLED_TEMPLATE_DIR, 'chat_template.jinja'), 'utf8');
const COMMIT = 'a'.repeat(40);
const OLD_COMMIT = 'b'.repeat(40);
const messages = [{ role: 'user' as const, content: 'hi' }];

/** A hub stand-in on 127.0.0.1 answering `files` by path, 404 for anything else. */
function startHub(files: Record<string, FakeAnswer>): Promise<FakeTools> {
  return startFakeTools(
    (request) => files[request.path] ?? { status: 404, body: 'Entry not found' },
  );
}

/** A port nothing listens on: the hub "cannot be reached". */
async function closedPortUrl(): Promise<string> {
  const hub = await startHub({});
  await hub.close();
  return hub.url;
}

/** Writes `models--org--name/{refs/main, snapshots/<commit>/<files>}` under `cacheDir`. */
async function cacheRepo(
  cacheDir: string,
  repo: string,
  snapshots: Record<string, Record<string, string>>,
  mainRef?: string,
): Promise<string> {
  const repoDir = join(cacheDir, `models--${repo.replace('/', '--')}`);
  for (const [commit, files] of Object.entries(snapshots)) {
    const dir = join(repoDir, 'snapshots', commit);
    await mkdir(dir, { recursive: true });
    for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  }
  if (mainRef !== undefined) {
    await mkdir(join(repoDir, 'refs'), { recursive: true });
    await writeFile(join(repoDir, 'refs', 'main'), mainRef);
  }
  return repoDir;
}

let unreachable: string;
beforeAll(async () => {
  unreachable = await closedPortUrl();
});

function offlineHub(cacheDir: string): HuggingFaceOptions {
  return { cacheDir, endpoint: unreachable };
}

describe('resolveChatTemplate', () => {
  test('a local model directory', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'es-model-'));
    await writeFile(join(dir, 'chat_template.jinja'), 'LOCAL {{ messages[0].content }}');
    const template = await resolveChatTemplate({ model: dir, huggingFace: offlineHub(dir) });
    expect(template.source).toBe(join(dir, 'chat_template.jinja'));
    expect(template.render({ messages })).toBe('LOCAL hi');
  });

  test('the Hugging Face cache under HF_HUB_CACHE: the snapshot refs/main points to', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'es-hf-cache-'));
    await cacheRepo(
      cacheDir,
      'testorg/harmony-mini',
      {
        [COMMIT]: {
          'tokenizer_config.json': JSON.stringify({
            bos_token: '<s>',
            chat_template: 'CACHED {{ bos_token }}{{ messages[0].content }}',
          }),
        },
        [OLD_COMMIT]: { 'chat_template.jinja': 'OLD' },
      },
      COMMIT,
    );
    const hf = huggingFaceOptionsFromEnv({ HF_HUB_CACHE: cacheDir, HF_ENDPOINT: unreachable });
    const template = await resolveChatTemplate({ model: 'testorg/harmony-mini', huggingFace: hf });
    expect(template.source).toBe(
      join(cacheDir, 'models--testorg--harmony-mini', 'snapshots', COMMIT, 'tokenizer_config.json'),
    );
    expect(template.render({ messages })).toBe('CACHED <s>hi');
  });

  test('the cache under HF_HOME/hub, found through --tokenizer, without a refs file', async () => {
    const home = await mkdtemp(join(tmpdir(), 'es-hf-home-'));
    await cacheRepo(join(home, 'hub'), 'openai/gpt-oss-120b', {
      [COMMIT]: { 'chat_template.jinja': BUNDLED },
    });
    const hf = huggingFaceOptionsFromEnv({ HF_HOME: home, HF_ENDPOINT: unreachable });
    expect(hf.cacheDir).toBe(join(home, 'hub'));
    const template = await resolveChatTemplate({
      model: 'served-name',
      tokenizer: 'openai/gpt-oss-120b',
      huggingFace: hf,
    });
    expect(template.source).toBe(
      join(home, 'hub', 'models--openai--gpt-oss-120b', 'snapshots', COMMIT, 'chat_template.jinja'),
    );
    expect(template.render({ messages, addGenerationPrompt: true })).toContain(
      '<|start|>user<|message|>hi<|end|><|start|>assistant',
    );
  });

  test('the hub at HF_ENDPOINT (a local server), with HF_TOKEN, when the cache has nothing', async () => {
    const hub = await startHub({
      '/testorg/harmony-mini/resolve/main/chat_template.jinja': {
        body: 'HUB {{ messages[0].content }}',
      },
    });
    try {
      const cacheDir = await mkdtemp(join(tmpdir(), 'es-hf-empty-'));
      const hf = huggingFaceOptionsFromEnv({
        HF_HUB_CACHE: cacheDir,
        HF_ENDPOINT: `${hub.url}/`,
        HF_TOKEN: 'hf_test',
      });
      const template = await resolveChatTemplate({
        model: 'testorg/harmony-mini',
        huggingFace: hf,
      });
      expect(template.source).toBe(
        `${hub.url}/testorg/harmony-mini/resolve/main/chat_template.jinja`,
      );
      expect(template.render({ messages })).toBe('HUB hi');
      expect(hub.requests.map((r) => r.path)).toEqual([
        '/testorg/harmony-mini/resolve/main/tokenizer_config.json',
        '/testorg/harmony-mini/resolve/main/chat_template.jinja',
      ]);
      expect(hub.requests.every((r) => r.headers.authorization === 'Bearer hf_test')).toBe(true);
    } finally {
      await hub.close();
    }
  });

  test('a gated model on the hub: the error says to set HF_TOKEN', async () => {
    const hub = await startHub({
      '/meta/llama/resolve/main/tokenizer_config.json': { status: 401, body: 'gated' },
    });
    try {
      const cacheDir = await mkdtemp(join(tmpdir(), 'es-hf-empty-'));
      await expect(
        resolveChatTemplate({ model: 'meta/llama', huggingFace: { cacheDir, endpoint: hub.url } }),
      ).rejects.toMatchObject({
        code: 'template_not_found',
        message: expect.stringContaining('set HF_TOKEN to a token with access'),
      });
    } finally {
      await hub.close();
    }
  });

  test('with no template anywhere, the error says how to provide one; never the bundled one', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'es-hf-empty-'));
    const error = await resolveChatTemplate({
      model: 'openai/gpt-oss-120b',
      huggingFace: offlineHub(cacheDir),
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'template_not_found', param: 'tokenizer' });
    const message = (error as Error).message;
    expect(message).toContain('no chat template for model "openai/gpt-oss-120b"');
    expect(message).toContain(`(${join(cacheDir, 'models--openai--gpt-oss-120b')})`);
    expect(message).toContain(`the hub (${unreachable}) could not be reached`);
    expect(message).toContain('--tokenizer <model directory>');
    expect(message).toContain(
      'huggingface-cli download openai/gpt-oss-120b tokenizer_config.json chat_template.jinja',
    );
    expect(message).toContain('--chat-template bundled-test');
  });

  test('HF_HUB_OFFLINE=1, or a name that is not org/name, never asks the hub', async () => {
    const hub = await startHub({});
    try {
      const cacheDir = await mkdtemp(join(tmpdir(), 'es-hf-empty-'));
      const hf = huggingFaceOptionsFromEnv({
        HF_HUB_CACHE: cacheDir,
        HF_ENDPOINT: hub.url,
        HF_HUB_OFFLINE: '1',
      });
      await expect(resolveChatTemplate({ model: 'org/m', huggingFace: hf })).rejects.toThrow(
        /the hub was not asked \(HF_HUB_OFFLINE is set\)/,
      );
      expect(hub.requests).toHaveLength(0);
      await expect(
        resolveChatTemplate({ model: 'mock-model', huggingFace: { ...hf, offline: false } }),
      ).rejects.toThrow(/the hub was not asked \("mock-model" is not an org\/name id\)/);
      expect(hub.requests).toHaveLength(0);
    } finally {
      await hub.close();
    }
  });

  test('the bundled test template only when asked for; a path that does not exist is named', async () => {
    const explicit = await resolveChatTemplate({
      model: 'mock-model',
      chatTemplate: 'bundled-test',
    });
    expect(explicit.source).toBe(join(BUNDLED_TEMPLATE_DIR, 'chat_template.jinja'));
    await expect(
      resolveChatTemplate({ model: '/no/such/model/dir', huggingFace: offlineHub('/nonexistent') }),
    ).rejects.toMatchObject({
      param: 'model',
      message: expect.stringContaining('"/no/such/model/dir" is neither a local directory nor'),
    });
  });

  test('huggingFaceOptionsFromEnv: the defaults huggingface_hub uses', () => {
    expect(huggingFaceOptionsFromEnv({}, '/home/u')).toEqual({
      cacheDir: '/home/u/.cache/huggingface/hub',
      endpoint: 'https://huggingface.co',
      offline: false,
    });
    expect(
      huggingFaceOptionsFromEnv({ XDG_CACHE_HOME: '/x', TRANSFORMERS_OFFLINE: 'true' }, '/h'),
    ).toMatchObject({ cacheDir: '/x/huggingface/hub', offline: true });
  });
});

describe('scripts/generate-trajectories and the chat template', () => {
  const engines: { close(): Promise<void> }[] = [];
  afterAll(async () => {
    for (const e of engines) await e.close();
  });

  test('--model org/name runs with the template of the fake Hugging Face cache', async () => {
    const script = JSON.parse(await readFile(RESEARCH_SCRIPT, 'utf8')) as [];
    const engine = await startMock({ model: 'testorg/harmony-mini', script });
    engines.push(engine);
    const cacheDir = await mkdtemp(join(tmpdir(), 'es-hf-cache-'));
    const repoDir = await cacheRepo(
      cacheDir,
      'testorg/harmony-mini',
      { [COMMIT]: { 'chat_template.jinja': BUNDLED } },
      COMMIT,
    );
    const outputDir = await mkdtemp(join(tmpdir(), 'es-cli-hf-'));
    const { stderr } = await run(
      SCRIPT,
      [
        ...['--scheduler-url', engine.url, '--model', 'testorg/harmony-mini'],
        ...['--num-samples', '1', '--output-dir', outputDir, '--env-file', '/dev/null'],
        ...['--serper-url', engine.url, '--jina-url', engine.url],
      ],
      {
        env: {
          ...process.env,
          HF_HUB_CACHE: cacheDir,
          HF_ENDPOINT: unreachable,
          SERPER_API_KEY: '',
          JINA_API_KEY: 'j',
        },
      },
    );
    expect(stderr).toContain(
      `model testorg/harmony-mini, chat template ${join(repoDir, 'snapshots', COMMIT, 'chat_template.jinja')}`,
    );
    expect(stderr).toContain('1 trajectories written');
  });

  test('without any template the CLI stops (exit 1) before generating, saying how to provide one', async () => {
    const engine = await startMock({ model: 'openai/gpt-oss-120b' });
    engines.push(engine);
    const cacheDir = await mkdtemp(join(tmpdir(), 'es-hf-empty-'));
    const failure = await run(
      SCRIPT,
      ['--scheduler-url', engine.url, '--output-dir', cacheDir, '--env-file', '/dev/null'],
      { env: { ...process.env, HF_HUB_CACHE: cacheDir, HF_ENDPOINT: unreachable } },
    ).catch((error: unknown) => error);
    expect(failure).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(
        /^generate-trajectories: no chat template for model "openai\/gpt-oss-120b": .*--tokenizer <model directory>.*--chat-template bundled-test\n$/,
      ),
    });
    expect(engine.requestLog()).toHaveLength(0);
  });
});
