// The status page in a real browser (Debian's chromium through playwright-core; no browser
// download): it loads without console errors, every panel fills, its numbers are the /metrics
// values, an upstream taken down turns red, and it fits. Screenshots go to test/artifacts/.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { type DemoProcess, eventually, getText, REPO_ROOT, sleep, spawnAgent, spawnDemo, startServer, tempDir } from '../helpers.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const ARTIFACTS = join(REPO_ROOT, 'test/artifacts');

async function openPage(browser: Browser, url: string, viewport = { width: 1280, height: 800 }, colorScheme: 'light' | 'dark' = 'light') {
  const page = await browser.newPage({ viewport, colorScheme });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  return { page, errors };
}

const sumOf = (body: string, name: string) =>
  body
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

describe('status page in Chromium', { skip: !CHROMIUM && 'no chromium (apt-get install chromium)' }, () => {
  let browser: Browser;
  let demo: DemoProcess | undefined;
  let base: string;

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    // Both listeners on port 0: the demo's default ports may be taken on a shared machine.
    demo = await spawnDemo(['--interval', '1s', '--engines', 'vllm,tgi,sglang']);
    base = demo.base;
    await eventually(async () => (await getText(`${base}/readyz`).catch(() => ({ status: 0 }))).status === 200, 15_000, 'demo ready');
  });

  after(async () => {
    await browser?.close();
    await demo?.stop();
  });

  it('is served with a CSP that allows no inline script and no other origin', async () => {
    const r = await fetch(`${base}/`);
    assert.equal(r.status, 200);
    const csp = r.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'/);
    assert.ok(!csp.includes('unsafe-inline') && !csp.includes('http'), csp);
    assert.ok(!/<script>/.test(await r.text()), 'no inline script');
  });

  it('loads without console errors and every panel has data within two scrape intervals', async () => {
    const { page, errors } = await openPage(browser, `${base}/`);
    const t0 = Date.now();
    await page.waitForFunction(
      () => {
        const filled = [...document.querySelectorAll('.chart')].map((c) => (c as HTMLElement).dataset.filled === 'true');
        return (
          filled.length === 5 &&
          filled.every(Boolean) &&
          document.querySelectorAll('#context [data-bucket]').length > 0 &&
          document.querySelectorAll('#devices tbody tr').length === 2 &&
          document.querySelectorAll('#health dt').length > 3
        );
      },
      undefined,
      { timeout: 8000 },
    );
    const took = Date.now() - t0;
    // Two 1 s intervals, plus room for the stream, the first draw and a loaded 2-core machine.
    assert.ok(took <= 2 * 1000 + 2000, `${took} ms`);
    assert.deepEqual(errors, []);
    await page.screenshot({ path: join(ARTIFACTS, 'status-1280x800-light.png') });
    // Header and the RED row read without scrolling at 1280x800.
    const redBottom = await page.evaluate(() => document.getElementById('red')!.getBoundingClientRect().bottom);
    assert.ok(redBottom <= 800, `RED row ends at ${redBottom}px`);
    await page.close();
  });

  it('shows the /metrics values: active streams and queue depth equal the canonical sums at the same moment', async () => {
    const { page } = await openPage(browser, `${base}/`);
    await page.waitForFunction(() => document.getElementById('active_streams')!.textContent !== '–', undefined, { timeout: 8000 });
    let matched = false;
    for (let i = 0; i < 20 && !matched; i++) {
      const before = await page.evaluate(() => [
        document.getElementById('active_streams')!.textContent,
        document.getElementById('queue_depth')!.textContent,
        document.body.dataset.updated,
      ]);
      const body = (await getText(`${base}/metrics`)).body;
      const after = await page.evaluate(() => [
        document.getElementById('active_streams')!.textContent,
        document.getElementById('queue_depth')!.textContent,
        document.body.dataset.updated,
      ]);
      // Only a reading that did not change while /metrics was fetched counts as the same moment.
      if (before.join() !== after.join()) continue;
      matched =
        Number(before[0]!.replace(/,/g, '')) === sumOf(body, 'inference_active_streams') &&
        Number(before[1]!.replace(/,/g, '')) === sumOf(body, 'inference_queue_depth');
      if (!matched) await sleep(150);
    }
    assert.ok(matched, 'page and /metrics agreed at one moment');
    await page.close();
  });

  it('reads in a dark theme and at a phone width (screenshots in test/artifacts/)', async () => {
    for (const [name, viewport, scheme] of [
      ['1280x800-dark', { width: 1280, height: 800 }, 'dark'],
      ['390x844-phone', { width: 390, height: 844 }, 'light'],
    ] as const) {
      const { page, errors } = await openPage(browser, `${base}/`, viewport, scheme);
      await page.waitForFunction(() => document.querySelectorAll('.chart[data-filled="true"]').length >= 4, undefined, { timeout: 8000 });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `${name}: ${overflow}px wider than the screen`);
      await page.screenshot({ path: join(ARTIFACTS, `status-${name}.png`), fullPage: true });
      assert.deepEqual(errors, []);
      await page.close();
    }
  });

  it('an upstream taken down turns red within one interval', async () => {
    const body = readFileSync(join(REPO_ROOT, 'test/fixtures/vllm/0.11-python/metrics.prom'));
    const engine = await startServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(body));
    const agent = await spawnAgent(['--upstream', `vllm=${engine.url}/metrics`, '--interval', '1s']);
    try {
      const { page } = await openPage(browser, `${agent.base}/`);
      await page.waitForSelector('#upstreams tr[data-state="up"]', { timeout: 8000 });
      await engine.close();
      const t0 = Date.now();
      await page.waitForSelector('#upstreams tr[data-state="down"] td.bad', { timeout: 5000 });
      const took = Date.now() - t0;
      // One scrape interval (1 s) until the next scrape fails; the stream pushes that document at
      // once. 1 s more for the cycle itself, the push and the redraw on a loaded 2-core machine
      // (1.69 s was seen once in CI under Node 24).
      assert.ok(took <= 1000 + 1000, `${took} ms`);
      const color = await page.evaluate(() => getComputedStyle(document.querySelector('#upstreams tr[data-state="down"] td.bad')!).color);
      assert.match(color, /rgb\((2\d\d|1\d\d), \d{1,2}, \d{1,2}\)/, `red, got ${color}`);
      await page.screenshot({ path: join(ARTIFACTS, 'status-upstream-down.png') });
      await page.close();
    } finally {
      await agent.stop();
    }
  });
});

