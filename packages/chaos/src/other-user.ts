/**
 * "Another user of the cluster": every attack of the two shared-cluster issues, run as an
 * unprivileged user (the {@link Intruder}) against the real scheduler and its SLURM jobs on
 * this machine, each turned into a check that counts what it found.
 *
 * - Issue 14: requests without the engine key (none, wrong, the worker/admin tokens, another
 *   job's engine key, a forged `Host`) to every engine path at every address a job process
 *   listens on; connects to their Unix sockets; `ps` and /proc cmdline/environ; every file
 *   it can read in the log directory and in new temp entries.
 * - Issue 15: the public routes show no engine address, node name or job id; a squatter on
 *   the scheduler's port during a restart records what workers send, answers 409 to all of
 *   it, and learns nothing replayable (no key in it, its replay refused by the restarted
 *   scheduler) and makes no worker exit (their logs say they ignored its unsigned answers);
 *   an admin request the `es` CLI sent to a squatter is refused when replayed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { inWindow, summarize } from './checker.js';
import { pidsOfJob } from './faults.js';
import {
  ANY_ENGINE_KEY,
  listenersOf,
  probeTcp,
  probeUnix,
  scanFiles,
  scanProcesses,
  tcpOutsideWorkers,
} from './intruder/checks.js';
import { ChaosError } from './errors.js';
import { createIntruder, runningAsRoot, type Intruder } from './intruder/user.js';
import type { FaultResult } from './report.js';
import { capacityCheck, waitForCapacity, type ChaosContext } from './scenario-kit.js';
import {
  adminStatus,
  engineCredentials,
  engineTargets,
  jobProcesses,
  privateFacts,
  probePublicRoutes,
  secretsOfRun,
  workerPids,
} from './other-user-facts.js';
import {
  esCliToSquatter,
  exitedWorkers,
  forgedRegistrations,
  jobsThatSent,
  recordedSecrets,
  replayFindings,
  silentWorkers,
} from './other-user-squat.js';

/** The fault name of `otherUserScenario`'s result (the report gives it a section of its own). */
export const OTHER_USER_FAULT = 'another user of the cluster';

/** Options of {@link otherUserScenario}. */
export interface OtherUserOptions {
  /** The scheduler's log directory (its `secret`, the jobs' `.out`); default: its log file's. */
  logDir?: string;
  /** The admin key (default: the scheduler's, `SchedulerProcess.adminKey()`). */
  adminKey?: string;
  /** How long the squatter holds the scheduler's port, ms (default 5000). */
  squatMs?: number;
  /** An intruder to reuse (default: one created for the scenario and removed after it). */
  intruder?: Intruder;
  /** The deployment (and model) the scheduler serves (default `mock-model`). */
  model?: string;
  /** Files in the temp directory modified before this (ms) are not the run's (default: its first event). */
  since?: number;
}

/** The check names of {@link otherUserScenario}, in the order the report lists them. */
export const OTHER_USER_CHECKS = {
  tcp: 'job processes listening on TCP outside es-worker',
  engine: 'engine paths answered without the engine key',
  unix: 'Unix sockets the intruder connected to',
  processes: 'keys in ps or /proc',
  files: 'keys in files the intruder can read',
  publicRoutes: 'public routes showing an engine address, node name or job id',
  squatKeys: 'keys in what the squatter recorded',
  squatReplay: 'replayed worker requests accepted',
  squatMissed: 'squatter reached no worker',
  squatForged: 'registrations forged from what the squatter recorded accepted',
  workersExited: 'jobs whose worker exited or stopped serving after the squat',
  workersSilent: 'workers that did not log ignoring the unsigned answers',
  cliMissed: 'es CLI sent the squatter nothing',
  cliKeys: 'keys the es CLI sent to a squatter',
  cliReplay: 'replayed admin requests accepted',
} as const;

/**
 * Runs every attack of another user of the cluster against the scheduler of `ctx` and its
 * jobs (see the module's comment). The load keeps running; its requests that met the
 * squatter (the scheduler's port held by someone else) are excused.
 * @example
 * const result = await otherUserScenario(ctx);
 * result.checks; // { 'engine paths answered without the engine key': 0, ... }
 */
