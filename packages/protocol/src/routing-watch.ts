/**
 * The routing-table watch stream: how a data-plane process (`es-proxy`) receives from the
 * scheduler the deployments and the routable workers, a snapshot first and then every change.
 *
 * The subscription is a `GET` of {@link ROUTING_WATCH_ROUTE} signed like a worker request
 * (`signWorkerRequest`) with the data-plane key (`deriveKeys(secret).dataPlaneKey`); the
 * answer is a long-lived `application/x-ndjson` body, one event a line. Each line is
 * `<mac> <event JSON>`: the MAC chains the line to the one before it and the first line to
 * the subscription's nonce, so a squatter on the scheduler's port cannot forge a table, and
 * no one can replay, drop or reorder lines of a real stream without the receiver noticing.
 * No secret crosses the wire: a worker's engine key is sent as a reference (`key: 'job'`,
 * derived by the receiver from the secret and the job id), never the key itself.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import * as v from 'valibot';
import { DataPlaneSettingsSchema } from './data-plane.js';
import { EngineKindSchema } from './schemas.js';

/** The route a data-plane process subscribes to (next to `WORKER_ROUTES`). */
export const ROUTING_WATCH_ROUTE = {
  method: 'GET',
  path: '/api/v1/routing/watch',
  /** The answer's content type: newline-delimited JSON, one signed event a line. */
  contentType: 'application/x-ndjson',
} as const;

/** A deployment as a data-plane process needs it (no key: see `RoutingWatchWorker.key`). */
export const RoutingWatchDeploymentSchema = v.object({
  name: v.pipe(v.string(), v.minLength(1)),
  /** Names clients may send as `model` (served model name first). */
  modelNames: v.array(v.string()),
  model: v.string(),
  engine: EngineKindSchema,
  /** One of `ROUTING_POLICIES` of `@es/pool` (checked by the receiver). */
  routing: v.string(),
  /** The engine's chat output parsers (`DeploymentView.chatParsers` of `@es/pool`). */
  chatParsers: v.optional(
    v.object({
      reasoning: v.optional(v.string()),
      tools: v.optional(v.string()),
      harmony: v.optional(v.boolean()),
    }),
  ),
  /** It may have no node (`minNodes` 0): a request finding no worker waits for a cold start. */
  scalesFromZero: v.optional(v.boolean()),
  /** When a node is expected to be ready (epoch ms), while none is. */
  expectedReadyAt: v.optional(v.pipe(v.number(), v.minValue(0))),
});
export type RoutingWatchDeployment = v.InferOutput<typeof RoutingWatchDeploymentSchema>;

/** A routable worker: where its engine front listens and which key it requires. */
export const RoutingWatchWorkerSchema = v.object({
  id: v.pipe(v.string(), v.minLength(1)),
  deployment: v.string(),
  /** `http://host:port` of the worker's engine front. */
  baseUrl: v.pipe(v.string(), v.url()),
  /**
   * Which key the front requires, by reference: `job`, the job's engine key
   * (`deriveEngineKey(secret, jobIdOfWorker(id))`); `deployment`, the deployment's own
   * `upstreamApiKey` from the configuration, or none.
   */
  key: v.picklist(['job', 'deployment']),
});
export type RoutingWatchWorker = v.InferOutput<typeof RoutingWatchWorkerSchema>;

const Version = v.pipe(v.number(), v.integer(), v.minValue(0));