describe('status stream', () => {
  it('pushes a document after each cycle, and refuses the stream past the 16th (503, counted)', async () => {
    const body = readFileSync(join(REPO_ROOT, 'test/fixtures/tgi/3.3/metrics.prom'));
    const engine = await startServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(body));
    const agent = await spawnAgent(['--upstream', `tgi=${engine.url}/metrics`, '--model', 'm', '--interval', '300ms']);
    const ac = new AbortController();
    try {
      const open = await Promise.all(Array.from({ length: 16 }, () => fetch(`${agent.base}/api/v1/status/stream`, { signal: ac.signal })));
      assert.ok(open.every((r) => r.status === 200 && r.headers.get('content-type')?.startsWith('text/event-stream')));
      const extra = await fetch(`${agent.base}/api/v1/status/stream`);
      assert.equal(extra.status, 503);
      // Two events arrive on one stream within a few intervals: the first at once, then one per cycle.
      const reader = open[0]!.body!.getReader();
      let text = '';
      const t0 = Date.now();
      while ((text.match(/\ndata: |^data: /g) ?? []).length < 3 && Date.now() - t0 < 5000) text += new TextDecoder().decode((await reader.read()).value);
      const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
      assert.ok(events.length >= 3, `${events.length} events`);
      assert.ok(events.every((e) => Array.isArray(JSON.parse(e.slice(6)).upstreams)));
      const metrics = (await getText(`${agent.base}/metrics`)).body;
      assert.match(metrics, /\ninfertel_errors_total\{code="status_streams_full"\} 1\n/);
    } finally {
      ac.abort();
      await agent.stop();
      await engine.close();
    }
  });
});

describe('status page off switch', () => {
  it('ui.enabled: false serves neither the page nor its data', async () => {
    const file = join(tempDir('infertel-ui-'), 'ui-off.yaml');
    writeFileSync(file, 'ui:\n  enabled: false\n');
    const agent = await spawnAgent(['--config', file]);
    try {
      assert.equal((await getText(`${agent.base}/`)).status, 404);
      assert.equal((await getText(`${agent.base}/api/v1/status`)).status, 404);
      assert.equal((await getText(`${agent.base}/metrics`)).status, 200);
    } finally {
      await agent.stop();
    }
  });
});
