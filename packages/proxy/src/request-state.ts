/**
 * Per-request state the forwarding path and the continuation relay share: whether the
 * client is still there, and what the request's attempts have done so far (carried on a
 * thrown error for the request record).
 */
import { ProxyError } from './errors.js';

/** Knows when the client goes away, and tells whoever currently cares. */
export class ClientState {
  gone = false;
  private listener: (() => void) | undefined;

  /** The client disconnected. */
  markGone(): void {
    if (this.gone) return;
    this.gone = true;
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }

  /** Replace the listener; it runs at once if the client is already gone. */
  onGone(listener: (() => void) | undefined): void {
    this.listener = listener;
    if (this.gone && listener !== undefined) {
      this.listener = undefined;
      listener();
    }
  }
}

/** What a request's attempts have done so far (for its record). */
export interface Progress {
  attempts: number;
  queuedMs: number;
  workerId: string | undefined;
}

const progressKey = Symbol('progress');

/** Attach `progress` to an error thrown out of `forward`, for the request record. */
export function withProgress(error: ProxyError, progress: Progress): ProxyError {
  (error as ProxyError & { [progressKey]?: Progress })[progressKey] = progress;
  return error;
}

/** Attempts and queue time of a failed `forward`, for the request record. */
export function progressOf(error: unknown): Progress | undefined {
  return (error as { [progressKey]?: Progress } | null)?.[progressKey];
}

/** The client left before anything was committed (recorded as 499, never sent). */
export function clientGone(): ProxyError {
  return new ProxyError('client_closed_request', 'The client closed the request.', {
    status: 499,
  });
}
