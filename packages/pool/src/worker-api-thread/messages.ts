/**
 * The messages between the worker API's thread and the thread that owns the registry. The
 * registry stays single-threaded: the API's thread answers what it can alone (a heartbeat of
 * a worker it knows to be in service, from the table the registry's thread sends it) and
 * asks for everything else.
 */
import type { MessagePort } from 'node:worker_threads';
import type { HeartbeatRequest } from '@es/protocol';
import type { PoolErrorCode } from '../errors.js';
import type { WorkerLedger } from '../roles.js';

/** What the API's thread is started with (`workerData`). */
export interface ThreadSettings {
  /**
   * Where the heartbeats it answered alone go, in batches ({@link HeartbeatBatch}): a
   * channel of their own, which the main thread can also read synchronously
   * (`receiveMessageOnPort`) before it judges heartbeat timeouts.
   */
  beats: MessagePort;
  workerKey: string;
  host: string;
  port: number;
  startedAt: number;
  /** Open connections at most (0: no cap). */
  maxConnections: number;
  windowMs?: number;
  maxBodyBytes?: number;
}

/** A registry method the API's thread calls and waits for. */
export type LedgerMethod = keyof WorkerLedger;

/** A PoolError, as it crosses threads. */
export interface ClonedPoolError {
  code: PoolErrorCode;
  message: string;
  status: number;
  param: string | undefined;
  jobId: string | undefined;
  workerId: string | undefined;
}

/** From the API's thread. */
export type FromApiThread =
  | { type: 'listening'; port: number }
  | { type: 'listen-failed'; message: string; code: string | undefined }
  | { type: 'call'; id: number; method: LedgerMethod; args: unknown[] }
  | { type: 'log'; fields: Record<string, unknown>; message: string };

/** Heartbeats already answered 200 (their workers are in the table): to be applied, in order. */
export type HeartbeatBatch = [workerId: string, request: HeartbeatRequest][];

/** To the API's thread. */
export type ToApiThread =
  | { type: 'reply'; id: number; value: unknown }
  | { type: 'reply'; id: number; error: ClonedPoolError | { message: string } }
  /**
   * Every worker in service (not gone) as `[workerId, restartCount]`: a heartbeat of one of
   * them with its restart count is answered 200 without asking.
   */
  | { type: 'table'; workers: [string, number][] }
  | { type: 'close' };
