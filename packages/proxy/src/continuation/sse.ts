/**
 * Splits a server-sent-event byte stream into the `data:` payloads of its events. Engines
 * (vLLM, SGLang) send one `data: <json>` line per event, events separated by a blank line;
 * a chunk may end anywhere, even inside a multi-byte character, so bytes are kept until an
 * event is whole.
 */
export class SseSplitter {
  private pending: Buffer | undefined;

  /** Feed bytes; returns the payloads of the events completed by them, in order. */
  push(chunk: Buffer): string[] {
    const data = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    const payloads: string[] = [];
    let start = 0;
    for (;;) {
      const end = data.indexOf('\n\n', start, 'latin1');
      if (end < 0) break;
      const payload = eventData(data.toString('utf8', start, end));
      if (payload !== undefined) payloads.push(payload);
      start = end + 2;
    }
    this.pending = start >= data.length ? undefined : data.subarray(start);
    return payloads;
  }

  /** Bytes of an event not yet completed by a blank line. */
  get buffered(): number {
    return this.pending?.length ?? 0;
  }
}

/** The `data` of one event (its `data:` lines joined by newlines); undefined without any. */
function eventData(event: string): string | undefined {
  // The engines' form, one `data: ` line: no split.
  if (event.startsWith('data: ') && !event.includes('\n', 6)) {
    return event.endsWith('\r') ? event.slice(6, -1) : event.slice(6);
  }
  let data: string | undefined;
  for (const raw of event.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (!line.startsWith('data:')) continue;
    const value = line.charCodeAt(5) === 0x20 ? line.slice(6) : line.slice(5);
    data = data === undefined ? value : `${data}\n${value}`;
  }
  return data;
}
