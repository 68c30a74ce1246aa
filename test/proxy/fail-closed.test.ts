// Rate limits failing closed: with the shared backend unreachable (no redis-server at its address)
// and failOpen: false, a request gets 503 and never reaches the engine. Run on both data paths
// (node-path.test.ts imports it again).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { freePort } from '../helpers.js';
import { post, startHarness, sumOf } from './harness.js';

describe('rate limits failing closed', () => {
  it('while Redis is unreachable, failOpen: false answers 503 in the OpenAI error shape, counted', async () => {
    const h = await startHarness({
      rateLimits: { redis: { url: `redis://127.0.0.1:${await freePort()}/0`, timeout: '50ms' }, failOpen: false, default: { requestsPerMinute: 600 } },
    });
    try {
      const r = await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'x' });
      assert.equal(r.status, 503);
      const body = JSON.parse(r.text);
      assert.equal(typeof body.error.message, 'string');
      assert.equal(h.engine.seen.filter((s) => s.url === '/v1/completions').length, 0, 'nothing reached the engine');
      const m = await h.metrics();
      assert.ok(sumOf(m, 'rate_limiter_backend_errors_total', { backend: 'redis' }) >= 1);
      assert.equal(h.requestLogs().at(-1)!.error, 'rate_limiter_unavailable');
    } finally {
      await h.close();
    }
  });
});
