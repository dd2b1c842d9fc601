/** `generate-trajectories`: the command-line entry point (wiring only). */
import { runCli } from './cli-support.js';
import { formatSummary, generateTrajectories } from './generate.js';
import { parseGenerateArgs } from './generate-args.js';

runCli('generate-trajectories', async () => {
  const options = await parseGenerateArgs(process.argv.slice(2), process.env);
  const controller = new AbortController();
  // First Ctrl-C: stop cleanly (what is written stays valid to continue); second: exit now.
  process.once('SIGINT', () => {
    process.stderr.write('\ninterrupted: finishing the output files (Ctrl-C again to quit now)\n');
    controller.abort();
    process.once('SIGINT', () => process.exit(130));
  });
  const summary = await generateTrajectories({ ...options, signal: controller.signal });
  process.stderr.write(`${formatSummary(summary)}\n`);
  return summary.interrupted ? 130 : 0;
});
