import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  parseDuration,
  parseJobState,
  parseSbatchOutput,
  parseSlurmTime,
  parseSqueue,
  SQUEUE_FORMAT,
} from '../src/index.js';

const fixture = (name: string) => readFile(join(import.meta.dirname, 'fixtures', name), 'utf8');
const t = (s: string) => new Date(s).getTime(); // local time, as squeue prints it

describe('parseSqueue on real dev-cluster output', () => {
  it('reads running, requeued, pending, cancelled and completed jobs', async () => {
    const jobs = parseSqueue(await fixture('squeue-mixed.txt'));
    expect(jobs.map((j) => j.id)).toEqual(['7', '14', '13', '6', '9', '12', '8', '10', '11']);
    const byId = new Map(jobs.map((j) => [j.id, j]));
    // Preempted by a `high` job: pending again with the same id, one restart.
    expect(byId.get('9')).toEqual({
      id: '9',
      name: 'fx-run',
      comment: 'fx-1',
      state: 'PENDING',
      reason: 'BeginTime',
      nodes: '',
      restartCount: 1,
      timeLeftSeconds: 90 * 60,
      startTime: t('2026-11-29T03:33:06'),
      submitTime: t('2026-11-29T03:32:55'),
    });
    expect(byId.get('12')).toMatchObject({
      state: 'PENDING',
      reason: 'Resources',
      comment: 'fx-pend',
    });
    expect(byId.get('13')).toMatchObject({
      state: 'CANCELLED',
      reason: 'Priority',
      timeLeftSeconds: ((24 + 2) * 60 + 4) * 60,
    });
    expect(byId.get('6')).toMatchObject({
      state: 'COMPLETED',
      reason: '',
      comment: '',
      restartCount: 1,
    });
    expect(byId.get('7')).not.toHaveProperty('timeLeftSeconds');
    // Long names and comments with spaces, commas and pipes arrive whole.
    expect(byId.get('8')).toMatchObject({
      name: 'es-very-long-job-name-for-testing-truncation-abcdefghijkl',
      comment: 'tag with spaces, commas|pipes 0123456789abcdefghij',
      state: 'RUNNING',
      nodes: 'gpu1',
      timeLeftSeconds: 29 * 60 + 46,
    });
  });

  it('skips lines that are not job rows and reads an empty queue', () => {
    expect(parseSqueue('')).toEqual([]);
    expect(parseSqueue('squeue: warning: something\n\n')).toEqual([]);
  });

  it('asks squeue for unpadded, untruncated, separator-terminated fields', () => {
    expect(SQUEUE_FORMAT).toBe(
      'JobID:0\x1f,State:0\x1f,Reason:0\x1f,NodeList:0\x1f,Name:0\x1f,Comment:0\x1f,TimeLeft:0\x1f,StartTime:0\x1f,SubmitTime:0\x1f,RestartCnt:0\x1f',
    );
  });
});

describe('field parsers', () => {
  it.each([
    ['0:05', 5],
    ['29:46', 29 * 60 + 46],
    ['1:30:00', 5400],
    ['1-02:04:00', 26 * 3600 + 240],
    ['2-03', 51 * 3600],
    ['15', 900],
    ['UNLIMITED', undefined],
    ['INVALID', undefined],
    ['NOT_SET', undefined],
    ['N/A', undefined],
  ])('parseDuration(%j) = %j', (input, seconds) => {
    expect(parseDuration(input)).toBe(seconds);
  });

  it.each([
    ['2026-11-29T03:32:21', t('2026-11-29T03:32:21')],
    ['N/A', undefined],
    ['Unknown', undefined],
    ['None', undefined],
  ])('parseSlurmTime(%j)', (input, ms) => {
    expect(parseSlurmTime(input)).toBe(ms);
  });

  it.each([
    ['RUNNING', 'RUNNING'],
    ['PENDING', 'PENDING'],
    ['CANCELLED by 0', 'CANCELLED'],
    ['OUT_OF_MEMORY', 'OUT_OF_MEMORY'],
    ['running', 'RUNNING'],
    ['SOMETHING_NEW', 'UNKNOWN'],
  ])('parseJobState(%j) = %s', (input, state) => {
    expect(parseJobState(input)).toBe(state);
  });

  it.each([
    ['12345\n', '12345'],
    ['12345;cluster-a\n', '12345'],
    ['sbatch: warning: x\n77\n', '77'],
    ['', undefined],
    ['Submitted batch job 5\n', undefined],
  ])('parseSbatchOutput(%j) = %j', (input, id) => {
    expect(parseSbatchOutput(input)).toBe(id);
  });
});
