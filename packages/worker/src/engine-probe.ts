import { execFile } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import type { EngineLoad } from '@es/protocol';
import { parseEngineVersion } from './engines.js';
import type { EngineCommand } from './engines.js';
import type { EngineEndpoint } from './engine-front.js';

/** How an endpoint is shown in logs: the socket path, or `host:port`. */
export function describeEndpoint(endpoint: EngineEndpoint): string {
  if ('socketPath' in endpoint) return `unix:${endpoint.socketPath}`;
  const { host, port } = endpoint;
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * GET `path` from the engine at `endpoint` (with its `key`) within `timeoutMs`: the status
 * and body, or undefined when it does not answer in time.
 */
export function engineGet(
  endpoint: EngineEndpoint,
  path: string,
  options: { key?: string | undefined; timeoutMs: number },
): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const headers = options.key === undefined ? {} : { authorization: `Bearer ${options.key}` };
    const req = httpRequest({ ...endpoint, path, method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.once('error', () => resolve(undefined));
    });
    const timer = setTimeout(() => req.destroy(new Error('timeout')), options.timeoutMs);
    req.once('error', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
    req.end();
  });
}

/** Whether the engine's `path` answers with a 2xx within `timeoutMs` (the readiness probe). */
export async function answersHealth(
  endpoint: EngineEndpoint,
  path: string,
  options: { key?: string | undefined; timeoutMs: number },
): Promise<boolean> {
  const answer = await engineGet(endpoint, path, options);
  return answer !== undefined && answer.status >= 200 && answer.status < 300;
}

/**
 * The engine's load from its Prometheus `/metrics` within `timeoutMs`, parsed by `parse`;
 * undefined when it cannot be read.
 */
export async function readLoad(
  endpoint: EngineEndpoint,
  parse: (metrics: string) => EngineLoad,
  options: { key?: string | undefined; timeoutMs: number },
): Promise<EngineLoad | undefined> {
  const answer = await engineGet(endpoint, '/metrics', options);
  if (answer === undefined || answer.status < 200 || answer.status >= 300) return undefined;
  return parse(answer.body);
}

/** What {@link readEngineVersion} found: the version, or why there is none. */
export type EngineVersionProbe = { version: string } | { problem: string };

/**
 * Runs an adapter's version command (`vllm --version`) and reads the version it prints.
 * Never throws: a missing executable, a failure, a timeout or output without a version is
 * a `problem` to log.
 */
export function readEngineVersion(
  command: EngineCommand,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<EngineVersionProbe> {
  const shown = [command.command, ...command.args].join(' ');
  return new Promise((resolve) => {
    execFile(
      command.command,
      command.args,
      {
        env: { ...env, ...command.env },
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 1024 * 1024,
      },
      (error, stdout) => {
        const version = parseEngineVersion(String(stdout));
        if (error === null && version !== undefined) resolve({ version });
        else if (error === null) resolve({ problem: `\`${shown}\` printed no version` });
        else if (error.killed) {
          resolve({ problem: `\`${shown}\` did not answer within ${timeoutMs} ms` });
        } else resolve({ problem: `\`${shown}\` failed: ${error.message.split('\n')[0]}` });
      },
    );
  });
}
