/**
 * The one list of engines a worker can run. The worker protocol's schemas, the scheduler's
 * configuration, the `es-worker --engine` choices and the worker's adapters all take it
 * from here: adding an engine is one line here (and one adapter in `@es/worker`).
 */

/** Engines a worker can run, as written in flags, config files and the protocol. */
export const ENGINE_KINDS = ['vllm', 'sglang', 'mock'] as const;

/** One of {@link ENGINE_KINDS}. */
export type EngineKind = (typeof ENGINE_KINDS)[number];

/** How people write each engine's name (log lines, help text, dashboards). */
export const ENGINE_NAMES: Readonly<Record<EngineKind, string>> = {
  vllm: 'vLLM',
  sglang: 'SGLang',
  mock: 'mock engine',
};

/** Whether `value` names an engine of {@link ENGINE_KINDS}. */
export function isEngineKind(value: unknown): value is EngineKind {
  return typeof value === 'string' && (ENGINE_KINDS as readonly string[]).includes(value);
}
