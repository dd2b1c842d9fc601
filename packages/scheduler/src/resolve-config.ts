/**
 * Scheduler configuration: defaults < JSON config file < command-line flags (or whatever an
 * embedder passes as overrides), plus the keys the environment holds (`ES_API_KEYS`,
 * `ES_API_KEY`, `ES_ADMIN_KEY`, `ES_SECRET_FILE`).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isSecretFileError, readKeyFile } from '@es/protocol';
import { parseCorsOrigin } from '@es/proxy';
import * as v from 'valibot';
import {
  FileSchema,
  deploymentFields,
  describeIssues,
  loadConfigFile,
  pick,
  type CliOverrides,
  type DeploymentInput,
  type FileConfig,
} from './config-file.js';
import { buildDeployment } from './deployment-settings.js';
import {
  ConfigError,
  DEFAULTS,
  WORKER_CLI_PATH,
  defaultProxyProcesses,
  type DeploymentSettings,
  type SchedulerSettings,
} from './settings.js';

/**
 * Resolve the effective configuration: command-line flags beat the config file, which
 * beats the defaults.
 */
export function resolveConfig(
  cli: CliOverrides,
  env: NodeJS.ProcessEnv = process.env,
): SchedulerSettings {
  const cliChecked = v.safeParse(
    v.partial(FileSchema),
    stripUndefined({ ...cli, config: undefined }),
  );
  if (!cliChecked.success) throw describeIssues('command-line flags', cliChecked.issues);
  const file: FileConfig = cli.config ? loadConfigFile(cli.config) : {};
  const flags = cliChecked.output as FileConfig;
  const layers = [flags, file];
  const get = <K extends keyof FileConfig>(key: K) =>
    pick(...layers.map((l) => l[key])) as FileConfig[K];

  const backend = get('backend') ?? DEFAULTS.backend;
  const localish = backend === 'local';
  const cliDeployment = pickDeploymentFields(flags);
  const fileTop = pickDeploymentFields(file);
  let deployments: DeploymentSettings[];
  if (file.deployments && file.deployments.length > 0) {
    if (Object.keys(fileTop).length > 0) {
      throw new ConfigError(
        `config file ${cli.config}: put deployment fields (${Object.keys(fileTop).join(', ')}) inside "deployments", not at the top level, when "deployments" is used`,
        'deployments',
      );
    }
    if (file.deployments.length > 1 && Object.keys(cliDeployment).length > 0) {
      throw new ConfigError(
        `deployment flags (${Object.keys(cliDeployment)
          .map((k) => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()))
          .join(
            ', ',
          )}) are ambiguous with ${file.deployments.length} deployments in ${cli.config}: set them per deployment in the file`,
        'deployments',
      );
    }
    deployments = file.deployments.map((d, i) => buildDeployment([cliDeployment, d], i, localish));
  } else {
    deployments = [buildDeployment([cliDeployment, fileTop], 0, localish)];
  }
  const names = new Set<string>();
  for (const d of deployments) {
    if (names.has(d.name)) {
      throw new ConfigError(
        `two deployments are named "${d.name}": give each a unique "name"`,
        'deployments',
      );
    }
    names.add(d.name);
  }

  const apiKeys = [
    ...(get('apiKeys') ?? []),
    ...toArray(flags.apiKey ?? file.apiKey),
    ...toArray(flags.apiKeyFile ?? file.apiKeyFile).flatMap((f) =>
      keysOfFile(f, '--api-key-file (api_key_file)', 'apiKeyFile'),
    ),
    ...commaList(env.ES_API_KEYS),
    ...commaList(env.ES_API_KEY),
  ].filter((k) => k.length > 0);

  const settings: SchedulerSettings = {
    host: get('host') ?? (localish ? '127.0.0.1' : '0.0.0.0'),
    port: get('port') ?? DEFAULTS.port,
    workerPort: get('workerPort') ?? 0,
    proxyProcesses: get('proxyProcesses') ?? defaultProxyProcesses(),
    controlPort: get('controlPort') ?? 0,
    backend,
    apiKeys: [...new Set(apiKeys)],
    corsOrigins: corsOrigins(toArray(get('corsOrigin'))),
    logDir: get('logDir') ?? DEFAULTS.logDir,
    ...heartbeatTiming(get('healthCheckInterval'), get('heartbeatTimeout')),
    nodeAcquireIntervalS: get('nodeAcquireInterval') ?? DEFAULTS.nodeAcquireIntervalS,
    startupTimeoutS: get('startupTimeout') ?? DEFAULTS.startupTimeoutS,
    localNodes: get('localNodes') ?? DEFAULTS.localNodes,
    schedulerId: get('schedulerId') ?? DEFAULTS.schedulerId,
    cancelOnExit: get('cancelOnExit') ?? DEFAULTS.cancelOnExit,
    releaseRequeued: get('releaseRequeued') ?? DEFAULTS.releaseRequeued,
    exposeSelectedEndpoint: get('exposeSelectedEndpoint') ?? DEFAULTS.exposeSelectedEndpoint,
    maxContinuations: get('maxContinuations') ?? DEFAULTS.maxContinuations,
    stallTimeoutS: get('stallTimeout') ?? DEFAULTS.stallTimeoutS,
    maxConnections: get('maxConnections') ?? DEFAULTS.maxConnections,
    bodyBudgetMb: get('bodyBudgetMb') ?? DEFAULTS.bodyBudgetMb,
    clientIdleTimeoutS: get('clientIdleTimeout') ?? DEFAULTS.clientIdleTimeoutS,
    coldStartWaitS: coldStartWait(get('coldStartWait')),
    deployments,
  };
  const adminKey = adminKeyOf(flags) ?? adminKeyOf(file) ?? env.ES_ADMIN_KEY;
  if (adminKey) settings.adminKey = adminKey;
  const secretFile = get('secretFile') ?? env.ES_SECRET_FILE;
  if (secretFile) settings.secretFile = secretFile;
  if (settings.workerPort !== 0 && settings.workerPort === settings.port) {
    throw new ConfigError(
      `--worker-port (worker_port) ${settings.workerPort} is --port too: the workers' listener needs a port of its own; pass another one, or 0 for any free port`,
      'workerPort',
    );
  }
  checkControlPort(settings);
  const warnings: string[] = [];
  const projectRoot = get('projectRoot');
  // "" is the original's default ("this checkout"), as unset.
  if (projectRoot !== undefined && projectRoot.trim() !== '') {
    const root = resolve(projectRoot);
    if (existsSync(join(root, WORKER_CLI_PATH))) {
      settings.projectRoot = root;
    } else {
      warnings.push(
        `project_root ${root} holds no ${WORKER_CLI_PATH} (the original tool's checkout?): ignored, ` +
          "the node jobs run this checkout's worker. Set --project-root (project_root) to this project's " +
          'checkout as the nodes see it, or leave it out (null).',
      );
    }
  }
  if (warnings.length > 0) settings.warnings = warnings;
  return settings;
}

