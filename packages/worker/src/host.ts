import { lookup } from 'node:dns/promises';
import { createServer } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[?::1\]?)$/i;

/** Options of {@link resolveAdvertiseHost}. */
export interface AdvertiseHostOptions {
  /** An explicit `--host` wins. */
  host?: string | undefined;
  /** The scheduler's URL: when it is loopback, so is the engine's address. */
  schedulerUrl: string;
}

/**
 * The address engines bind and the worker registers: `--host` when given; 127.0.0.1 when
 * the scheduler is on loopback (the dev cluster, the local provider); else the node's
 * hostname if it resolves to a non-loopback address; else the first non-loopback IPv4.
 */
export async function resolveAdvertiseHost(options: AdvertiseHostOptions): Promise<string> {
  if (options.host) return options.host;
  if (LOOPBACK.test(new URL(options.schedulerUrl).hostname)) return '127.0.0.1';
  const name = hostname();
  try {
    const { address } = await lookup(name);
    // Debian maps the hostname to 127.0.1.1, which no other node can reach.
    if (!LOOPBACK.test(address)) return name;
  } catch {
    // Unresolvable hostname: fall back to an interface address.
  }
  return firstIpv4() ?? name;
}

function firstIpv4(): string | undefined {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv4' && !address.internal) return address.address;
    }
  }
  return undefined;
}

/** Whether `port` can be bound on `host` right now. */
export function isPortFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A port the OS considers free on `host`. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
