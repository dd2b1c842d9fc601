import { describe, expect, it } from 'vitest';
import type { ObservedJob } from '../src/index.js';
import { readList } from '../src/reconcile/list.js';
import {
  DEFAULT_RECONCILE_OPTIONS,
  initialReconcilerState,
  type ReconcilerState,
  type SubmissionRecord,
} from '../src/reconcile/state.js';
import { startTick } from '../src/reconcile/tick.js';
import { deployment } from './helpers.js';

const LIST_STARTED = 5_000;

function listed(id: string, tag: string, name = 'es-t-m'): ObservedJob {
  return { id, name, tag, state: 'PENDING', reason: 'Priority', nodes: '', restartCount: 0 };
}

/** Reads `list` (started at `LIST_STARTED`) with one remembered submission `s`. */
function read(submission: Partial<SubmissionRecord>, list: ObservedJob[]) {
  const state: ReconcilerState = {
    ...initialReconcilerState(),
    submissions: { s: { tag: 's', deployment: 'm', startedAt: 1_000, ...submission } },
  };
  const tick = startTick({
    now: LIST_STARTED + 100,
    deployments: [deployment('m')],
    observed: list,
    observedAt: LIST_STARTED,
    registry: { jobs: [], workers: [] },
    state,
    options: { ...DEFAULT_RECONCILE_OPTIONS, schedulerId: 't' },
  });
  return readList(tick, list);
}

describe('readList: a submission is resolved by the first list that started after it settled', () => {
  it.each([
    { case: 'in flight, not listed', sub: {}, list: [], resolved: false },
    { case: 'in flight, its tag listed', sub: {}, list: [listed('7', 's')], resolved: true },
    {
      case: 'settled before the list started, not listed (it failed or left)',
      sub: { settledAt: LIST_STARTED - 1, jobId: '7' },
      list: [],
      resolved: true,
    },
    {
      case: 'settled as the list started, not listed yet',
      sub: { settledAt: LIST_STARTED, jobId: '7' },
      list: [],
      resolved: false,
    },
    {
      case: 'settled after the list started, listed by its job id without the tag',
      sub: { settledAt: LIST_STARTED + 50, jobId: '7' },
      list: [listed('7', '')],
      resolved: true,
    },
    {
      case: 'ambiguous, settled after the list started, not listed',
      sub: { settledAt: LIST_STARTED + 50, ambiguous: true },
      list: [],
      resolved: false,
    },
    {
      case: 'in flight, its tag listed under another name (not ours)',
      sub: {},
      list: [listed('7', 's', 'es-other-m')],
      resolved: false,
    },
  ])('$case', ({ sub, list, resolved }) => {
    const tick = read(sub, list);
    expect(tick.next.submissions['s'] === undefined).toBe(resolved);
  });

  it('keeps only jobs of its deployments, and notes the list in the state', () => {
    const tick = read({}, [listed('1', 'a'), listed('2', 'b', 'es-u-m'), listed('3', '')]);
    expect([...tick.observed.keys()]).toEqual(['1', '3']);
    expect(tick.observed.get('1')?.deployment).toBe('m');
    expect(tick.firstList).toBe(true);
    expect(tick.next.lastListAt).toBe(LIST_STARTED);
    expect(tick.next.listFailures).toBe(0);
  });
});