/**
 * The health-check interval and heartbeat timeout. One given alone sets the other: the
 * timeout defaults to max(30, 3 × interval), the interval to min(5, timeout / 3), so any
 * one of the seed's flags works alone (`--health-check-interval 30` → timeout 90 s). Both
 * given: the timeout must be longer than the interval.
 */
export function heartbeatTiming(
  interval: number | undefined,
  timeout: number | undefined,
): { healthCheckIntervalS: number; heartbeatTimeoutS: number } {
  const healthCheckIntervalS =
    interval ??
    (timeout === undefined
      ? DEFAULTS.healthCheckIntervalS
      : Math.min(DEFAULTS.healthCheckIntervalS, timeout / 3));
  const heartbeatTimeoutS =
    timeout ?? Math.max(DEFAULTS.heartbeatTimeoutS, 3 * healthCheckIntervalS);
  if (heartbeatTimeoutS <= healthCheckIntervalS) {
    throw new ConfigError(
      `--heartbeat-timeout (heartbeat_timeout) ${heartbeatTimeoutS}s must be longer than ` +
        `--health-check-interval (health_check_interval) ${healthCheckIntervalS}s, ideally 3× or more: ` +
        'raise the timeout, or leave it out to get max(30, 3 × the interval)',
      'heartbeatTimeout',
    );
  }
  return { healthCheckIntervalS, heartbeatTimeoutS };
}

