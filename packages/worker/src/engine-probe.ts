import { execFile } from 'node:child_process';
import type { EngineLoad } from '@es/protocol';
import { parseEngineVersion } from './engines.js';
import type { EngineCommand } from './engines.js';

/** The URL of `path` on an engine listening on `host:port` (IPv6 hosts bracketed). */
export function engineUrl(host: string, port: number, path: string): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}${path}`;
}

/** Whether `url` answers with a 2xx within `timeoutMs` (the engine's readiness probe). */
export async function answersHealth(url: string, timeoutMs: number): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * The engine's load from its Prometheus `url` (`/metrics`) within `timeoutMs`, parsed by
 * `parse`; undefined when it cannot be read.
 */
export async function readLoad(
  url: string,
  parse: (metrics: string) => EngineLoad,
  timeoutMs: number,
): Promise<EngineLoad | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    return parse(await response.text());
  } catch {
    return undefined;
  }
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
