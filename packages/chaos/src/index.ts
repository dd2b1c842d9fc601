export {
  checkContent,
  checkRequests,
  checkRouting,
  detectionTime,
  duplicateSubmissions,
  inWindow,
  jobsSeen,
  maxLiveJobs,
  median,
  summarize,
  timeToCapacity,
  unattributed,
  unjournaled,
  unknownJobs,
} from './checker.js';
export type {
  ContentViolation,
  RequestSummary,
  RequestViolations,
  RoutingViolation,
} from './checker.js';
export {
  continuations,
  missingFromEngineLog,
  readEngineLog,
  restartsFromScratch,
  streamCuts,
} from './engine-log.js';
export type { Continuation, EngineLog, EngineRequest, Restart, StreamCuts } from './engine-log.js';
export { expectedContent } from './expected.js';
export { CHECKS, judge } from './judge.js';
export type { Judgement, JudgeInput } from './judge.js';
export { readRunRecord, recheck, rejudge, writeRunRecord } from './record.js';
export type { RecheckMismatch, RunRecord } from './record.js';
export { ChaosError } from './errors.js';
export type { ChaosErrorCode } from './errors.js';
export {
  enginePidsBehind,
  killEngineBehind,
  killPids,
  killWorkerOfJob,
  isAlive,
  parseSsPids,
  pidsListeningOn,
  pidsOfJob,
  rssBytes,
} from './faults.js';
export { parseJournal, parseSchedulerLog } from './history.js';
export {
  ANY_ENGINE_KEY,
  ENGINE_PATHS,
  environOf,
  isWorkerProcess,
  listenersOf,
  probeTcp,
  probeUnix,
  processLabel,
  redact,
  scanFiles,
  scanProcesses,
  secretsIn,
  targetUrl,
  targetsOf,
  tcpOutsideWorkers,
} from './intruder/checks.js';
export type {
  Credential,
  Listener,
  Secret,
  TcpListener,
  TcpTarget,
  UnixListener,
} from './intruder/checks.js';
export { INTRUDER_PROGRAM } from './intruder/program.js';
export { createIntruder, runningAsRoot } from './intruder/user.js';
export type {
  HttpAttempt,
  HttpOutcome,
  Intruder,
  IntruderTasks,
  ReadableFile,
  SquatOutcome,
  SquattedRequest,
  WalkRoot,
} from './intruder/user.js';
export type {
  CapacitySample,
  History,
  JournalEntry,
  QueueSample,
  RequestOutcome,
  RequestRecord,
  SchedulerEvent,
} from './history.js';
export { checkHostileAnswers, hostileCorpus, sendCorpus, sendRaw, slowLoris } from './hostile.js';
export type { HostileAnswer, HostileCase } from './hostile.js';
export { startLoad, WORKER_HEADERS } from './load.js';
export type { Load, LoadOptions } from './load.js';
export {
  adminStatus,
  derivedKeysByName,
  engineCredentials,
  engineTargets,
  esCliToSquatter,
  exitedWorkers,
  forgedRegistrations,
  IGNORED_UNSIGNED,
  jobsThatSent,
  leaksIn,
  OTHER_USER_CHECKS,
  otherUserScenario,
  privateFacts,
  probePublicRoutes,
  recordedSecrets,
  replayFindings,
  secretsOfRun,
  silentWorkers,
} from './other-user.js';
export type { AdminStatus, EngineTarget, OtherUserOptions, PrivateFacts } from './other-user.js';
export { brokenChecks, OTHER_USER_FAULT, renderReport } from './report.js';
export type { FaultResult } from './report.js';
export {
  parseQueue,
  sampleCapacity,
  sampleQueue,
  startSchedulerProcess,
} from './scheduler-process.js';
export type { Sampler, SchedulerProcess, SchedulerProcessOptions } from './scheduler-process.js';
export {
  controllerStopScenario,
  controllerRestartScenario,
  engineHangScenario,
  engineKillScenario,
  capacityCheck,
  continuityChecks,
  engineMisbehaviourScenario,
  hostileScenario,
  launchFailureScenario,
  liveWorkers,
  preemptionScenario,
  sbatchFailureScenario,
  scaleScenario,
  schedulerRestartScenario,
  waitForCapacity,
  waitForIdleNodes,
  workerKillScenario,
} from './scenarios.js';
export type { ChaosContext, LiveWorker } from './scenarios.js';
export { createSbatchShim, maxCallsUnderBackoff, SBATCH_FAILURES } from './sbatch-shim.js';
export type { SbatchMode, SbatchShim } from './sbatch-shim.js';
