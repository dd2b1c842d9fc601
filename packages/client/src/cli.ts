#!/usr/bin/env node
/** `es`: the operator CLI of an Elastic Serving scheduler. */
import { runCli } from './run-cli.js';

const controller = new AbortController();
process.once('SIGINT', () => controller.abort());
process.once('SIGTERM', () => controller.abort());

const code = await runCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  env: process.env,
  signal: controller.signal,
  isTTY: process.stdout.isTTY === true,
});
process.exitCode = code;
