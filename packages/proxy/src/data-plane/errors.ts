import type { ServerResponse } from 'node:http';
import { EsError } from '@es/protocol';

/** Machine-readable codes of the errors a data-plane process produces itself. */
export type DataPlaneErrorCode =
  /** `/v1` asked before the first routing-table snapshot arrived (503). */
  | 'no_routing_table'
  /** A path served by the scheduler's control listener could not be forwarded (503). */
  | 'scheduler_unreachable'
  /** A request that cannot be forwarded as it is (its target, a header) (400). */
  | 'invalid_request'
  /** The listen address could not be bound (in use, not an address of this host). */
  | 'listen_failed';

/** Options of {@link DataPlaneError}. */
export interface DataPlaneErrorOptions {
  status?: number;
  param?: string;
  cause?: unknown;
}

/**
 * The error of `@es/proxy`'s data-plane runner (`startDataPlane`); at its HTTP edge it
 * becomes the one OpenAI-shaped body (`toJSON`).
 * @example
 * throw new DataPlaneError('no_routing_table', 'no routing table yet', { status: 503 });
 */
export class DataPlaneError extends EsError<DataPlaneErrorCode> {
  override readonly name = 'DataPlaneError';

  constructor(code: DataPlaneErrorCode, message: string, options: DataPlaneErrorOptions = {}) {
    super(code, message, options);
  }
}

/** Write `error` as its OpenAI-shaped body, unless the answer has already begun. */
export function sendError(
  res: ServerResponse,
  error: DataPlaneError,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(error.toJSON());
  res.writeHead(error.status ?? 500, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}
