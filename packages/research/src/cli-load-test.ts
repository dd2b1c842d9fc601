/** `load-test`: the command-line entry point (wiring only). */
import { runCli } from './cli-support.js';
import { runLoadTest } from './load-test.js';
import { formatLoadTestReport } from './load-test-report.js';
import { parseLoadTestArgs } from './load-test-args.js';

runCli('load-test', async () => {
  const { options, json } = await parseLoadTestArgs(process.argv.slice(2), process.env);
  const controller = new AbortController();
  // Ctrl-C stops sending and reports what was measured so far.
  process.once('SIGINT', () => controller.abort());
  const report = await runLoadTest({
    ...options,
    // The banner, the waiting lines and the progress go to stderr: stdout is the report.
    log: process.stderr,
    progress: process.stderr,
    signal: controller.signal,
  });
  process.stdout.write(
    json ? `${JSON.stringify(report, null, 2)}\n` : `${formatLoadTestReport(report)}\n`,
  );
  return report.requests.ok === 0 && report.requests.total > 0 ? 1 : 0;
});
