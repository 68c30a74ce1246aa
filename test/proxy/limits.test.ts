// Rate limits: the token buckets on a fake clock (table-driven), the headers, and the proxy's 429
// end to end.

import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { validateConfig } from '../../agent/config/load.js';
import { type EdgeRequest, type EdgeTaps, type GpuAddon, loadAddon } from '../../agent/gpu/addon.js';
import { effectiveLimits, MemoryLimiter, openAiDuration, rateLimitHeaders, type TenantLimits } from '../../agent/proxy/limits.js';
import { hashKey } from '../../agent/proxy/tenants.js';
import { ACME_KEY, GLOBEX_KEY, post, startHarness, sumOf } from './harness.js';

const tl = (limits: Partial<TenantLimits['limits']>, shadow = false): TenantLimits => ({
  limits: { requestsPerMinute: undefined, tokensPerMinute: undefined, concurrent: undefined, ...limits },
  shadow,
});

describe('rate limits: buckets', () => {
  it('a burst equal to the per-minute limit passes, the next is refused, and it refills at limit/60 per second', () => {
    let now = 1_000_000;
    const l = new MemoryLimiter(() => now);
    const t = tl({ requestsPerMinute: 60 });
    for (let i = 0; i < 60; i++) assert.equal(l.admit('a', t).allowed, true, `request ${i + 1}`);
    const refused = l.admit('a', t);
    assert.equal(refused.allowed, false);
    assert.equal(refused.refusedBy, 'requests');
    assert.equal(refused.retryAfterSeconds, 1);
    now += 1000; // one second refills 60/60 = 1 request
    assert.equal(l.admit('a', t).allowed, true);
    assert.equal(l.admit('a', t).allowed, false);
    now += 30_000; // half a minute: 30 more, never more than the bucket
    let n = 0;
    while (l.admit('a', t).allowed) n++;
    assert.equal(n, 30);
    assert.equal(l.admit('b', t).allowed, true, 'tenants have their own buckets');
  });

  it('no window boundary lets twice the limit through (unlike a fixed window)', () => {
    let now = 59_999;
    const l = new MemoryLimiter(() => now);
    const t = tl({ requestsPerMinute: 10 });
    let passed = 0;
    for (let i = 0; i < 10; i++) if (l.admit('a', t).allowed) passed++;
    now = 60_001; // a fixed window would reset here
    for (let i = 0; i < 10; i++) if (l.admit('a', t).allowed) passed++;
    assert.equal(passed, 10);
  });

  it('tokens are charged when known: a stream is never cut, and its tokens refuse later requests until refilled', () => {
    let now = 0;
    const l = new MemoryLimiter(() => now);
    const t = tl({ tokensPerMinute: 6000 });
    const first = l.admit('a', t);
    assert.equal(first.allowed, true);
    first.release(9000); // more than the whole budget: 3000 tokens of debt
    const second = l.admit('a', t);
    assert.equal(second.allowed, false);
    assert.equal(second.refusedBy, 'tokens');
    assert.equal(second.retryAfterSeconds, 31, '3000 tokens of debt at 100 a second, then one token');
    now += 31_000;
    assert.equal(l.admit('a', t).allowed, true);
  });

  it('concurrent streams are counted until released; a release twice is one', () => {
    const l = new MemoryLimiter(() => 0);
    const t = tl({ concurrent: 2 });
    const a = l.admit('a', t);
    const b = l.admit('a', t);
    assert.equal(l.admit('a', t).refusedBy, 'concurrent');
    a.release(undefined);
    a.release(undefined);
    assert.equal(l.admit('a', t).allowed, true);
    b.release(undefined);
  });

  it('a shadow tenant is counted but never refused', () => {
    const l = new MemoryLimiter(() => 0);
    const t = tl({ requestsPerMinute: 1 }, true);
    assert.equal(l.admit('a', t).refusedBy, undefined);
    const over = l.admit('a', t);
    assert.equal(over.allowed, true);
    assert.equal(over.refusedBy, 'requests');
  });

  it('partial limits take the rest from the default, field by field', () => {
    assert.deepEqual(effectiveLimits({ requestsPerMinute: 60 }, { requestsPerMinute: 600, tokensPerMinute: 200_000, concurrent: 32 }), {
      requestsPerMinute: 60,
      tokensPerMinute: 200_000,
      concurrent: 32,
    });
    assert.deepEqual(effectiveLimits(undefined, undefined), { requestsPerMinute: undefined, tokensPerMinute: undefined, concurrent: undefined });
  });

  it('reset headers use OpenAI duration form', () => {
    const rows: Array<[number, string]> = [
      [0, '0ms'],
      [20, '20ms'],
      [999.2, '1000ms'],
      [1000, '1s'],
      [59_001, '1m0s'],
      [360_000, '6m0s'],
      [3_723_000, '1h2m3s'],
    ];
    for (const [ms, want] of rows) assert.equal(openAiDuration(ms), want, String(ms));
    const l = new MemoryLimiter(() => 0);
    const a = l.admit('a', tl({ requestsPerMinute: 60, tokensPerMinute: 1000 }));
    assert.deepEqual(rateLimitHeaders(a), {
      'x-ratelimit-limit-requests': '60',
      'x-ratelimit-remaining-requests': '59',
      'x-ratelimit-reset-requests': '1s',
      'x-ratelimit-limit-tokens': '1000',
      'x-ratelimit-remaining-tokens': '1000',
      'x-ratelimit-reset-tokens': '0ms',
    });
  });

  it('an impossible limit, or a Redis URL that is not redis://, fails at start with the key path', () => {
    assert.throws(() => validateConfig({ rateLimits: { default: { requestsPerMinute: 0 } } }), /rateLimits\.default\.requestsPerMinute: /);
    assert.throws(() => validateConfig({ tenants: [{ name: 'a', keys: [], limits: { concurrent: -1 } }] }), /tenants\[0\]\.limits\.concurrent: /);
    assert.throws(() => validateConfig({ rateLimits: { redis: { url: 'http://127.0.0.1:6379/0' } } }), /rateLimits\.redis\.url: must be a redis:\/\/ URL/);
    assert.equal(validateConfig({ rateLimits: { redis: { url: 'redis://127.0.0.1:6379/0' } } }).rateLimits.redis?.timeout, 25);
  });
});

