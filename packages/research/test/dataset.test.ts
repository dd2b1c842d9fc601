import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { SAMPLE_QUESTIONS, loadDataset, selectSamples } from '../src/dataset.js';

async function file(name: string, text: string): Promise<string> {
  const path = join(await mkdtemp(join(tmpdir(), 'es-dataset-')), name);
  await writeFile(path, text);
  return path;
}

describe('loadDataset', () => {
  test('"sample" is the built-in set of 20 research questions with stable ids', async () => {
    const items = await loadDataset('sample');
    expect(items).toHaveLength(20);
    expect(items.map((i) => i.question)).toEqual(SAMPLE_QUESTIONS);
    expect(new Set(items.map((i) => i.id)).size).toBe(20);
    expect((await loadDataset('sample'))[3]?.id).toBe(items[3]?.id);
  });

  test('reads JSONL with question/prompt keys, ids and reference answers', async () => {
    const path = await file(
      'q.jsonl',
      '{"id": 7, "question": "A?", "answer": "a"}\n\n{"prompt": "B?"}\n{"qid": "x1", "question": "C?"}\n',
    );
    const items = await loadDataset(path);
    // The dataset's own id is kept as written (the seed format's qid stays a number).
    expect(items[0]).toEqual({ id: '7', sourceId: 7, question: 'A?', reference: 'a' });
    expect(items[2]).toEqual({ id: 'x1', sourceId: 'x1', question: 'C?' });
    expect(items[1]?.question).toBe('B?');
    expect(items[1]?.id).toMatch(/^q-[0-9a-f]{16}$/);
  });

  test('reads JSON arrays of strings and objects with a "data" array', async () => {
    expect(
      (await loadDataset(await file('q.json', '["A?", "B?"]'))).map((i) => i.question),
    ).toEqual(['A?', 'B?']);
    const wrapped = await file('w.json', '{"data": [{"query": "C?"}]}');
    expect((await loadDataset(wrapped))[0]?.question).toBe('C?');
  });

  test.each([
    ['missing.jsonl', null, /no such file; pass "sample" or a \.jsonl\/\.json file/],
    ['bad.jsonl', '{"question": "A?"}\n{oops\n', /line 2: not valid JSON/],
    ['nokey.jsonl', '{"text": "A?"}\n', /entry 1: expected a string or an object with "question"/],
    [
      'dup.jsonl',
      '{"id": "x", "question": "A?"}\n{"id": "x", "question": "B?"}\n',
      /id "x" appears twice/,
    ],
    ['empty.json', '[]', /holds no questions/],
    ['obj.json', '{"rows": []}', /expected an array of questions/],
  ])('rejects %s with a message naming the problem', async (name, text, message) => {
    const path = text === null ? join(tmpdir(), 'es-no-such-dir', name) : await file(name, text);
    await expect(loadDataset(path)).rejects.toMatchObject({
      code: 'dataset_invalid',
      param: 'dataset',
    });
    await expect(loadDataset(path)).rejects.toThrow(message);
  });
});

describe('selectSamples', () => {
  const items = Array.from({ length: 10 }, (_, i) => ({ id: `q${i}`, question: `Q${i}?` }));

  test('takes the first N in order without a seed', () => {
    expect(selectSamples(items, { numSamples: 3 }).map((i) => i.id)).toEqual(['q0', 'q1', 'q2']);
    expect(selectSamples(items, {})).toHaveLength(10);
  });

  test('shuffles reproducibly with a seed, differently for another seed', () => {
    const a = selectSamples(items, { numSamples: 5, seed: 42 }).map((i) => i.id);
    expect(selectSamples(items, { numSamples: 5, seed: 42 }).map((i) => i.id)).toEqual(a);
    expect(selectSamples(items, { numSamples: 5, seed: 43 }).map((i) => i.id)).not.toEqual(a);
    expect(new Set(selectSamples(items, { seed: 42 }).map((i) => i.id)).size).toBe(10);
  });
});