/** The longest a cold start may hold a request (s): a day, far beyond any model load. */
const MAX_COLD_START_WAIT_S = 86_400;

/** `--cold-start-wait`: seconds from 0 (no wait: 503 at once) to a day. */
function coldStartWait(value: number | undefined): number {
  if (value === undefined) return DEFAULTS.coldStartWaitS;
  if (!(Number.isFinite(value) && value >= 0 && value <= MAX_COLD_START_WAIT_S)) {
    throw new ConfigError(
      `--cold-start-wait (cold_start_wait) ${value} is not a number of seconds from 0 to ${MAX_COLD_START_WAIT_S}: ` +
        `pass how long a request for a deployment with --min-nodes 0 may wait for its node to start and load its model (default ${DEFAULTS.coldStartWaitS}; 0 = answer 503 at once)`,
      'coldStartWait',
    );
  }
  return value;
}

/** The control port must differ from the client and worker ports, and needs a data plane. */
function checkControlPort(settings: SchedulerSettings): void {
  const control = settings.controlPort ?? 0;
  if (control === 0) return;
  if (settings.proxyProcesses === 0) {
    throw new ConfigError(
      `--control-port (control_port) ${control} is given with --proxy-processes (proxy_processes) 0: ` +
        'without es-proxy processes the scheduler listens on --port only; leave --control-port out, or pass --proxy-processes 1 or more',
      'controlPort',
    );
  }
  const clash =
    control === settings.port
      ? '--port'
      : control === settings.workerPort
        ? '--worker-port'
        : undefined;
  if (clash !== undefined) {
    throw new ConfigError(
      `--control-port (control_port) ${control} is ${clash} too: the scheduler's control listener needs a port of its own; pass another one, or 0 for any free port`,
      'controlPort',
    );
  }
}

function corsOrigins(values: string[]): string[] {
  const out = values.map((value) => {
    try {
      return parseCorsOrigin(value);
    } catch (error) {
      throw new ConfigError(
        `--cors-origin (cors_origin): ${(error as Error).message}`,
        'corsOrigin',
      );
    }
  });
  return [...new Set(out)];
}

/** The keys of a key file, or a `ConfigError` on `field` naming `flag`, the file and the fix. */
function keysOfFile(file: string, flag: string, field: string): string[] {
  try {
    return readKeyFile(file);
  } catch (error) {
    if (isSecretFileError(error)) throw new ConfigError(`${flag}: ${error.message}`, field);
    throw error;
  }
}

/** A layer's admin key: `adminKey`, or the one key of `adminKeyFile` (not both). */
function adminKeyOf(layer: FileConfig): string | undefined {
  if (layer.adminKeyFile === undefined) return layer.adminKey;
  const flag = '--admin-key-file (admin_key_file)';
  if (layer.adminKey !== undefined) {
    throw new ConfigError(
      `${flag} and --admin-key (admin_key) are both given: pass one of them (the file keeps the key out of ps)`,
      'adminKeyFile',
    );
  }
  const keys = keysOfFile(layer.adminKeyFile, flag, 'adminKeyFile');
  if (keys.length > 1) {
    throw new ConfigError(
      `${flag}: ${layer.adminKeyFile} holds ${keys.length} keys: an admin key file holds one (other lines blank or # comments)`,
      'adminKeyFile',
    );
  }
  return keys[0];
}

function commaList(value: string | undefined): string[] {
  return value ? value.split(',').map((k) => k.trim()) : [];
}

function toArray(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined)) as Partial<T>;
}

function pickDeploymentFields(o: FileConfig): DeploymentInput {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(deploymentFields)) {
    const value = (o as Record<string, unknown>)[key];
    if (value !== undefined) out[key] = value;
  }
  return out as DeploymentInput;
}