export async function otherUserScenario(
  ctx: ChaosContext,
  options: OtherUserOptions = {},
): Promise<FaultResult> {
  const C = OTHER_USER_CHECKS;
  const logDir = options.logDir ?? dirname(ctx.scheduler.logFile);
  const secret = readFileSync(join(logDir, 'secret'), 'utf8');
  const adminKey = options.adminKey ?? ctx.scheduler.adminKey();
  if (options.intruder === undefined && !runningAsRoot()) {
    throw new ChaosError(
      'start_failed',
      'another user of the cluster: creating the unprivileged intruder user needs root (run scripts/chaos as root, as CI does, or pass options.intruder)',
    );
  }
  const intruder = options.intruder ?? createIntruder();
  const faultAt = Date.now();
  const notes: string[] = [`intruder ${intruder.user ?? 'a bare uid'} (uid ${intruder.uid})`];
  const checks: Record<string, number> = {};
  const record = (name: string, findings: readonly string[]) => {
    checks[name] = findings.length;
    for (const f of findings.slice(0, 8)) notes.push(`${name}: ${f}`);
    if (findings.length > 8) notes.push(`${name}: … ${findings.length - 8} more`);
  };
  const excused = new Set<string>();
  // How long each part took, for the notes (the short profile's budget is about a minute).
  const timings: string[] = [];
  let mark = faultAt;
  const took = (part: string) => {
    timings.push(`${part} ${((Date.now() - mark) / 1000).toFixed(1)} s`);
    mark = Date.now();
  };
  try {
    const url = ctx.scheduler.url;
    const status = await adminStatus(url, adminKey);
    const facts = privateFacts(status);
    const secrets = secretsOfRun(secret, facts.jobIds, [
      { name: 'the admin key', value: adminKey },
    ]);

    // Issue 14: the job processes' listeners, their engine paths, ps and readable files.
    const pids = jobProcesses(facts.jobIds);
    const listeners = listenersOf(pids);
    record(C.tcp, tcpOutsideWorkers(listeners));
    const targets = engineTargets(
      secret,
      facts.jobIds,
      listeners,
      status.deployments.flatMap((d) => d.workers),
      (pid) => facts.jobIds.find((id) => pidsOfJob(id, '').includes(pid)) ?? '',
    );
    const credentials = engineCredentials(secret);
    record(C.engine, [
      ...(targets.size === 0
        ? [`no address found for the ${facts.jobIds.length} jobs' processes (${pids.length} pids)`]
        : []),
      ...(await probeTcp(
        intruder,
        [...targets.values()].map((t) => t.target),
        credentials,
        secrets,
      )),
    ]);
    took('engine paths');
    record(C.unix, await probeUnix(intruder, listeners));
    record(C.processes, await scanProcesses(intruder, secrets));
    took('Unix sockets and ps');
    const since =
      options.since ??
      Math.min(
        faultAt,
        ...ctx.scheduler
          .events()
          .slice(0, 1)
          .map((e) => e.time),
      );
    record(
      C.files,
      await scanFiles(
        intruder,
        // The log directory's keys of unknown jobs too; the temp directory (shared with
        // other runs on this machine) for this run's keys only.
        [{ dir: logDir }],
        [...secrets, ANY_ENGINE_KEY],
      ).then(async (inLogDir) => [
        ...inLogDir,
        ...(await scanFiles(intruder, [{ dir: tmpdir(), since }], secrets)),
      ]),
    );
    notes.push(
      `${pids.length} job processes of jobs ${facts.jobIds.join(', ')}: ${listeners.filter((l) => l.kind === 'tcp').length} TCP and ${listeners.filter((l) => l.kind === 'unix').length} Unix listeners; ${targets.size} addresses probed`,
    );

    took('readable files');

    // Issue 15 (2): what the public routes say without a key.
    record(
      C.publicRoutes,
      await probePublicRoutes(intruder, url, facts, options.model ?? 'mock-model'),
    );

    took('public routes');

    // Issue 15 (1): the es CLI's admin request, sent to a squatter, replayed.
    const keyFile = join(logDir, 'other-user-admin-key');
    writeFileSync(keyFile, `${adminKey}\n`, { mode: 0o600 });
    const cli = await esCliToSquatter(intruder, keyFile);
    notes.push(cli.note);
    // Nothing sent is no proof: the attack did not happen (the CLI did not start in time).
    record(C.cliMissed, cli.requests.length > 0 ? [] : [cli.note]);
    record(C.cliKeys, recordedSecrets('the es CLI sent the squatter', cli.requests, secrets));
    record(C.cliReplay, await replayFindings(intruder, url, cli.requests, secrets));

    took('es CLI to a squatter');

    // Issue 15 (1): a squatter on the scheduler's worker port (where the workers report)
    // while it restarts.
    const squatMs = options.squatMs ?? 5_000;
    const serving = new Set(
      status.deployments.flatMap((d) =>
        d.workers.filter((w) => w.state === 'ready').map((w) => w.jobId),
      ),
    );
    const workersBefore = new Map([...serving].map((id) => [id, workerPids(id)]));
    const squat = intruder.run(
      'squat',
      {
        host: '127.0.0.1',
        port: ctx.scheduler.workerPort,
        bindWithinMs: 15_000,
        holdMs: squatMs,
        status: 409,
        maxBodyBytes: 65_536,
      },
      squatMs + 45_000,
    );
    const stopAt = Date.now();
    await ctx.scheduler.kill('SIGKILL');
    took('scheduler SIGKILL');
    const squatted = await squat;
    took('squatter');
    await ctx.scheduler.restart();
    took('scheduler restart');
    const servingAt = Date.now();
    for (const r of inWindow(ctx.load.records, stopAt, servingAt)) excused.add(r.id);
    if (!squatted.bound) {
      throw new Error(`the squatter could not bind the scheduler's worker port: ${squatted.error}`);
    }
    const recorded = squatted.requests;
    const fromWorkers = recorded.filter((r) => r.path.startsWith('/api/v1/workers'));
    notes.push(
      `squatter held the worker port 127.0.0.1:${ctx.scheduler.workerPort} ${squatted.releasedAt - squatted.boundAt} ms (${squatted.boundAt - stopAt} ms after the kill): ${recorded.length} requests, ${fromWorkers.length} of the worker protocol (${[...new Set(fromWorkers.map((r) => r.path))].slice(0, 6).join(', ')})`,
    );
    record(C.squatKeys, recordedSecrets('the squatter recorded', recorded, secrets));
    const talked = jobsThatSent(serving, recorded);
    record(
      C.squatMissed,
      talked.length > 0
        ? []
        : [`none of the jobs ${[...serving].join(', ')} sent the squatter a request`],
    );

    // The restarted scheduler: the same jobs serve again (within 20 s), and no replay passes.
    const readyJobs = async () =>
      new Set(
        (
          (await adminStatus(ctx.scheduler.url, adminKey).catch(() => undefined))?.deployments ?? []
        ).flatMap((d) => d.workers.filter((w) => w.state === 'ready').map((w) => w.jobId)),
      );
    let ready = await readyJobs();
    for (const deadline = Date.now() + 20_000; Date.now() < deadline; ready = await readyJobs()) {
      if ([...serving].every((id) => ready.has(id))) break;
      await sleep(500);
    }
    took('workers back');
    // The worker protocol's and the admin API's requests: clients' chats need no credential here.
    const protocol = recorded.filter((r) => r.path.startsWith('/api/'));
    record(
      C.squatReplay,
      await replayFindings(intruder, ctx.scheduler.workerUrl, protocol, secrets),
    );
    record(
      C.squatForged,
      await replayFindings(
        intruder,
        ctx.scheduler.workerUrl,
        forgedRegistrations(recorded, options.model ?? 'mock-model'),
        secrets,
      ),
    );
    record(C.workersExited, exitedWorkers(workersBefore, ready));
    record(C.workersSilent, silentWorkers(logDir, talked));
    took('replays and logs');
  } finally {
    for (const id of excused) ctx.excused.add(id);
    if (options.intruder === undefined) intruder.remove();
  }
  let capacityMs: number | undefined;
  try {
    capacityMs =
      (await waitForCapacity(
        () => ctx.scheduler.controlUrl,
        ctx.target,
        ctx.capacityTimeoutMs,
        1_000,
      )) - faultAt;
  } catch (error) {
    notes.push((error as Error).message);
  }
  took('capacity back');
  notes.push(`took: ${timings.join(', ')}`);
  checks[capacityCheck(ctx.capacityTimeoutMs)] = capacityMs === undefined ? 1 : 0;
  const end = Date.now();
  await ctx.load.settled(end);
  const requests = inWindow(ctx.load.records, faultAt, end).filter((r) => !excused.has(r.id));
  if (excused.size > 0) {
    notes.push(`${excused.size} requests excused: they met the squatter or the stopped scheduler`);
  }
  const result: FaultResult = {
    fault: OTHER_USER_FAULT,
    requests: summarize(requests),
    detectionMs: [],
    checks,
    notes,
    window: { from: faultAt, to: end },
    excused: [...excused],
    run: 'main',
  };
  if (capacityMs !== undefined) result.capacityMs = capacityMs;
  ctx.log?.(`${OTHER_USER_FAULT}: ${JSON.stringify(result)}`);
  return result;
}
