/**
 * The dashboard in a real browser: Debian's headless Chromium driven by playwright-core
 * against the admin app on a real socket, over a fake pool the test moves (no scheduler, no
 * workers: what the pool does is tested in `@es/pool` and end to end in apps/scheduler).
 * The page asks for the admin key (or takes a one-time login link), shows the workers and the traffic, and follows a
 * preemption and its replacement; a stream its engine cut shows as an error of its worker
 * and in errors/s. Saves the screenshot the README shows (packages/admin/docs/dashboard.png,
 * refreshed with ES_UPDATE_SCREENSHOT=1).
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DataPlaneView } from '@es/client';
import type { ProxyRequestRecord } from '@es/proxy';
import { createAdminApi, createMetrics, type Metrics } from '../src/index.js';
import { createFakePool, scalingStatus, type FakePool } from './fake-pool.js';

// The callbacks below run in the page; the repo compiles without the DOM lib, so this
// declares the little of it they use.
interface PageElement {
  textContent: string | null;
  hidden?: boolean;
  getAttribute(name: string): string | null;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement> & { length: number };
};

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = fileURLToPath(new URL('../docs/dashboard.png', import.meta.url));
const KEY = 'dashboard-test-key';

/** The admin app over a fake pool, served on 127.0.0.1. */
interface Served {
  url: string;
  pool: FakePool;
  metrics: Metrics;
  close(): Promise<void>;
}

async function serveAdmin(dataPlane?: () => DataPlaneView): Promise<Served> {
  const pool = createFakePool();
  const metrics = createMetrics({ sampleIntervalMs: 1_000, defaultMetrics: false });
  const api = createAdminApi({
    operator: pool.operator,
    readModel: pool.readModel,
    events: pool.events,
    metrics,
    logDir: tmpdir(),
    adminKey: KEY,
    queueDepth: () => ({ mock: 0 }),
    ...(dataPlane === undefined ? {} : { dataPlane }),
  });
  const server = serve({ fetch: api.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    pool,
    metrics,
    async close() {
      api.close();
      metrics.close();
      // A page still open polls every second: its connections never go idle.
      (server as unknown as { closeAllConnections(): void }).closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** One finished request of `workerId`, as the proxy records it. */
function request(workerId: string, extra: Partial<ProxyRequestRecord> = {}): ProxyRequestRecord {
  return {
    requestId: `r-${Math.random()}`,
    path: '/v1/chat/completions',
    model: 'mock-model',
    deployment: 'mock',
    workerId,
    stream: true,
    status: 200,
    outcome: 'ok',
    latencyMs: 300,
    ttfbMs: 20,
    queuedMs: 0,
    retries: 0,
    promptTokens: 12,
    completionTokens: 8,
    totalTokens: 20,
    ...extra,
  };
}

/** The page's ready worker cards, sorted. */
const readyCards = async (page: Page) =>
  (
    await page.$$eval('.worker.ready', (els) => els.map((e) => e.getAttribute('data-worker')))
  ).sort();

let browser: Browser;

/** A new page signed in through a one-time login link, as `es dashboard` opens it. */
async function openWithLoginLink(s: Served): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const minted = await fetch(`${s.url}/api/v1/admin/dashboard/login-token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}` },
  });
  const { path } = (await minted.json()) as { path: string };
  await page.goto(`${s.url}${path}`);
  return page;
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} missing: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  }
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
}, 60_000);

afterAll(async () => {
  await browser?.close();
});

