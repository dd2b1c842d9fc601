/**
 * Config fixtures shared by the scheduler's tests: the original tool's config file format
 * (what its `SchedulerConfig.save_json` writes: `json.dump(self.to_dict(), f, indent=2)` of
 * a dataclass) and the ConfigError a call throws.
 */
import { expect } from 'vitest';
import { ConfigError } from '../src/config.js';

/**
 * A config file as the original's `SchedulerConfig.save_json` writes it: all 25 keys in
 * the dataclass's order, its defaults unless overridden, Python's float and null spelling.
 */
export function seedConfigText(overrides: Record<string, string> = {}): string {
  const values: [string, string][] = [
    ['qos', '"h200_lowest"'],
    ['partition', '"h200"'],
    ['account', '"dream"'],
    ['max_nodes', '16'],
    ['gpus_per_node', '8'],
    ['time_limit', '"72:00:00"'],
    ['exclusive', 'true'],
    ['constraint', '""'],
    ['slurm_extra', '""'],
    ['engine', '"vllm"'],
    ['model', '"meta-llama/Llama-3-70B-Instruct"'],
    ['tensor_parallel_size', '4'],
    ['gpu_memory_utilization', '0.9'],
    ['max_model_len', 'null'],
    ['served_model_name', 'null'],
    ['engine_extra_args', '""'],
    ['enable_prefix_caching', 'true'],
    ['port', '8780'],
    ['worker_base_port', '8001'],
    ['heartbeat_timeout', '120.0'],
    ['health_check_interval', '30.0'],
    ['node_acquire_interval', '15.0'],
    ['conda_env', '""'],
    ['project_root', '"/home/alice/elastic-serving"'],
    ['log_dir', '"logs"'],
  ];
  for (const key of Object.keys(overrides)) {
    if (!values.some(([k]) => k === key)) throw new Error(`not a seed key: ${key}`);
  }
  const lines = values.map(([k, v]) => `  "${k}": ${overrides[k] ?? v}`);
  return `{\n${lines.join(',\n')}\n}`;
}

/** The ConfigError `fn` throws (the test fails when it throws nothing or something else). */
export function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}
