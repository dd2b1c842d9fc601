/**
 * The worker protocol moved to `@es/protocol` (issue 12). This re-export is only for
 * modules of this package not yet switched to `@es/protocol`; it goes once none imports it.
 * Nothing new may import it.
 */
export { WORKER_API_PREFIX, WORKER_ENV, deriveKeys, formatWorkerId } from '@es/protocol';
export type {
  DeregisterRequest,
  DerivedKeys,
  DrainRequest,
  EngineKind,
  EngineLoad,
  HeartbeatRequest,
  HeartbeatResponse,
  RegisterRequest,
  RegisterResponse,
  ReportedState,
} from '@es/protocol';
