import { Pool } from 'undici';
import type { UpstreamOptions } from './options.js';

/** Pools unused this long are closed (their worker has most likely left). */
const IDLE_POOL_MS = 5 * 60_000;

/** One undici `Pool` (keep-alive connections) per worker origin. */
export interface UpstreamPools {
  get(baseUrl: string): Pool;
  close(): Promise<void>;
}

export function createUpstreamPools(options: Required<UpstreamOptions>): UpstreamPools {
  const pools = new Map<string, { pool: Pool; lastUsed: number }>();
  const sweep = setInterval(() => {
    const cutoff = Date.now() - IDLE_POOL_MS;
    for (const [origin, entry] of pools) {
      if (entry.lastUsed < cutoff && entry.pool.stats.size === 0) {
        pools.delete(origin);
        void entry.pool.close();
      }
    }
  }, 60_000);
  sweep.unref();

  return {
    get(baseUrl) {
      let entry = pools.get(baseUrl);
      if (entry === undefined) {
        entry = {
          pool: new Pool(baseUrl, {
            // No cap: HTTP/1.1 carries one stream per connection, and every stream the
            // engine accepts needs its own.
            connections: null,
            pipelining: 1,
            connectTimeout: options.connectTimeoutMs,
            headersTimeout: options.headersTimeoutMs,
            bodyTimeout: options.bodyTimeoutMs,
            keepAliveTimeout: options.keepAliveTimeoutMs,
            keepAliveMaxTimeout: options.keepAliveTimeoutMs,
          }),
          lastUsed: 0,
        };
        pools.set(baseUrl, entry);
      }
      entry.lastUsed = Date.now();
      return entry.pool;
    },
    async close() {
      clearInterval(sweep);
      const all = [...pools.values()];
      pools.clear();
      await Promise.all(all.map((entry) => entry.pool.destroy()));
    },
  };
}
