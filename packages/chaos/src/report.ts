/** Renders the per-fault figures of a chaos run as the Markdown of `reports/reliability.md`. */
import { median, type RequestSummary } from './checker.js';
import type { History } from './history.js';
import { SCENARIOS } from './scenario-registry.js';

/** Figures of one injected fault. */
export interface FaultResult {
  fault: string;
  requests: RequestSummary;
  /** Fault → first scheduler event about it, ms, one per injection. */
  detectionMs: number[];
  /** Fault → ready capacity back at its target, ms; undefined when it never came back. */
  capacityMs?: number;
  /** Promise checks: name → violations (0 is kept). */
  checks: Record<string, number>;
  notes?: string[];
  /** The judged window, ms since epoch. */
  window?: { from: number; to: number };
  /** Requests the fault excused (ids), not judged. */
  excused?: string[];
  /** Name of the history this result was judged from (`main`, or its own scheduler's). */
  run?: string;
  /**
   * The history of a scenario that ran its own scheduler (kept with the report); scenarios
   * of the shared scheduler are judged from the run's main history.
   */
  history?: History;
}

/** The checks of a result that were broken, as `name (n)`. */
export function brokenChecks(result: FaultResult): string[] {
  return Object.entries(result.checks)
    .filter(([, n]) => n > 0)
    .map(([name, n]) => `${name} (${n})`);
}

const STREAMS_CUT = 'streams cut';
const RESTARTED = 'generations restarted from scratch';

const ms = (value: number | undefined): string =>
  value === undefined
    ? '—'
    : value >= 10_000
      ? `${(value / 1000).toFixed(1)} s`
      : `${Math.round(value)} ms`;

/** "never" when the capacity check failed, "—" when capacity was not measured. */
function capacity(r: FaultResult): string {
  if (r.capacityMs !== undefined) return ms(r.capacityMs);
  const never = Object.entries(r.checks).some(
    ([name, n]) => name.startsWith('capacity not restored') && n > 0,
  );
  return never ? 'never ✗' : '—';
}

/**
 * The report: the run's provenance (`context`: commit, date, load, command ...), one table
 * row per fault, then each fault's promise checks.
 * @example
 * writeFileSync('reports/reliability.md', renderReport(results, { Commit: 'abc1234' }));
 */
export function renderReport(
  results: readonly FaultResult[],
  context: Record<string, string>,
): string {
  const broken = results.filter((r) => brokenChecks(r).length > 0 || r.requests.lost > 0);
  const lines = [
    '# Reliability report',
    '',
    '<!-- Generated whole by scripts/chaos from one run; never edit by hand. -->',
    '',
    ...Object.entries(context).map(([k, v]) => `- ${k}: ${v}`),
    `- Verdict: ${broken.length === 0 ? 'every promise kept' : `${broken.length} fault(s) broke a promise: ${broken.map((r) => r.fault).join(', ')}`}`,
    '',
    '| Fault | Sent | Succeeded | Retried | Errored cleanly | Lost | Detection median | Detection max | Capacity restored |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of results) {
    const q = r.requests;
    const max = r.detectionMs.length > 0 ? Math.max(...r.detectionMs) : undefined;
    lines.push(
      `| ${r.fault} | ${q.sent} | ${q.succeeded} | ${q.retried} | ${q.erroredCleanly} | ${q.lost} | ${ms(median(r.detectionMs))} | ${ms(max)} | ${capacity(r)} |`,
    );
  }
  // Generations that must survive their worker: the two figures side by side, per row that
  // judges them (refusals are listed by reason in each row's notes below).
  const cutRows = results.filter(
    (r) => r.checks[STREAMS_CUT] !== undefined || r.checks[RESTARTED] !== undefined,
  );
  if (cutRows.length > 0) {
    lines.push(
      '',
      '## Generations cut by faults (every figure must be 0; refusals are listed in the notes)',
      '',
      `| Fault | ${STREAMS_CUT} | ${RESTARTED} |`,
      '| --- | ---: | ---: |',
    );
    const figure = (n: number | undefined) =>
      n === undefined ? '—' : `${n}${n === 0 ? '' : ' ✗'}`;
    for (const r of cutRows) {
      lines.push(
        `| ${r.fault} | ${figure(r.checks[STREAMS_CUT])} | ${figure(r.checks[RESTARTED])} |`,
      );
    }
  }
  // Scenarios with a section of their own (another user of the cluster: one row per attack,
  // its findings in the notes).
  const sections = SCENARIOS.flatMap((s) => (s.section === undefined ? [] : [s.section]));
  for (const r of results) {
    const section = sections.find((s) => s.fault === r.fault);
    if (section === undefined) continue;
    lines.push(
      '',
      `## ${section.heading}`,
      '',
      '| Check | Violations |',
      '| --- | ---: |',
      ...Object.entries(r.checks).map(([name, n]) => `| ${name} | ${n}${n === 0 ? '' : ' ✗'} |`),
    );
  }
  lines.push(...promiseChecks(results));
  return `${lines.join('\n')}\n`;
}

/** The "Promise checks" section: each result's checks (✗ when broken) and its notes. */
export function promiseChecks(results: readonly FaultResult[]): string[] {
  const lines = ['', '## Promise checks (violations; every figure must be 0)', ''];
  for (const r of results) {
    const checks = Object.entries(r.checks)
      .map(([name, n]) => `${name} ${n}${n === 0 ? '' : ' ✗'}`)
      .join(', ');
    lines.push(`- **${r.fault}**: ${checks}`);
    for (const note of r.notes ?? []) lines.push(`  - ${note}`);
  }
  return lines;
}
