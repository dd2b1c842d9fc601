/**
 * The scheduler's two listeners: its app's port (proxy, admin, seed routes: the client port,
 * or the control port when es-proxy processes serve the client port) and the worker
 * protocol's own port on a thread of its own. A port in use is explained, not just thrown.
 */
import type { Logger } from 'pino';
import { startWorkerApiThread, type Registry, type WorkerApiThread } from '@es/pool';
import { startProxyServer, type ProxyServer } from '@es/proxy';
import type { SchedulerSettings } from './settings.js';

/** Both listeners, started. */
export interface Listeners {
  server: ProxyServer;
  workerApi: WorkerApiThread;
}

/** The client port's handler (the scheduler's Hono app's `fetch`). */
type ClientFetch = Parameters<typeof startProxyServer>[0]['fetch'];

function inUse(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'EADDRINUSE';
}

/**
 * Start the worker listener, then the client port serving `fetch`; when the second fails
 * the first is closed again.
 */
export async function startListeners(
  settings: Pick<
    SchedulerSettings,
    'host' | 'port' | 'workerPort' | 'maxConnections' | 'proxyProcesses' | 'controlPort'
  >,
  registry: Registry,
  options: {
    workerKey: string;
    logger: Logger;
    fetch: ClientFetch;
    /** Tried before `fetch` (the data plane's watch stream). */
    handle?: Parameters<typeof startProxyServer>[0]['handle'];
  },
): Promise<Listeners> {
  const log = options.logger;
  // The worker protocol on a listener and an event loop of its own: heartbeats are
  // answered in milliseconds while clients keep the main thread busy.
  let workerApi: WorkerApiThread;
  try {
    workerApi = await startWorkerApiThread(registry, {
      workerKey: options.workerKey,
      host: settings.host,
      port: settings.workerPort,
      maxConnections: settings.maxConnections,
      logger: log,
      onError: (error) => log.error({ err: error }, `worker API thread failed: ${error.message}`),
    });
  } catch (error) {
    if (inUse(error)) {
      throw new Error(
        `worker port ${settings.workerPort} on ${settings.host} is in use: is another scheduler running? Stop it or pass --worker-port (0: any free port)`,
        { cause: error },
      );
    }
    throw error;
  }
  // With a data plane the app listens on the control port; es-proxy serves the client port.
  const control = (settings.proxyProcesses ?? 0) >= 1;
  const port = control ? (settings.controlPort ?? 0) : settings.port;
  try {
    const server = await startProxyServer({
      fetch: options.fetch,
      ...(options.handle === undefined ? {} : { handle: options.handle }),
      port,
      hostname: settings.host,
      maxConnections: settings.maxConnections,
    });
    return { server, workerApi };
  } catch (error) {
    await workerApi.close();
    if (inUse(error)) {
      throw new Error(
        control
          ? `control port ${port} on ${settings.host} is in use: is another scheduler running? Stop it or pass --control-port (0: any free port)`
          : `port ${port} on ${settings.host} is in use: is another scheduler running? Stop it or pass --port`,
        { cause: error },
      );
    }
    throw error;
  }
}
