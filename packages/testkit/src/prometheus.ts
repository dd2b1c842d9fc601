/**
 * Sum of the samples of metric `name` whose labels include `labels`, in Prometheus text
 * exposition (what a scheduler's `/metrics` answers). 0 when none matches.
 * @example
 * metric(await (await fetch(`${url}/metrics`)).text(), 'es_requests_total', { status: '200' });
 */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const found = new Map<string, string>();
    for (const pair of (m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      found.set(pair[1] ?? '', pair[2] ?? '');
    }
    if (Object.entries(labels).every(([k, v]) => found.get(k) === v)) sum += Number(m[4]);
  }
  return sum;
}
