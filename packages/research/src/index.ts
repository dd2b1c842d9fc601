export { ResearchError } from './errors.js';
export type { ResearchErrorCode, ResearchErrorOptions } from './errors.js';
export type { ChatMessage, ToolCall, ToolDefinition } from './types.js';
export {
  BUNDLED_TEMPLATE_DIR,
  createChatTemplate,
  loadChatTemplate,
  templateFromFiles,
} from './chat-template.js';
export type {
  ChatTemplate,
  ChatTemplateOptions,
  LoadChatTemplateOptions,
  ModelFileReader,
  RenderOptions,
} from './chat-template.js';
export {
  BUNDLED_TEST_TEMPLATE,
  DEFAULT_HF_ENDPOINT,
  huggingFaceOptionsFromEnv,
  resolveChatTemplate,
} from './template-source.js';
export type { HuggingFaceOptions, ResolveChatTemplateOptions } from './template-source.js';
export { waitForReadyWorkers } from './wait.js';
export type { WaitForWorkersOptions, WorkersReady } from './wait.js';
export { seedOutputName, toSeedRecord } from './seed-format.js';
export type { SeedMessage, SeedRecord } from './seed-format.js';
export {
  HARMONY_FINAL_HEADER,
  HARMONY_STOP,
  finalAnswerPrefill,
  interpretCompletion,
  parseHarmony,
  parseToolArguments,
} from './harmony.js';
export type { HarmonyMessage, HarmonyTurn, ToolArguments } from './harmony.js';
export {
  DEFAULT_JINA_BASE_URL,
  DEFAULT_SERPER_BASE_URL,
  createWebTools,
  formatSearchResults,
  htmlToText,
  truncate,
} from './tools.js';
export type { Tool, WebToolsOptions } from './tools.js';
export { SAMPLE_QUESTIONS, loadDataset, selectSamples } from './dataset.js';
export type { DatasetItem } from './dataset.js';
export { DEFAULT_SYSTEM_PROMPT, parseContextLengthError, runTrajectory } from './trajectory.js';
export type {
  Trajectory,
  TrajectoryError,
  TrajectoryOptions,
  TrajectoryStatus,
  TurnRecord,
} from './trajectory.js';
export { OUTPUT_FILES, formatSummary, generateTrajectories } from './generate.js';
export type { GenerateOptions, GenerateSummary, OutputFormat } from './generate.js';
export { parseGenerateArgs } from './generate-args.js';
export { runLoadTest } from './load-test.js';
export type { LoadTestOptions } from './load-test.js';
export { makeQuestion } from './load-test-prompts.js';
export type { PromptStyle } from './load-test-prompts.js';
export {
  WORKER_HEADER,
  formatLoadTestReport,
  percentile,
  summarizeLoadTest,
} from './load-test-report.js';
export type {
  Distribution,
  LoadTestReport,
  RequestSample,
  WorkerCount,
} from './load-test-report.js';
export { classifyError } from './load-test-request.js';
export {
  formatClusterBanner,
  parseClusterStatus,
  parseModelList,
  readCluster,
} from './cluster-status.js';
export type { ClusterSnapshot, ClusterStatusFields, ServedModel } from './cluster-status.js';
export { parseLoadTestArgs } from './load-test-args.js';
export type { LoadTestArgs } from './load-test-args.js';
export { formatDuration, formatProgress } from './progress.js';
export type { ProgressState } from './progress.js';
