/**
 * Trajectory generation over a dataset: pick the questions, skip those already written
 * (`resume`), run trajectories with bounded concurrency, append each to the output as it
 * finishes, and summarise.
 */
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import OpenAI from 'openai';
import { BUNDLED_TEMPLATE_DIR, loadChatTemplate } from './chat-template.js';
import type { ChatTemplate } from './chat-template.js';
import { loadDataset, selectSamples } from './dataset.js';
import type { DatasetItem } from './dataset.js';
import { ResearchError } from './errors.js';
import { firstModelId } from './models.js';
import { createJsonlWriter, readRecordIds } from './jsonl.js';
import { createProgress } from './progress.js';
import { createWebTools } from './tools.js';
import type { Tool, WebToolsOptions } from './tools.js';
import { runTrajectory } from './trajectory.js';
import type { Trajectory, TrajectoryStatus } from './trajectory.js';
import { childSignal, isMissingFile } from './util.js';

/** Options of {@link generateTrajectories}. */
export interface GenerateOptions {
  /** The scheduler (or any OpenAI-compatible server) without `/v1`. */
  schedulerUrl: string;
  apiKey?: string;
  /** `sample`, or a `.jsonl`/`.json` file. */
  dataset: string;
  /** Questions to run; all when unset. */
  numSamples?: number;
  /** Trajectories in flight at once, default 4. */
  concurrency?: number;
  outputDir: string;
  /** Model name; default the first model of `/v1/models`. */
  model?: string;
  /**
   * Directory with the chat template. Default: the model, when it names a local directory,
   * else the bundled Harmony-style test template (with a warning).
   */
  tokenizer?: string;
  /** Named template in a `tokenizer_config.json` list. */
  templateName?: string;
  maxTurns?: number;
  maxTokens?: number;
  reasoningEffort?: string;
  temperature?: number;
  /** Shuffles the dataset reproducibly and is sent as each request's `seed`. */
  seed?: number;
  /** Skip questions already in the output instead of refusing to touch it. */
  resume?: boolean;
  systemPrompt?: string;
  /** Retries of each completion request by the openai client, default 3. */
  maxRetries?: number;
  /** Timeout of each completion request, default 600000 ms. */
  requestTimeoutMs?: number;
  /** Tool settings (keys, base URLs, truncation, timeouts). */
  tools?: WebToolsOptions;
  /** Replaces the web tools (tests, custom tools). */
  toolset?: readonly Tool[];
  /** Where progress, warnings and the summary go; default `process.stderr`. */
  log?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Stops starting new questions; in-flight ones are abandoned (and rerun by `resume`). */
  signal?: AbortSignal;
}

/** What {@link generateTrajectories} did. */
export interface GenerateSummary {
  model: string;
  template: string;
  outputPath: string;
  /** Questions selected from the dataset. */
  selected: number;
  /** Already in the output (resume). */
  skipped: number;
  /** Trajectories written by this run, by status. */
  written: number;
  byStatus: Record<TrajectoryStatus, number>;
  /** Trajectories that failed on the engine: written to `failed.jsonl`, rerun by `resume`. */
  failed: number;
  toolCalls: number;
  toolErrors: number;
  promptTokens: number;
  completionTokens: number;
  elapsedMs: number;
  /** True when `signal` stopped the run early. */
  interrupted: boolean;
}

/** File names inside the output directory. */
export const OUTPUT_FILES = {
  trajectories: 'trajectories.jsonl',
  failed: 'failed.jsonl',
  summary: 'summary.json',
} as const;

/**
 * Generates research trajectories for a dataset.
 *
 * @example
 * ```ts
 * const summary = await generateTrajectories({
 *   schedulerUrl: 'http://localhost:8780',
 *   dataset: 'sample',
 *   numSamples: 10,
 *   concurrency: 4,
 *   outputDir: 'out/trajectories',
 *   tools: { serperApiKey: process.env.SERPER_API_KEY, jinaApiKey: process.env.JINA_API_KEY },
 * });
 * ```
 */
