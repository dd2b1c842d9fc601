/** Renders the per-fault figures of a chaos run as the Markdown of `reports/reliability.md`. */
import { median, type RequestSummary } from './checker.js';

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
}

const ms = (value: number | undefined): string =>
  value === undefined
    ? '—'
    : value >= 10_000
      ? `${(value / 1000).toFixed(1)} s`
      : `${Math.round(value)} ms`;

/**
 * The report: one table row per fault, then each fault's promise checks.
 * @example
 * writeFileSync('reports/reliability.md', renderReport(results, { profile: 'long' }));
 */
export function renderReport(
  results: readonly FaultResult[],
  context: Record<string, string>,
): string {
  const lines = [
    '# Reliability report',
    '',
    ...Object.entries(context).map(([k, v]) => `- ${k}: ${v}`),
    '',
    '| Fault | Sent | Succeeded | Retried | Errored cleanly | Lost | Detection median | Detection max | Capacity restored |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of results) {
    const q = r.requests;
    const max = r.detectionMs.length > 0 ? Math.max(...r.detectionMs) : undefined;
    lines.push(
      `| ${r.fault} | ${q.sent} | ${q.succeeded} | ${q.retried} | ${q.erroredCleanly} | ${q.lost} | ${ms(median(r.detectionMs))} | ${ms(max)} | ${ms(r.capacityMs)} |`,
    );
  }
  lines.push('', '## Promise checks (violations; every figure must be 0)', '');
  for (const r of results) {
    const checks = Object.entries(r.checks)
      .map(([name, n]) => `${name} ${n}${n === 0 ? '' : ' ✗'}`)
      .join(', ');
    lines.push(`- **${r.fault}**: ${checks}`);
    for (const note of r.notes ?? []) lines.push(`  - ${note}`);
  }
  return `${lines.join('\n')}\n`;
}