describe('rate limits: the proxy', () => {
  it('answers 429 in OpenAI shape with Retry-After and x-ratelimit-* headers, counts it, and successes carry the headers', async () => {
    const h = await startHarness({
      rateLimits: { default: { requestsPerMinute: 600 } },
      tenants: [
        { name: 'acme', keys: [(await import('../../agent/proxy/tenants.js')).hashKey(ACME_KEY)], limits: { requestsPerMinute: 3 } },
        { name: 'globex', keys: [(await import('../../agent/proxy/tenants.js')).hashKey(GLOBEX_KEY)], limits: { requestsPerMinute: 1 }, shadow: true },
      ],
    });
    try {
      const send = (key: string) => post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'x' }, { authorization: `Bearer ${key}` });
      const ok = await send(ACME_KEY);
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.get('x-ratelimit-limit-requests'), '3');
      assert.equal(ok.headers.get('x-ratelimit-remaining-requests'), '2');
      await send(ACME_KEY);
      await send(ACME_KEY);
      const before = h.engine.seen.length;
      const refused = await send(ACME_KEY);
      assert.equal(refused.status, 429);
      assert.equal(h.engine.seen.length, before, 'the engine never saw it');
      assert.equal(refused.headers.get('retry-after'), '20');
      assert.equal(refused.headers.get('x-ratelimit-remaining-requests'), '0');
      assert.match(refused.headers.get('x-ratelimit-reset-requests')!, /^(59|60)s$|^1m0s$/);
      const err = JSON.parse(refused.text).error;
      assert.equal(err.code, 'rate_limit_exceeded');
      assert.equal(err.type, 'requests');
      // The shadow tenant goes over its 1/minute but is never refused.
      assert.equal((await send(GLOBEX_KEY)).status, 200);
      assert.equal((await send(GLOBEX_KEY)).status, 200);
      const m = await h.metrics();
      assert.equal(sumOf(m, 'rate_limited_requests_total', { tenant: 'acme', limit: 'requests' }), 1);
      assert.equal(sumOf(m, 'rate_limited_requests_total', { tenant: 'globex', limit: 'requests' }), 1);
      assert.equal(sumOf(m, 'inference_requests_total', { tenant: 'acme', code: '4xx' }), 1);
      assert.ok(sumOf(m, 'rate_limit_remaining_ratio', { tenant: 'acme', limit: 'requests' }) < 0.05);
      const line = h.requestLogs().find((l) => l.code === 429)!;
      assert.equal(line.error, 'rate_limited: requests');
    } finally {
      await h.close();
    }
  });
});