/** One event of the stream. `version` grows by one per change; heartbeats repeat it. */
export const RoutingWatchEventSchema = v.variant('type', [
  v.object({
    type: v.literal('snapshot'),
    version: Version,
    deployments: v.array(RoutingWatchDeploymentSchema),
    workers: v.array(RoutingWatchWorkerSchema),
    /** The settings every data-plane process serves with (`DataPlaneSettings`). */
    dataPlane: DataPlaneSettingsSchema,
  }),
  v.object({
    type: v.literal('worker-routable'),
    version: Version,
    worker: RoutingWatchWorkerSchema,
    reason: v.string(),
  }),
  v.object({
    type: v.literal('worker-unroutable'),
    version: Version,
    deployment: v.string(),
    workerId: v.string(),
    /** `draining: ...`, `unready: ...`, `failed`, `gone: ...`, as the registry says. */
    reason: v.string(),
  }),
  v.object({
    type: v.literal('deployment-added'),
    version: Version,
    deployment: RoutingWatchDeploymentSchema,
  }),
  v.object({ type: v.literal('deployment-removed'), version: Version, name: v.string() }),
  /** Sent when nothing changed for a while: the stream is alive (and still signed). */
  v.object({ type: v.literal('heartbeat'), version: Version }),
]);
export type RoutingWatchEvent = v.InferOutput<typeof RoutingWatchEventSchema>;

/** How often the server sends a heartbeat line (ms); a receiver gives up after 3 missed. */
export const ROUTING_WATCH_HEARTBEAT_MS = 5_000;

/** The id of the job a worker id (`<jobId>.<restartCount>.<index>`) belongs to. */
export function jobIdOfWorker(workerId: string): string {
  return workerId.split('.').slice(0, -2).join('.');
}

function lineMac(key: string, previous: string, json: string): string {
  return createHmac('sha256', key)
    .update(`elastic-serving routing watch v1\n${previous}\n${json}`)
    .digest('hex');
}

/**
 * Signs the lines of one stream: each line's MAC covers the previous line's MAC (the first:
 * the subscription's nonce) and the event's exact JSON.
 * @example
 * const signer = createRoutingWatchSigner(dataPlaneKey, nonce);
 * res.write(signer.line({ type: 'heartbeat', version: 7 }));
 */
export function createRoutingWatchSigner(
  key: string,
  nonce: string,
): { line(event: RoutingWatchEvent): string } {
  let previous = nonce;
  return {
    line(event) {
      const json = JSON.stringify(event);
      previous = lineMac(key, previous, json);
      return `${previous} ${json}\n`;
    },
  };
}

/** The verdict on one line: the event, or why it is refused. */
export type RoutingWatchLineCheck =
  | { ok: true; event: RoutingWatchEvent }
  | { ok: false; code: 'bad_signature' | 'invalid_event'; message: string };

/**
 * Checks the lines of one stream in order (the receiver's half of
 * {@link createRoutingWatchSigner}). After a refusal the stream must be dropped: the chain
 * is broken.
 * @example
 * const check = createRoutingWatchVerifier(dataPlaneKey, nonce).check(line);
 * if (!check.ok) socket.destroy();
 */
export function createRoutingWatchVerifier(
  key: string,
  nonce: string,
): { check(line: string): RoutingWatchLineCheck } {
  let previous = nonce;
  return {
    check(line) {
      const space = line.indexOf(' ');
      const given = space === 64 ? line.slice(0, 64) : '';
      const json = line.slice(space + 1);
      const expected = lineMac(key, previous, json);
      if (
        !/^[0-9a-f]{64}$/.test(given) ||
        !timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(given, 'hex'))
      ) {
        return {
          ok: false,
          code: 'bad_signature',
          message: `a routing-watch line is not signed with the data-plane key for this subscription: not the scheduler (a process squatting on its port?), or a scheduler with another secret file`,
        };
      }
      previous = expected;
      let parsed: unknown;
      try {
        parsed = JSON.parse(json);
      } catch {
        parsed = undefined;
      }
      const result = v.safeParse(RoutingWatchEventSchema, parsed);
      if (!result.success) {
        return {
          ok: false,
          code: 'invalid_event',
          message: `a signed routing-watch line is not a known event (${result.issues[0].message}): a scheduler of another version?`,
        };
      }
      return { ok: true, event: result.output };
    },
  };
}
