/**
 * The dashboard in a real browser: Debian's headless Chromium driven by playwright-core
 * against the in-process scheduler (local provider, real workers, mock engines). The page
 * asks for the admin key, shows the workers, and updates when a node is preempted; a stream
 * its engine cuts shows as an error of its worker and in errors/s. Saves
 * the screenshot the README shows (packages/admin/docs/dashboard.png, refreshed with
 * ES_UPDATE_SCREENSHOT=1).
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI, { APIError } from 'openai';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminStatus,
  readyWorkers,
  startTestScheduler,
  streamChat,
  until,
  type TestScheduler,
} from './harness.js';

// The callbacks below run in the page; the repo compiles without the DOM lib, so this
// declares the little of it they use.
interface PageElement {
  textContent: string | null;
  getAttribute(name: string): string | null;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement> & { length: number };
};

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = fileURLToPath(new URL('../docs/dashboard.png', import.meta.url));

let s: TestScheduler;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} missing: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  }
  s = await startTestScheduler({ maxNodes: 2, sampleIntervalMs: 1_000 });
  await until(readyWorkers(s, 4), '4 ready workers');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}, 90_000);

afterAll(async () => {
  await browser?.close();
  await s?.close();
});

describe('dashboard in headless Chromium', () => {
  it('asks for the key, shows the workers and follows a preemption', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const login = await page.goto(`${s.url}/dashboard`);
    expect(login?.status()).toBe(401);
    await expect(page.locator('input[name=key]').count()).resolves.toBe(1);
    const wrong = await page.goto(`${s.url}/dashboard?key=wrong`);
    expect(wrong?.status()).toBe(401);

    // The key once in the URL, then a cookie: the address bar ends up without it.
    await page.goto(`${s.url}/dashboard?key=${encodeURIComponent(s.adminKey)}`);
    expect(new URL(page.url()).search).toBe('');
    await page.waitForFunction(
      () => document.querySelectorAll('.worker.ready').length === 4,
      null,
      {
        timeout: 15_000,
      },
    );
    const shown = await page.$$eval('.worker.ready', (els) =>
      els.map((e) => e.getAttribute('data-worker')),
    );
    expect(shown.sort()).toEqual(readyWorkers(s, 4)());
    expect(await page.locator('#deployments').innerText()).toMatch(/mock\s+4\/4\s+2\s+2/);
    // The cookie reads; it does not act.
    const stop = await page.evaluate(async () => {
      const res = await fetch('/api/v1/admin/stop', { method: 'POST', body: '{}' });
      return res.status;
    });
    expect(stop).toBe(401);

    // Traffic for the charts.
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    for (let i = 0; i < 3; i++) {
      await Promise.all(
        Array.from({ length: 4 }, (_, j) =>
          client.chat.completions.create({
            model: 'mock-model',
            messages: [{ role: 'user', content: `chart ${i} ${j}` }],
            max_tokens: 8,
          }),
        ),
      );
      await new Promise((r) => setTimeout(r, 700));
    }
    // The TTFB chart draws only samples that had requests: it shows the traffic.
    await page.waitForFunction(() => document.querySelector('#c-ttfb path') !== null, null, {
      timeout: 15_000,
    });
    expect(await page.locator('#v-tps').innerText()).toMatch(/^\d+(\.\d)? \(1 min\)$/);

    const victim = s.registry.workers('mock').find((w) => w.state === 'ready');
    expect(victim).toBeDefined();
    const victimWorkers = s.registry
      .workers('mock')
      .filter((w) => w.jobId === victim?.jobId)
      .map((w) => w.id);
    expect(s.local?.preempt(victim?.jobId ?? '')).toBe(true);

    // The timeline shows the preemption and the cards lose the preempted node's workers.
    await page.waitForFunction(
      (jobId) =>
        [...document.querySelectorAll('.event.t-preempted')].some((e) =>
          e.textContent?.includes(jobId),
        ),
      victim?.jobId ?? '',
      { timeout: 20_000 },
    );
    await page.waitForFunction(
      (ids) => ids.every((id) => !document.querySelector(`.worker.ready[data-worker="${id}"]`)),
      victimWorkers,
      { timeout: 20_000 },
    );
    // Then the replacement comes up and the page shows four ready workers again.
    await page.waitForFunction(
      (ids) => {
        const ready = [...document.querySelectorAll('.worker.ready')].map((e) =>
          e.getAttribute('data-worker'),
        );
        return ready.length === 4 && ready.every((id) => !ids.includes(id ?? ''));
      },
      victimWorkers,
      { timeout: 30_000 },
    );
    expect(await page.locator('#events').innerText()).toMatch(/replaced/);

    // The README's picture is refreshed on request only, so a test run leaves the tree clean.
    const target =
      process.env.ES_UPDATE_SCREENSHOT === '1' || !existsSync(SCREENSHOT)
        ? SCREENSHOT
        : join(tmpdir(), `es-dashboard-${process.pid}.png`);
    mkdirSync(dirname(target), { recursive: true });
    await page.screenshot({ path: target, fullPage: true });
    expect(statSync(target).size).toBeGreaterThan(10_000);
  }, 120_000);

  it('shows a stream its engine cut as an error of its worker and in errors/s', async () => {
    const cutting = await startTestScheduler({
      maxNodes: 1,
      nodes: 1,
      sampleIntervalMs: 1_000,
      engineExtraArgs: '--die-mid-stream 2',
    });
    try {
      await until(readyWorkers(cutting, 2), '2 ready workers');
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      await page.goto(`${cutting.url}/dashboard?key=${encodeURIComponent(cutting.adminKey)}`);
      await page.waitForFunction(() => document.querySelectorAll('.worker.ready').length === 2);
      const { error } = await streamChat(cutting, 'a long story');
      expect(error).toBeInstanceOf(APIError);

      const workers = (await adminStatus(cutting)).deployments[0]?.workers ?? [];
      const cut = workers.find((w) => w.requestErrors === 1);
      expect(cut).toBeDefined();
      await page.waitForFunction(
        (id) =>
          document.querySelector(`.worker[data-worker="${id}"] .errors.some`)?.textContent ===
          '1 error',
        cut?.id ?? '',
        { timeout: 15_000 },
      );
      expect(await page.locator(`.worker[data-worker="${cut?.id ?? ''}"]`).innerText()).toMatch(
        /0 served · 1 error$/,
      );
      // The other worker's card says it had none, without the emphasis.
      expect(await page.locator('.worker .errors:not(.some)').allInnerTexts()).toEqual([
        '0 errors',
      ]);
      await page.waitForFunction(
        () => document.querySelector('#v-eps')?.textContent === '1 in 1 min',
        null,
        { timeout: 15_000 },
      );
      await page.close();
    } finally {
      await cutting.close();
    }
  }, 90_000);
});
