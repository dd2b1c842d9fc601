/**
 * Trajectory generation over a dataset: resolve the model's chat template, wait for ready
 * workers, pick the questions, skip those already written (a run continues the last one
 * unless `overwrite`), run trajectories with bounded concurrency, append each to the output
 * as it finishes, and summarise.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import OpenAI from 'openai';
import type { ChatTemplate } from './chat-template.js';
import { loadDataset, selectSamples } from './dataset.js';
import type { DatasetItem } from './dataset.js';
import { ResearchError } from './errors.js';
import { firstModel } from './models.js';
import type { ListedModel } from './models.js';
import { createJsonlWriter, readRecordIds } from './jsonl.js';
import type { JsonlWriter } from './jsonl.js';
import { createProgress } from './progress.js';
import { seedOutputName, toSeedRecord } from './seed-format.js';
import {
  huggingFaceOptionsFromEnv,
  resolveChatTemplate,
  templateTarget,
} from './template-source.js';
import type { HuggingFaceOptions } from './template-source.js';
import { createWebTools } from './tools.js';
import type { Tool, WebToolsOptions } from './tools.js';
import { runTrajectory } from './trajectory.js';
import type { Trajectory, TrajectoryStatus } from './trajectory.js';
import { childSignal } from './util.js';
import { waitForReadyWorkers } from './wait.js';

/** Output formats: this project's records, or the original tool's (`seed`). */
export type OutputFormat = 'es' | 'seed';

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
   * Where the chat template is: a directory or a hub id. Default: the model (as listed by
   * `/v1/models`, its `root` first), from a local directory, the Hugging Face cache or the hub.
   */
  tokenizer?: string;
  /** `bundled-test` (the bundled test template, for the mock engine) or a `.jinja` file. */
  chatTemplate?: string;
  /** Hub revision for the template, default `main`. */
  revision?: string;
  /** Hugging Face cache, hub and token; default from the environment (`HF_HOME`, ...). */
  huggingFace?: HuggingFaceOptions;
  /** Named template in a `tokenizer_config.json` list. */
  templateName?: string;
  maxTurns?: number;
  maxTokens?: number;
  /** Tool calls per trajectory before the final answer is forced; default no limit. */
  maxToolCalls?: number;
  /** Force a final answer on the last turn instead of running a tool; default true. */
  forceFinalAnswer?: boolean;
  /** How long to wait for a ready worker before the first trajectory, default 600000 ms. */
  waitTimeoutMs?: number;
  /** Between checks of `/cluster_status`, default 5000 ms. */
  waitIntervalMs?: number;
  /** `es` (default): `trajectories.jsonl`; `seed`: `trajectories_<dataset>.jsonl`. */
  format?: OutputFormat;
  reasoningEffort?: string;
  temperature?: number;
  /** Shuffles the dataset reproducibly and is sent as each request's `seed`. */
  seed?: number;
  /** Empty the output first instead of continuing it (skipping questions already done). */
  overwrite?: boolean;
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
  /** Stops starting new questions; in-flight ones are abandoned (the next run does them). */
  signal?: AbortSignal;
}

