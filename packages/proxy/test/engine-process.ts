import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The built mock engine's CLI (the project's vLLM stand-in), run as workers run it. */
export const MOCK_ENGINE_CLI = fileURLToPath(
  new URL('../../mock-engine/dist/cli.mjs', import.meta.url),
);

/**
 * Start `es-mock-engine` on a free port of 127.0.0.1 with `args`; resolves once it listens.
 * `cleanups` gets a step that SIGKILLs it (after SIGCONT, in case a test stopped it).
 */
export async function spawnMockEngine(
  args: readonly string[],
  cleanups: (() => Promise<void> | void)[],
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [MOCK_ENGINE_CLI, '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (data: Buffer) => {
      out += data.toString();
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match !== null) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`mock engine exited with ${code}: ${out}`)));
  });
  return { child, url };
}
