// One helper for every package's tests (@es/proxy does not depend on @es/testkit).
export { registerReadyWorker } from '../../testkit/src/registry-worker.js';
