import type { EngineLoad } from '@es/protocol';

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
