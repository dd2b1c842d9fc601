import ky, { HTTPError, TimeoutError, type KyInstance } from 'ky';
import { ClientError } from './errors.js';
import { ADMIN_SIGNATURE_HEADERS, isSignedAdminAnswer, signAdminRequest } from './signing.js';
import type {
  ApiErrorBody,
  ChatRequest,
  ChatResponse,
  ClusterStatusResponse,
  DashboardLoginResponse,
  DataPlaneView,
  DrainResponse,
  EventsResponse,
  HealthResponse,
  LogsResponse,
  ModelsResponse,
  ScaleResponse,
  SeriesResponse,
  StatusResponse,
  StopResponse,
} from './types.js';

/** Default scheduler URL (the scheduler's default `--port`). */
export const DEFAULT_SCHEDULER_URL = 'http://127.0.0.1:8780';

/** Options of {@link createSchedulerClient}. */
export interface SchedulerClientOptions {
  /** Scheduler base URL. Default {@link DEFAULT_SCHEDULER_URL}. */
  url?: string;
  /**
   * Admin key (`--admin-key` of the scheduler, or the admin token derived from its secret).
   * It never leaves this process: admin requests are signed with it (see `signAdminRequest`),
   * and an admin answer is trusted only when the scheduler signed it with the same key.
   */
  adminKey?: string;
  /** Key for the OpenAI routes (`/v1/*`), when the scheduler was started with `--api-key`. */
  apiKey?: string;
  /** Per-request timeout in ms. Default 10 000. */
  timeoutMs?: number;
  /** Custom fetch (tests, proxies). */
  fetch?: typeof fetch;
}

/** Typed client of the scheduler's admin/status API. */
export interface SchedulerClient {
  /** The scheduler URL this client talks to. */
  readonly url: string;
  status(): Promise<StatusResponse>;
  /** The data-plane processes that report to the scheduler, and its table version. */
  dataPlane(): Promise<DataPlaneView>;
  events(options?: { limit?: number }): Promise<EventsResponse>;
  series(): Promise<SeriesResponse>;
  /** Set a deployment's `maxNodes`; lowering it drains and cancels the surplus at once. */
  scale(deployment: string, maxNodes: number): Promise<ScaleResponse>;
  /** Take one worker out of routing (its in-flight requests finish). */
  drainWorker(workerId: string): Promise<DrainResponse>;
  /** Drain every worker of a job, then cancel it once idle; the scheduler replaces it. */
  drainJob(jobId: string): Promise<DrainResponse>;
  /** Tail of a job's or a worker's log; `since` continues from an earlier `offset`. */
  logs(id: string, options?: { since?: number; bytes?: number }): Promise<LogsResponse>;
  /** Stop serving; cancel the jobs too when `cancelJobs`. */
  stop(options?: { cancelJobs?: boolean }): Promise<StopResponse>;
  /** A one-time dashboard login link (`/dashboard?login=<token>`), valid for a minute. */
  dashboardLogin(): Promise<DashboardLoginResponse>;
  /** Raw Prometheus text of `/metrics`. */
  metrics(): Promise<string>;
  /** The seed's public `GET /cluster_status` (no admin key needed). */
  clusterStatus(): Promise<ClusterStatusResponse>;
  /** The seed's public `GET /health`. */
  health(): Promise<HealthResponse>;
  /** `GET /v1/models`: the models served. */
  models(): Promise<ModelsResponse>;
  /** One non-streaming `POST /v1/chat/completions` (its own timeout: a generation takes time). */
  chat(request: ChatRequest, options?: { timeoutMs?: number }): Promise<ChatResponse>;
}

/** Which kind of route a call goes to: says which key to blame on a 401. */
type Route = 'admin' | 'public' | 'openai';

async function toClientError(error: unknown, url: string, route: Route): Promise<ClientError> {
  if (error instanceof ClientError) return error;
  if (error instanceof HTTPError) {
    let body: ApiErrorBody | undefined;
    try {
      body = (await error.response.clone().json()) as ApiErrorBody;
    } catch {
      body = undefined;
    }
    const status = error.response.status;
    const message = body?.error.message ?? `${status} ${error.response.statusText}`;
    if (status === 401 && route === 'openai') {
      return new ClientError(
        'unauthorized',
        `the scheduler at ${url} refused the API key (${message}): pass --api-key or set ES_API_KEY (one of the scheduler's --api-key values)`,
        { status, cause: error },
      );
    }
    if (status === 401) {
      return new ClientError(
        'unauthorized',
        `the scheduler at ${url} refused the admin key (${message}): pass --admin-key or set ES_ADMIN_KEY (the scheduler's --admin-key, or the admin token derived from its secret file)`,
        { status, cause: error },
      );
    }
    return new ClientError(status === 404 ? 'not_found' : 'http_error', message, {
      status,
      apiCode: body?.error.code,
      cause: error,
    });
  }
  if (error instanceof TimeoutError) {
    return new ClientError('timeout', `the scheduler at ${url} did not answer in time`, {
      cause: error,
    });
  }
  return new ClientError(
    'unreachable',
    `scheduler not reachable at ${url}: is it running? Start it with \`bash scripts/run.sh\` or \`scripts/es-scheduler --model ...\`, or point --url (ES_SCHEDULER_URL, ELASTIC_SERVING_URL) at it`,
    { cause: error },
  );
}

/**
 * ky hooks that sign each admin request with `adminKey` and refuse an answer the scheduler
 * did not sign: whatever listens at the URL learns no key and nothing it can send again, and
 * a process that is not the scheduler cannot pass its answer off as the scheduler's.
 */
