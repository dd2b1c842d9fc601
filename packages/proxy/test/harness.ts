import { startFakeEngine } from './fake-engine.js';
import type { FakeEngine } from './fake-engine.js';
import type { StaticPool } from './static-pool.js';

/** Start `count` fake engines as workers `w0..` of `deployment`, closed by `cleanups`. */
export async function addFakeWorkers(
  pool: StaticPool,
  deployment: string,
  count: number,
  cleanups: (() => Promise<void>)[],
): Promise<FakeEngine[]> {
  const fakes: FakeEngine[] = [];
  for (let i = 0; i < count; i++) {
    const fake = await startFakeEngine(`w${i}`);
    cleanups.push(() => fake.close());
    fakes.push(fake);
    pool.add({ id: `w${i}`, deployment, baseUrl: fake.url });
  }
  return fakes;
}

/** Poll `check` until it holds; throws after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
