export {
  checkContent,
  checkRequests,
  checkRouting,
  detectionTime,
  duplicateSubmissions,
  inWindow,
  journalProcesses,
  jobsSeen,
  maxLiveJobs,
  median,
  percentile,
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
export { seededFraction, startLoad, WORKER_HEADERS } from './load.js';
export {
  backToZeroBoundS,
  backToZeroCheck,
  CUT,
  FEWER,
  FIRST_NOT_AT_ZERO,
  FIRST_RETRIED,
  firstRequest,
  judgeWave,
  liveJobs,
  LOST,
  nodeSeconds,
  NOT_TO_MAX,
  scaleChanges,
  timeToZero,
  ttfts,
  waveFigures,
} from './demand-wave-checks.js';
export type {
  FirstRequest,
  ScaleChange,
  WaveFigures,
  WaveInput,
  WaveJudgement,
  WaveRun,
  WaveScaling,
  WaveTimes,
} from './demand-wave-checks.js';
export { demandAwareFlags, demandWave, renderDemandWaveReport } from './demand-wave.js';
export type { DemandWaveOptions, WavePhases } from './demand-wave.js';
export type { Load, LoadOptions } from './load.js';
export {
  adminStatus,
  derivedKeysByName,
  engineCredentials,
  engineTargets,
  leaksIn,
  privateFacts,
  probePublicRoutes,
  secretsOfRun,
} from './other-user-facts.js';
export type { AdminStatus, EngineTarget, PrivateFacts } from './other-user-facts.js';
export {
  esCliToSquatter,
  exitedWorkers,
  forgedRegistrations,
  IGNORED_UNSIGNED,
  jobsThatSent,
  recordedSecrets,
  replayFindings,
  silentWorkers,
} from './other-user-squat.js';
export { OTHER_USER_CHECKS, OTHER_USER_FAULT, otherUserScenario } from './other-user.js';
export type { OtherUserOptions } from './other-user.js';
export { brokenChecks, renderReport } from './report.js';
export type { FaultResult } from './report.js';
export {
  isEsProxy,
  parseQueue,
  readDataPlaneState,
  sampleCapacity,
  sampleQueue,
  startSchedulerProcess,
} from './scheduler-process.js';
export type { Sampler, SchedulerProcess, SchedulerProcessOptions } from './scheduler-process.js';
export {
  capacityCheck,
  continuityChecks,
  liveWorkers,
  waitForCapacity,
  waitForIdleNodes,
} from './scenario-kit.js';
export type { ChaosContext, LiveWorker } from './scenario-kit.js';
export {
  controllerRestartScenario,
  controllerStopScenario,
  hostileScenario,
  sbatchFailureScenario,
} from './cluster-scenarios.js';
export { engineMisbehaviourScenario, launchFailureScenario } from './own-scheduler-scenarios.js';
export { scaleScenario } from './scale-scenario.js';
export {
  engineHangScenario,
  engineKillScenario,
  preemptionScenario,
  workerKillScenario,
} from './worker-scenarios.js';
export {
  esProxyKillScenario,
  MAX_GAP_MS,
  schedulerDownScenario,
  schedulerRestartScenario,
} from './data-plane-scenarios.js';
export type { ProxyKillPlants } from './data-plane-scenarios.js';
export {
  checkGlobalRemovals,
  longestGap,
  REMOVAL_PROPAGATION_MS,
  routedBy,
  splitByKilledProcess,
  successGaps,
} from './data-plane-checks.js';
export type { Gap, ProcessKillOutcome, RemovalViolation } from './data-plane-checks.js';
export { SCENARIOS, scenariosOf } from './scenario-registry.js';
export type { ChaosProfile, Scenario, ScenarioRun } from './scenario-registry.js';
export { createSbatchShim, maxCallsUnderBackoff, SBATCH_FAILURES } from './sbatch-shim.js';
export type { SbatchMode, SbatchShim } from './sbatch-shim.js';