/** What {@link generateTrajectories} did. */
export interface GenerateSummary {
  model: string;
  template: string;
  format: OutputFormat;
  outputPath: string;
  /** Questions selected from the dataset. */
  selected: number;
  /** Already done in the output (skipped). */
  skipped: number;
  /** Records written to the output by this run. */
  written: number;
  byStatus: Record<TrajectoryStatus, number>;
  /**
   * Trajectories that failed on the engine: in `failed.jsonl` (`es`) or in the output with
   * `status: "error"` (`seed`); the next run runs them again.
   */
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
  const huggingFace = options.huggingFace ?? huggingFaceOptionsFromEnv(process.env);
  const resolve = async (listed: ListedModel) =>
    resolveChatTemplate({
      model: await templateTarget(listed.root, listed.id),
      huggingFace,
      ...pick(options, ['tokenizer', 'chatTemplate', 'revision']),
      ...(options.templateName === undefined ? {} : { name: options.templateName }),
    });
  // Bad input (dataset, template) stops the run before the wait for workers, not after it.
  const items = selectSamples(await loadDataset(options.dataset), {
    ...(options.numSamples === undefined ? {} : { numSamples: options.numSamples }),
    ...(options.seed === undefined ? {} : { seed: options.seed }),
  });
  // With the model known (flag, or listed before any worker is ready), a missing template
  // stops the run before the wait for workers rather than after it.
  let listed: ListedModel | undefined =
    options.model !== undefined
      ? { id: options.model, root: undefined }
      : await firstModel(client).catch(() => undefined);
  let template: ChatTemplate | undefined = listed === undefined ? undefined : await resolve(listed);
  try {
    await waitForReadyWorkers({
      schedulerUrl: options.schedulerUrl,
      log,
      ...(options.apiKey === undefined ? {} : { apiKey: options.apiKey }),
      ...(options.waitTimeoutMs === undefined ? {} : { timeoutMs: options.waitTimeoutMs }),
      ...(options.waitIntervalMs === undefined ? {} : { intervalMs: options.waitIntervalMs }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } catch (error) {
    if (!options.signal?.aborted) throw error;
    throw new ResearchError('workers_not_ready', 'interrupted while waiting for ready workers', {
      cause: error,
    });
  }
  listed ??= await firstModel(client);
  template ??= await resolve(listed);
  const model = listed.id;
  log.write(`model ${model}, chat template ${template.source}\n`);
  const tools = options.toolset ?? createWebTools(options.tools);
  if (options.toolset === undefined && !options.tools?.serperApiKey) {
    log.write(
      'warning: SERPER_API_KEY is not set (in the environment or .env): search calls will ' +
        'answer the model with an error\n',
    );
  }

  await mkdir(options.outputDir, { recursive: true });
  const format: OutputFormat = options.format ?? 'es';
  const outputPath = join(
    options.outputDir,
    format === 'seed' ? seedOutputName(options.dataset) : OUTPUT_FILES.trajectories,
  );
  if (options.overwrite) await writeFile(outputPath, '');
  // Done questions: every record of ours (engine failures are in failed.jsonl); in the seed
  // format, those with an answer (an error line means: run it again).
  const written =
    format === 'seed'
      ? await readRecordIds(outputPath, (r) =>
          r.status === 'success' && (typeof r.qid === 'string' || typeof r.qid === 'number')
            ? String(r.qid)
            : undefined,
        )
      : await readRecordIds(outputPath);
  const todo = items.filter((item) => !written.has(item.id));
  const output = await createJsonlWriter(outputPath);
  let failedOutput: JsonlWriter | undefined;
  if (format === 'es') {
    // Failed attempts of earlier runs are history: this run reruns those questions.
    await writeFile(join(options.outputDir, OUTPUT_FILES.failed), '');
    failedOutput = await createJsonlWriter(join(options.outputDir, OUTPUT_FILES.failed));
  }

  const summary: GenerateSummary = {
    model,
    template: template.source,
    format,
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
  if (summary.skipped > 0) {
    log.write(
      `continuing ${outputPath}: ${summary.skipped} of ${items.length} questions already done ` +
        `(--overwrite starts again)\n`,
    );
  }
  const progress = createProgress(log, todo.length);

  const record = async (trajectory: Trajectory, item: DatasetItem) => {
    summary.byStatus[trajectory.status] += 1;
    summary.toolCalls += trajectory.toolCalls;
    summary.toolErrors += trajectory.errors.filter((e) => e.tool !== undefined).length;
    summary.promptTokens += trajectory.usage.promptTokens;
    summary.completionTokens += trajectory.usage.completionTokens;
    if (trajectory.status === 'failed') summary.failed += 1;
    if (format === 'seed') {
      summary.written += 1;
      await output.write(toSeedRecord(trajectory, item));
    } else if (trajectory.status === 'failed') {
      await failedOutput?.write(trajectory);
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
        'maxToolCalls',
        'forceFinalAnswer',
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
      await record(trajectory, item);
    });
  } finally {
    scope.dispose();
    progress.stop();
    await output.close();
    await failedOutput?.close();
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
      (summary.interrupted ? ' (interrupted: run the same command again to continue)' : ''),
    `  completed ${s.completed}, max turns ${s.max_turns}, truncated ${s.truncated}, no answer ${s.no_answer}, context full ${s.context_full}, engine failures ${summary.failed}` +
      (summary.skipped > 0 ? `, skipped ${summary.skipped} (already done)` : ''),
    `  tool calls ${summary.toolCalls} (${summary.toolErrors} errors)`,
    `  tokens: ${summary.promptTokens} prompt, ${summary.completionTokens} completion` +
      (seconds > 0 ? ` (${Math.round(summary.completionTokens / seconds)} completion tok/s)` : ''),
    `  model ${summary.model}, template ${summary.template}`,
  ];
  if (summary.format === 'seed') {
    const errors = summary.written - summary.byStatus.completed;
    if (errors > 0) {
      lines.push(
        `  ${errors} written with status "error"; the next run runs those questions again`,
      );
    }
  } else if (summary.failed > 0) {
    lines.push(`  engine failures are in failed.jsonl; the next run runs those questions again`);
  }
  return lines.join('\n');
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