function signedAdminHooks(adminKey: string, url: string) {
  return {
    beforeRequest: [
      async (request: Request) => {
        const body = new Uint8Array(await request.clone().arrayBuffer());
        const target = new URL(request.url);
        const { pathname, search } = target;
        const headers = signAdminRequest(adminKey, {
          method: request.method,
          path: `${pathname}${search}`,
          body,
          // Signed for the port it is sent to: a squatter there cannot relay it elsewhere.
          port: Number(target.port || (target.protocol === 'https:' ? 443 : 80)),
        });
        for (const [name, value] of Object.entries(headers)) request.headers.set(name, value);
      },
    ],
    afterResponse: [
      async (request: Request, _options: unknown, response: Response) => {
        // Refusals are reported as they are (they carry nothing to act on); an answer to
        // act on must be signed.
        if (!response.ok) return;
        const nonce = request.headers.get(ADMIN_SIGNATURE_HEADERS.nonce) ?? '';
        const body = new Uint8Array(await response.clone().arrayBuffer());
        const answer = { nonce, status: response.status, body };
        if (
          !isSignedAdminAnswer(
            adminKey,
            answer,
            response.headers.get(ADMIN_SIGNATURE_HEADERS.answer),
          )
        ) {
          throw new ClientError(
            'unverified',
            `the server at ${url} did not prove that it holds the admin key (its answer to ${request.method} ${new URL(request.url).pathname} has no valid ${ADMIN_SIGNATURE_HEADERS.answer}): it is not the scheduler you meant (another process on its port?) or the key is another scheduler's; check --url and the key`,
            { status: response.status },
          );
        }
      },
    ],
  };
}

/**
 * Create a typed client of the scheduler's admin/status API.
 * @example
 * const client = createSchedulerClient({ url: 'http://127.0.0.1:8780', adminKey: process.env.ES_ADMIN_KEY });
 * const { deployments } = await client.status();
 */
export function createSchedulerClient(options: SchedulerClientOptions = {}): SchedulerClient {
  const url = (options.url ?? DEFAULT_SCHEDULER_URL).replace(/\/+$/, '');
  const adminKey = options.adminKey || undefined;
  const api: KyInstance = ky.create({
    prefixUrl: url,
    hooks: adminKey === undefined ? {} : signedAdminHooks(adminKey, url),
    timeout: options.timeoutMs ?? 10_000,
    // Admin calls are not idempotent (scale, stop): never retry behind the user's back.
    retry: 0,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const call = async <T>(run: () => Promise<T>, route: Route = 'admin'): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      throw await toClientError(error, url, route);
    }
  };
  // The OpenAI routes get the API key, never an admin signature; the public routes no key.
  const plain = ky.create({
    prefixUrl: url,
    timeout: options.timeoutMs ?? 10_000,
    retry: 0,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const openai = plain.extend({
    headers: { authorization: options.apiKey ? `Bearer ${options.apiKey}` : undefined },
  });
  const open = plain;
  const id = (value: string) => encodeURIComponent(value);
  return {
    url,
    status: () => call(() => api.get('api/v1/admin/status').json<StatusResponse>()),
    dataPlane: () => call(() => api.get('api/v1/admin/data-plane').json<DataPlaneView>()),
    events: (o = {}) =>
      call(() =>
        api
          .get('api/v1/admin/events', { searchParams: o.limit ? { limit: o.limit } : {} })
          .json<EventsResponse>(),
      ),
    series: () => call(() => api.get('api/v1/admin/series').json<SeriesResponse>()),
    scale: (deployment, maxNodes) =>
      call(() =>
        api
          .post(`api/v1/admin/deployments/${id(deployment)}/scale`, { json: { maxNodes } })
          .json<ScaleResponse>(),
      ),
    drainWorker: (workerId) =>
      call(() => api.post(`api/v1/admin/workers/${id(workerId)}/drain`).json<DrainResponse>()),
    drainJob: (jobId) =>
      call(() => api.post(`api/v1/admin/jobs/${id(jobId)}/drain`).json<DrainResponse>()),
    logs: (logId, o = {}) => {
      const searchParams: Record<string, number> = {};
      if (o.since !== undefined) searchParams.since = o.since;
      if (o.bytes !== undefined) searchParams.bytes = o.bytes;
      return call(() =>
        api.get(`api/v1/admin/logs/${id(logId)}`, { searchParams }).json<LogsResponse>(),
      );
    },
    stop: (o = {}) =>
      call(() =>
        api
          .post('api/v1/admin/stop', { json: { cancelJobs: o.cancelJobs ?? false } })
          .json<StopResponse>(),
      ),
    dashboardLogin: () =>
      call(() => api.post('api/v1/admin/dashboard/login-token').json<DashboardLoginResponse>()),
    metrics: () => call(() => api.get('metrics').text()),
    clusterStatus: () =>
      call(() => open.get('cluster_status').json<ClusterStatusResponse>(), 'public'),
    health: () => call(() => open.get('health').json<HealthResponse>(), 'public'),
    models: () => call(() => openai.get('v1/models').json<ModelsResponse>(), 'openai'),
    chat: (request, o = {}) =>
      call(
        () =>
          openai
            .post('v1/chat/completions', {
              json: { ...request, stream: false },
              timeout: o.timeoutMs ?? 300_000,
            })
            .json<ChatResponse>(),
        'openai',
      ),
  };
}