/**
 * Holds the native loop's hand-overs to the agent and passes them on merged, once per `windowMs`:
 * what a busy loop does when several of its turns fall within one hand-over. Undone by the result.
 */
function coalesceHandOvers(addon: GpuAddon, windowMs: number): () => void {
  const start = addon.edgeStart;
  addon.edgeStart = (spec, policy) =>
    start(
      spec,
      policy &&
        (() => {
          let held: Array<[EdgeRequest[], EdgeTaps]> = [];
          const flush = () => {
            const batches = held;
            held = [];
            const index = new Float64Array(batches.reduce((n, [, t]) => n + t.index.length, 0));
            let at = 0;
            for (const [, t] of batches) {
              index.set(t.index, at);
              at += t.index.length;
            }
            policy(
              batches.flatMap(([r]) => r),
              { index, bytes: Buffer.concat(batches.map(([, t]) => t.bytes)), notes: batches.flatMap(([, t]) => t.notes) },
            );
          };
          return (requests: EdgeRequest[], seen: EdgeTaps) => {
            if (held.length === 0) setTimeout(flush, windowMs);
            // Each batch is JS's own (the addon copies into it), so holding it needs no copy.
            held.push([requests, seen]);
          };
        })(),
    );
  return () => {
    addon.edgeStart = start;
  };
}

/** Sends `count` streaming requests on one connection, each as soon as the last answer's final bytes arrive; the status of each. */
async function backToBack(proxy: string, key: string, count: number): Promise<number[]> {
  const url = new URL(proxy);
  const body = JSON.stringify({ model: 'sim-llama', stream: true, messages: [{ role: 'user', content: 'hi' }] });
  const request = `POST /v1/chat/completions HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\nauthorization: Bearer ${key}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  const socket = net.connect(Number(url.port), url.hostname);
  const statuses: number[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let buffered = '';
      socket.on('error', reject);
      socket.on('close', () => reject(new Error(`closed after ${statuses.length} answers`)));
      socket.on('data', (d) => {
        buffered += d;
        for (;;) {
          const head = buffered.indexOf('\r\n\r\n');
          if (head < 0) return;
          const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buffered)?.[1]);
          const length = /\r\ncontent-length: *(\d+)/i.exec(buffered.slice(0, head));
          // A stream ends with the last chunk; a refusal comes whole, with its length.
          const end = length ? head + 4 + Number(length[1]) : buffered.indexOf('\r\n0\r\n\r\n', head) + 7;
          if ((length && buffered.length < end) || (!length && end < 7)) return;
          statuses.push(status);
          buffered = buffered.slice(end);
          if (statuses.length === count) return resolve();
          socket.write(request);
        }
      });
      socket.write(request);
    });
  } finally {
    socket.destroy();
  }
  return statuses;
}

describe('rate limits: concurrency on the native data path', () => {
  it('a client that keeps to its cap is admitted when its next request reaches the agent in one batch with the end of its last', async () => {
    const loaded = loadAddon();
    assert.ok(loaded.ok, 'the addon is built in CI');
    const undo = coalesceHandOvers(loaded.addon, 30);
    const h = await startHarness({ tenants: [{ name: 'acme', keys: [hashKey(ACME_KEY)], limits: { concurrent: 1 } }] }, { ttftMs: 2, itlMs: 1, tokens: 3 });
    try {
      const statuses = await backToBack(h.proxy, ACME_KEY, 12);
      assert.deepEqual(statuses, Array(12).fill(200));
      const m = await h.metrics();
      assert.equal(sumOf(m, 'rate_limited_requests_total', { tenant: 'acme' }), 0);
      assert.equal(sumOf(m, 'inference_requests_total', { tenant: 'acme', code: '2xx' }), 12);
    } finally {
      await h.close();
      undo();
    }
  });
});