describe('dashboard in headless Chromium', () => {
  it('asks for the key, shows the workers and the traffic, and follows a preemption', async () => {
    const s = await serveAdmin();
    const { pool } = s;
    try {
      pool.emit({ type: 'submitted', deployment: 'mock', jobId: '1' });
      pool.emit({ type: 'submitted', deployment: 'mock', jobId: '2' });
      pool.addJob('1', 2, 'ready', { timeLeftSeconds: 3_000 });
      pool.addJob('2', 2, 'ready', { timeLeftSeconds: 3_100 });
      for (const jobId of ['1', '2']) {
        pool.emit({ type: 'running', deployment: 'mock', jobId });
        for (const workerId of [`${jobId}.0.0`, `${jobId}.0.1`]) {
          pool.emit({ type: 'registered', deployment: 'mock', jobId, workerId });
          pool.emit({ type: 'ready', deployment: 'mock', jobId, workerId });
        }
      }
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      const login = await page.goto(`${s.url}/dashboard`);
      expect(login?.status()).toBe(401);
      await expect(page.locator('input[name=key]').count()).resolves.toBe(1);
      // A wrong key typed in the form: the sign-in page again.
      await page.fill('input[name=key]', 'wrong');
      const wrong = await Promise.all([page.waitForNavigation(), page.click('button')]);
      expect(wrong[0]?.status()).toBe(401);

      // The key typed in the form: a session cookie that is not the key.
      await page.fill('input[name=key]', KEY);
      await Promise.all([page.waitForNavigation(), page.click('button')]);
      expect(new URL(page.url()).pathname).toBe('/dashboard');
      const cookies = await page.context().cookies();
      expect(cookies.map((c) => [c.name, c.httpOnly, c.sameSite, c.path])).toEqual([
        ['es_session', true, 'Strict', '/'],
      ]);
      expect(cookies[0]?.value).not.toContain(KEY);
      await page.waitForFunction(() => document.querySelectorAll('.worker.ready').length === 4);
      expect(await readyCards(page)).toEqual(['1.0.0', '1.0.1', '2.0.0', '2.0.1']);
      expect(await page.locator('#deployments').innerText()).toMatch(/mock\s+4\/4\s+2\s+2\s+2/);
      // A deployment that scales with demand shows its target, floor, load and need.
      s.pool.deployments.get('mock')!.scaling = scalingStatus();
      await page.waitForFunction(() =>
        document.querySelector('#deployments')?.textContent?.includes('1 (min 0, load 3.5 → 1)'),
      );
      delete s.pool.deployments.get('mock')!.scaling;
      // The cookie reads; it does not act.
      const stop = await page.evaluate(async () => {
        const res = await fetch('/api/v1/admin/stop', { method: 'POST', body: '{}' });
        return res.status;
      });
      expect(stop).toBe(401);

      // Traffic for the charts: requests finishing over three samples (the proxy records
      // them for the metrics and reports them to the registry, whose served counts show).
      for (let i = 0; i < 3; i++) {
        for (const w of pool.workers) {
          s.metrics.observeRequest(request(w.id));
          w.requestsServed += 1;
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
      // The TTFB chart draws only samples that had requests: it shows the traffic.
      await page.waitForFunction(() => document.querySelector('#c-ttfb path') !== null, null, {
        timeout: 15_000,
      });
      expect(await page.locator('#v-tps').innerText()).toMatch(/^\d+(\.\d)? \(1 min\)$/);

      // Job 1's node is preempted: its workers leave, the timeline says so.
      pool.setWorkers('1', 'gone', 'job left the cluster');
      Object.assign(pool.jobs[0]!, { state: 'PREEMPTED', endedAt: Date.now() });
      pool.emit({ type: 'preempted', deployment: 'mock', jobId: '1', reason: 'PREEMPTED' });
      await page.waitForFunction(
        () =>
          [...document.querySelectorAll('.event.t-preempted')].some((e) =>
            e.textContent?.includes('job 1'),
          ),
        null,
        { timeout: 10_000 },
      );
      await page.waitForFunction(() => document.querySelectorAll('.worker.ready').length === 2);
      expect(await readyCards(page)).toEqual(['2.0.0', '2.0.1']);

      // Its replacement comes up: four ready workers again, none of the preempted ones.
      pool.emit({ type: 'submitted', deployment: 'mock', jobId: '3', reason: 'replacement' });
      pool.emit({ type: 'replaced', deployment: 'mock', jobId: '1', reason: 'by job 3' });
      pool.addJob('3', 2, 'ready', { timeLeftSeconds: 3_600 });
      pool.emit({ type: 'running', deployment: 'mock', jobId: '3' });
      for (const id of ['3.0.0', '3.0.1']) {
        pool.emit({ type: 'registered', deployment: 'mock', jobId: '3', workerId: id });
        pool.emit({ type: 'ready', deployment: 'mock', jobId: '3', workerId: id });
      }
      await page.waitForFunction(() => document.querySelectorAll('.worker.ready').length === 4);
      expect(await readyCards(page)).toEqual(['2.0.0', '2.0.1', '3.0.0', '3.0.1']);
      expect(await page.locator('#events').innerText()).toMatch(/replaced/);

      // The README's picture is refreshed on request only, so a test run leaves the tree clean.
      const target =
        process.env.ES_UPDATE_SCREENSHOT === '1' || !existsSync(SCREENSHOT)
          ? SCREENSHOT
          : join(tmpdir(), `es-dashboard-${process.pid}.png`);
      mkdirSync(dirname(target), { recursive: true });
      await page.screenshot({ path: target, fullPage: true });
      expect(statSync(target).size).toBeGreaterThan(10_000);
      await page.close();
    } finally {
      await s.close();
    }
  }, 60_000);

  it('shows a stream its engine cut as an error of its worker and in errors/s', async () => {
    const s = await serveAdmin();
    try {
      s.pool.addJob('1', 2);
      // The one-time link `es dashboard` prints: the address bar ends up without the token.
      const page = await openWithLoginLink(s);
      expect(new URL(page.url()).search).toBe('');
      await page.waitForFunction(() => document.querySelectorAll('.worker.ready').length === 2);
      // The proxy ended the stream with an error event after the first chunks.
      s.metrics.observeRequest(
        request('1.0.1', {
          outcome: 'mid-stream-failure',
          errorCode: 'upstream_stream_interrupted',
          latencyMs: 120,
        }),
      );
      await page.waitForFunction(
        () =>
          document.querySelector('.worker[data-worker="1.0.1"] .errors.some')?.textContent ===
          '1 error',
        null,
        { timeout: 15_000 },
      );
      expect(await page.locator('.worker[data-worker="1.0.1"]').innerText()).toMatch(
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
      // Sign out: the session ends, the page asks for the key again.
      await Promise.all([page.waitForNavigation(), page.click('#logout')]);
      await expect(page.locator('input[name=key]').count()).resolves.toBe(1);
      const after = await page.evaluate(async () => (await fetch('/api/v1/admin/status')).status);
      expect(after).toBe(401);
      await page.close();
    } finally {
      await s.close();
    }
  }, 60_000);

  it('lists the data-plane processes with their last contact and table version', async () => {
    const view: DataPlaneView = { tableVersion: 9, subscribers: 1, processes: [] };
    const s = await serveAdmin(() => view);
    try {
      s.pool.addJob('1', 1);
      const page = await openWithLoginLink(s);
      await page.waitForFunction(() => document.querySelectorAll('.worker.ready').length === 1);
      // No process reports: no section.
      expect(await page.locator('#data-plane-section').isHidden()).toBe(true);
      view.processes.push({
        id: 'login1:4242',
        host: 'login1',
        pid: 4242,
        listen: 'http://0.0.0.0:8780',
        state: 'silent',
        startedAt: 0,
        lastReportAt: 0,
        lastContactSeconds: 75,
        tableVersion: 7,
        subscribed: false,
        inFlight: 3,
        ejected: ['1.0.0'],
        missedReports: 0,
        droppedRecords: 0,
      });
      await page.waitForFunction(
        () => document.querySelector('#data-plane')?.textContent?.includes('login1:4242'),
        null,
        { timeout: 10_000 },
      );
      expect(await page.locator('#data-plane-section').isVisible()).toBe(true);
      expect(await page.locator('#data-plane').innerText()).toMatch(
        /login1:4242\s+http:\/\/0\.0\.0\.0:8780\s+silent \(unsubscribed\)\s+1m15s ago\s+7\/9\s+3\s+1\.0\.0/,
      );
      await page.close();
    } finally {
      await s.close();
    }
  }, 60_000);
});
