import type { DataPlaneReport } from '@es/protocol';

/**
 * A data-plane process's report as `es-proxy` sends it: process `login1:4242`, serving table
 * version 0, 2 requests in flight to `w-1`, no records; `extra` overrides any field.
 */
export function dataPlaneReport(
  seq: number,
  extra: Partial<DataPlaneReport> = {},
): DataPlaneReport {
  return {
    id: 'login1:4242',
    host: 'login1',
    pid: 4242,
    listen: 'http://0.0.0.0:8780',
    startedAt: 1_000,
    seq,
    tableVersion: 0,
    tableAt: 1_500,
    subscribed: true,
    inFlight: { 'w-1': 2 },
    ejected: [],
    requests: [],
    continuations: [],
    droppedRecords: 0,
    ...extra,
  };
}
