export { isGroupAlive, signalGroup, terminateGroup } from './group.js';
export type {
  GroupTimers,
  TerminateGroupOptions,
  Termination,
  TerminationResult,
} from './group.js';