export async function generateTrajectories(options: GenerateOptions): Promise<GenerateSummary> {
  const started = Date.now();
  const log = options.log ?? process.stderr;
  const client = new OpenAI({
    baseURL: `${options.schedulerUrl.replace(/\/+$/, '').replace(/\/v1$/, '')}/v1`,
    apiKey: options.apiKey ?? 'EMPTY',
    maxRetries: options.maxRetries ?? 3,
    timeout: options.requestTimeoutMs ?? 600_000,
  });
  const model = options.model ?? (await firstModelId(client));
  const template = await resolveTemplate(options, model, log);
  const tools = options.toolset ?? createWebTools(options.tools);
  if (options.toolset === undefined && !options.tools?.serperApiKey) {
    log.write(
      'warning: SERPER_API_KEY is not set (in the environment or .env): search calls will ' +
        'answer the model with an error\n',
    );
  }

  const items = selectSamples(await loadDataset(options.dataset), {
    ...(options.numSamples === undefined ? {} : { numSamples: options.numSamples }),
    ...(options.seed === undefined ? {} : { seed: options.seed }),
  });
  await mkdir(options.outputDir, { recursive: true });
  const outputPath = join(options.outputDir, OUTPUT_FILES.trajectories);
  const written = await readRecordIds(outputPath);
  if (written.size > 0 && !options.resume) {
    throw new ResearchError(
      'OUTPUT_EXISTS',
      `${outputPath} already holds ${written.size} trajectories: pass --resume to continue ` +
        `it, or choose another --output-dir`,
      { field: '--output-dir' },
    );
  }
  const todo = items.filter((item) => !written.has(item.id));
  const output = await createJsonlWriter(outputPath);
  // Failed attempts of earlier runs are history: this run reruns those questions.
  await writeFile(join(options.outputDir, OUTPUT_FILES.failed), '');
  const failedOutput = await createJsonlWriter(join(options.outputDir, OUTPUT_FILES.failed));

  const summary: GenerateSummary = {
    model,
    template: template.source,
    outputPath,
    selected: items.length,
    skipped: items.length - todo.length,
    written: 0,
    byStatus: {
      completed: 0,
      max_turns: 0,
      truncated: 0,
      no_answer: 0,
      context_full: 0,
      failed: 0,
    },
    failed: 0,
    toolCalls: 0,
    toolErrors: 0,
    promptTokens: 0,
    completionTokens: 0,
    elapsedMs: 0,
    interrupted: false,
  };
  if (summary.skipped > 0) log.write(`resume: ${summary.skipped} questions already written\n`);
  const progress = createProgress(log, todo.length);

  const record = async (trajectory: Trajectory) => {
    summary.byStatus[trajectory.status] += 1;
    summary.toolCalls += trajectory.toolCalls;
    summary.toolErrors += trajectory.errors.filter((e) => e.tool !== undefined).length;
    summary.promptTokens += trajectory.usage.promptTokens;
    summary.completionTokens += trajectory.usage.completionTokens;
    if (trajectory.status === 'failed') {
      summary.failed += 1;
      await failedOutput.write(trajectory);
    } else {
      summary.written += 1;
      await output.write(trajectory);
    }
    progress.tick(trajectory.status === 'failed', `${trajectory.id} ${trajectory.status}`);
  };

  // Lanes hang their per-request signals on this child, not on the caller's signal.
  const scope = childSignal(options.signal);
  const run = (item: DatasetItem) =>
    runTrajectory({
      client,
      model,
      template,
      tools,
      id: item.id,
      question: item.question,
      ...(item.reference === undefined ? {} : { reference: item.reference }),
      ...pick(options, [
        'systemPrompt',
        'maxTurns',
        'maxTokens',
        'reasoningEffort',
        'temperature',
        'seed',
      ]),
      ...(scope.signal === undefined ? {} : { signal: scope.signal }),
    });

  try {
    await forEachConcurrently(todo, options.concurrency ?? 4, scope.signal, async (item) => {
      let trajectory: Trajectory;
      try {
        trajectory = await run(item);
      } catch (error) {
        if (options.signal?.aborted) return;
        throw error;
      }
      await record(trajectory);
    });
  } finally {
    scope.dispose();
    progress.stop();
    await output.close();
    await failedOutput.close();
  }
  summary.interrupted = options.signal?.aborted === true;
  summary.elapsedMs = Date.now() - started;
  await writeFile(
    join(options.outputDir, OUTPUT_FILES.summary),
    `${JSON.stringify(summary, null, 2)}\n`,
  );
  return summary;
}

/** Formats a summary for the terminal. Pure. */
export function formatSummary(summary: GenerateSummary): string {
  const s = summary.byStatus;
  const seconds = summary.elapsedMs / 1000;
  const lines = [
    `${summary.written} trajectories written to ${summary.outputPath} in ${seconds.toFixed(1)} s` +
      (summary.interrupted ? ' (interrupted: rerun with --resume)' : ''),
    `  completed ${s.completed}, max turns ${s.max_turns}, truncated ${s.truncated}, no answer ${s.no_answer}, context full ${s.context_full}, engine failures ${summary.failed}` +
      (summary.skipped > 0 ? `, skipped ${summary.skipped} (resume)` : ''),
    `  tool calls ${summary.toolCalls} (${summary.toolErrors} errors)`,
    `  tokens: ${summary.promptTokens} prompt, ${summary.completionTokens} completion` +
      (seconds > 0 ? ` (${Math.round(summary.completionTokens / seconds)} completion tok/s)` : ''),
    `  model ${summary.model}, template ${summary.template}`,
  ];
  if (summary.failed > 0) {
    lines.push(`  engine failures are in failed.jsonl; --resume runs those questions again`);
  }
  return lines.join('\n');
}

async function resolveTemplate(
  options: GenerateOptions,
  model: string,
  log: NodeJS.WritableStream,
): Promise<ChatTemplate> {
  const load = (dir: string) =>
    loadChatTemplate(dir, options.templateName === undefined ? {} : { name: options.templateName });
  if (options.tokenizer !== undefined) return load(options.tokenizer);
  if (await isDirectory(model)) return load(model);
  log.write(
    `warning: no --tokenizer given and model "${model}" is not a local directory: using the ` +
      `bundled Harmony-style test template. Pass --tokenizer <model dir> for a real model.\n`,
  );
  return load(BUNDLED_TEMPLATE_DIR);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (error) {
    if (isMissingFile(error)) return false;
    throw error;
  }
}

async function forEachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  signal: AbortSignal | undefined,
  task: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length && !signal?.aborted) {
      const item = items[next] as T;
      next += 1;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, lane));
}

function pick<T extends object, K extends keyof T>(
  source: T,
  keys: readonly K[],
): Partial<Pick<T, K>> {
  const picked: Partial<Pick<T, K>> = {};
  for (const key of keys) if (source[key] !== undefined) picked[key] = source[key];
  return picked;
}
