// The inline proxy end to end on loopback: the stand-in engine streams SSE with controlled
// timing, the agent proxies and measures, and the tests read what the client, the engine, the
// metrics and the request log each saw.

import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { REPO_ROOT, eventually, promtoolCheckMetrics, promtoolPath, sleep } from '../helpers.js';
import { ACME_KEY, GLOBEX_KEY, post, startHarness, sumOf, type Harness } from './harness.js';

const schema = JSON.parse(readFileSync(join(REPO_ROOT, 'config/request-log.schema.json'), 'utf8'));
const ajv = new Ajv2020({ allErrors: true, strict: false });
const validLine = ajv.compile(schema);

function assertSchema(line: Record<string, unknown>): void {
  assert.ok(validLine(line), `${JSON.stringify(line)}\n${JSON.stringify(validLine.errors)}`);
}

/** The engine's record of the latest request matching `pred`. */
const lastSeen = (h: Harness, pred: (s: Harness['engine']['seen'][number]) => boolean) => [...h.engine.seen].reverse().find(pred);

const chat = (extra: Record<string, unknown> = {}) => ({ model: 'sim-llama', messages: [{ role: 'user', content: 'Say hello' }], ...extra });

/** SSE data payloads of a body, in order. */
const dataOf = (text: string) =>
  text
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6));

/** The stand-in's prompt token count for a chat body: ceil(len(JSON(messages)) / 4). */
const simPromptTokens = (body: { messages: unknown }) => Math.ceil(JSON.stringify(body.messages).length / 4);

describe('proxy: streams', () => {
  let h: Harness;
  before(async () => {
    // Gaps are counted between the reads that carry content, as a client receives them. At the
    // default 5 ms between tokens a loaded machine sometimes read two deltas at once (one gap
    // fewer, seen in CI on Node 24), so the exact counts below get tokens 25 ms apart.
    h = await startHarness({}, { itlMs: 25 });
  });
  after(() => h.close());

  it('forwards every event, injects include_usage for the engine and strips the usage chunk from the client', async () => {
    const body = chat({ stream: true });
    const r = await post(`${h.proxy}/v1/chat/completions`, body, { authorization: `Bearer ${ACME_KEY}` });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'text/event-stream');
    const events = dataOf(r.text);
    assert.equal(events.length, 11, r.text); // the role chunk, 8 tokens, the finish_reason chunk and [DONE]; no usage chunk
    assert.equal(events.at(-1), '[DONE]');
    assert.ok(!r.text.includes('"usage"'));
    const seen = lastSeen(h, (s) => s.url === '/v1/chat/completions')!;
    assert.deepEqual(JSON.parse(seen.body).stream_options, { include_usage: true });
    assert.equal(seen.headers.authorization, `Bearer ${ACME_KEY}`, 'the key reaches the engine unchanged');
    assert.equal(seen.headers['x-request-id'], r.headers.get('x-request-id'));
    const m = await h.metrics();
    const acme = { tenant: 'acme', model: 'sim-llama' };
    assert.equal(sumOf(m, 'inference_requests_total', { ...acme, route: '/v1/chat/completions', code: '2xx' }), 1);
    assert.equal(sumOf(m, 'tokens_generated_total', acme), 8);
    assert.equal(sumOf(m, 'tokens_input_total', acme), simPromptTokens(body));
    // 8 content chunks are 7 gaps; TTFT is at least the engine's 30 ms.
    assert.equal(sumOf(m, 'inference_inter_token_latency_ms_count', acme), 7);
    assert.equal(sumOf(m, 'inference_ttft_ms_count', acme), 1);
    assert.ok(sumOf(m, 'inference_ttft_ms_sum', acme) >= 30);
    assert.equal(sumOf(m, 'infertel_proxy_events_total', { event: 'usage_injected' }), 1);
    const line = h.requestLogs().find((l) => l.request_id === r.headers.get('x-request-id'))!;
    assertSchema(line);
    assert.equal(line.event, 'inference');
    assert.equal(line.tenant, 'acme');
    assert.equal(line.tokens_generated, 8);
    assert.equal(line.code, 200);
    assert.equal(line.stream, true);
    assert.equal(line.gpu, 'nvml_unavailable');
  });

  it('a client that asked for usage gets the usage chunk unchanged, and the body as it sent it', async () => {
    const body = chat({ stream: true, stream_options: { include_usage: true } });
    const r = await post(`${h.proxy}/v1/chat/completions`, body, { 'x-api-key': GLOBEX_KEY });
    const events = dataOf(r.text);
    assert.equal(events.length, 12); // role, 8 tokens, finish_reason, usage, [DONE]
    const usage = JSON.parse(events[10]!);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 8);
    const seen = lastSeen(h, (s) => s.url === '/v1/chat/completions')!;
    assert.equal(seen.body, JSON.stringify(body));
    const m = await h.metrics();
    assert.equal(sumOf(m, 'tokens_generated_total', { tenant: 'globex' }), 8);
    assert.equal(sumOf(m, 'infertel_proxy_events_total', { event: 'usage_injected' }), 1, 'nothing injected for a client that asked');
  });

  it('names tenants: Bearer, x-api-key, api-key; anonymous without a key; unknown for a key of no tenant', async () => {
    await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' }, { 'api-key': ACME_KEY });
    await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' });
    await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' }, { authorization: 'Bearer sk-not-a-tenant-000000' });
    const m = await h.metrics();
    for (const tenant of ['acme', 'anonymous', 'unknown']) assert.equal(sumOf(m, 'inference_requests_total', { tenant, route: '/v1/completions' }), 1, tenant);
    assert.ok(!m.includes('sk-not-a-tenant'));
  });

  it('labels only models the engine serves: an unknown name or a crafted one is the served model', async () => {
    const crafted = 'evil\r\nx-injected: 1';
    const r = await post(`${h.proxy}/v1/completions`, { model: crafted, prompt: 'a' });
    assert.equal(r.headers.get('x-injected'), null);
    await post(`${h.proxy}/v1/completions`, { model: 'gpt-made-up', prompt: 'a' });
    const m = await h.metrics();
    assert.ok(!m.includes('evil') && !m.includes('gpt-made-up'));
    assert.ok(sumOf(m, 'inference_requests_total', { model: 'sim-llama', route: '/v1/completions' }) >= 2);
  });

  it('measures /v1/responses, /v1/embeddings, TGI /generate and /generate_stream, and counts other paths as route="other"', async () => {
    await post(`${h.proxy}/v1/responses`, { model: 'sim-llama', input: 'hi', stream: true });
    await post(`${h.proxy}/v1/embeddings`, { model: 'sim-llama', input: 'hi' });
    await post(`${h.proxy}/generate`, { inputs: 'hi', parameters: { max_new_tokens: 8 } });
    await post(`${h.proxy}/generate_stream`, { inputs: 'hi', parameters: { max_new_tokens: 8 } });
    const models = await fetch(`${h.proxy}/v1/models`);
    assert.equal(models.status, 200);
    const m = await h.metrics();
    for (const route of ['/v1/responses', '/v1/embeddings', '/generate', '/generate_stream', 'other'])
      assert.ok(sumOf(m, 'inference_requests_total', { route }) >= 1, route);
    assert.equal(sumOf(m, 'inference_requests_usage_unknown_total'), 0, 'every completed route gave its usage');
    // responses stream: 8 deltas; TGI stream: 8 token events, counted without a usage object.
    assert.equal(sumOf(m, 'inference_inter_token_latency_ms_count', { route: '/v1/responses' }), 7);
    assert.equal(sumOf(m, 'tokens_generated_total', { tenant: 'anonymous' }) >= 8 * 3, true);
  });

  it('keeps x-request-id when it is a plain token and replaces a crafted one', async () => {
    const kept = await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' }, { 'x-request-id': 'client-id-42' });
    assert.equal(kept.headers.get('x-request-id'), 'client-id-42');
    const replaced = await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' }, { 'x-request-id': 'a b"c<script>' });
    assert.match(replaced.headers.get('x-request-id')!, /^[0-9a-f-]{36}$/);
  });

  it('its exposition passes promtool check metrics, in both unit profiles', { skip: !promtoolPath() && 'promtool not installed' }, async () => {
    const r = promtoolCheckMetrics(await h.metrics());
    // The documented _ms names are the one finding the ms profile accepts (the seconds profile has none).
    for (const f of r.findings) assert.match(f, /abbreviated units$/, f);
    const secs = await startHarness({ units: 'seconds' });
    try {
      await post(`${secs.proxy}/v1/chat/completions`, chat({ stream: true }));
      const body = await secs.metrics();
      assert.ok(sumOf(body, 'inference_ttft_seconds_count') === 1);
      assert.ok(sumOf(body, 'inference_ttft_seconds_sum') >= 0.03 && sumOf(body, 'inference_ttft_seconds_sum') < 30, 'seconds, not ms');
      assert.deepEqual(promtoolCheckMetrics(body).findings, []);
    } finally {
      await secs.close();
    }
  });

  // The harness runs without tracing, as the proxy does unless told otherwise.
  it('with tracing off, passes an incoming trace context to the engine as it came, and makes up none', async () => {
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' }, { traceparent, tracestate: 'vendor=abc' });
    const joined = lastSeen(h, (s) => s.url === '/v1/completions')!;
    assert.equal(joined.headers.traceparent, traceparent);
    assert.equal(joined.headers.tracestate, 'vendor=abc');
    await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'b' }, { traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' });
    assert.equal(lastSeen(h, (s) => s.url === '/v1/completions')!.headers.traceparent, undefined, 'an invalid (all-zero) trace id is not passed on');
    await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'c' });
    assert.equal(lastSeen(h, (s) => s.url === '/v1/completions')!.headers.traceparent, undefined);
  });

  it('sends the response headers as soon as the engine does, before the first token', async () => {
    // /v1/completions streams have no role chunk: the engine sends its headers, then waits 400 ms.
    const t0 = performance.now();
    const headersAfter = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        `${h.proxy}/v1/completions`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'x-sim-ttft-ms': '400' } },
        (res) => {
          resolve(performance.now() - t0);
          res.resume();
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'sim-llama', prompt: 'a', stream: true }));
    });
    assert.ok(headersAfter < 300, `headers after ${headersAfter.toFixed(0)} ms, not held for the first token`);
  });
});

describe('proxy: faults leave it answering', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ proxy: { upstreamTimeout: '1s' } });
  });
  after(() => h.close());

  const stillAnswers = async () => {
    const r = await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'ok?' });
    assert.equal(r.status, 200);
  };

  it('forwards a malformed JSON body untouched and counts it', async () => {
    const raw = '{"model": "sim-llama", "messages": [unterminated';
    const r = await post(`${h.proxy}/v1/chat/completions`, raw);
    assert.equal(r.status, 400); // the engine's own answer
    assert.equal(lastSeen(h, (s) => s.url === '/v1/chat/completions')!.body, raw);
    assert.equal(sumOf(await h.metrics(), 'infertel_proxy_events_total', { event: 'malformed_body' }), 1);
    await stillAnswers();
  });

  it('answers 413 to a 100 MB body and the engine never sees it', async () => {
    const before = h.engine.seen.length;
    const big = Buffer.alloc(100 * 1024 * 1024, 0x61);
    const r = await fetch(`${h.proxy}/v1/chat/completions`, { method: 'POST', body: big, headers: { 'content-type': 'application/json' } }).catch(
      (e: Error) => e,
    );
    if (r instanceof Error) assert.fail(`client saw ${r.message} instead of a 413`);
    assert.equal(r.status, 413);
    assert.match(await r.text(), /request body over 33554432 bytes/);
    assert.equal(h.engine.seen.slice(before).filter((s) => s.url === '/v1/chat/completions').length, 0);
    assert.equal(sumOf(await h.metrics(), 'inference_requests_total', { code: '4xx', route: '/v1/chat/completions' }) >= 1, true);
    await stillAnswers();
  });

  it('a chunked body that crosses the cap gets 413 too', async () => {
    const h2 = await startHarness({ proxy: { maxBodyBytes: 1024 } });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(`${h2.proxy}/v1/completions`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        req.write('x'.repeat(800));
        req.write('x'.repeat(800));
        req.end();
      });
      assert.equal(status, 413);
      assert.equal(h2.engine.seen.filter((s) => s.url === '/v1/completions').length, 0);
    } finally {
      await h2.close();
    }
  });

  it('an engine that resets mid-stream gives the client a clean end, counted as a reset with unknown usage', async () => {
    const r = await post(`${h.proxy}/v1/chat/completions`, chat({ stream: true }), { 'x-sim-reset-after': '3', authorization: `Bearer ${ACME_KEY}` });
    assert.equal(r.status, 200);
    assert.equal(dataOf(r.text).length, 4, 'the role chunk and the three tokens sent before the reset, then a clean end');
    const m = await h.metrics();
    assert.equal(sumOf(m, 'inference_stream_resets_total', { reason: 'engine_reset', tenant: 'acme' }), 1);
    assert.equal(sumOf(m, 'inference_requests_usage_unknown_total', { tenant: 'acme' }), 1);
    assert.equal(sumOf(m, 'tokens_generated_total', { tenant: 'acme' }), 0, 'unknown tokens are not counted as zero tokens, nor as any');
    const line = h.requestLogs().find((l) => l.error === 'engine_reset')!;
    assertSchema(line);
    assert.equal(line.tokens_generated, null);
    await stillAnswers();
  });

  it('an engine that does not answer in time gets 504, and one that refuses gets 502, with no detail in the body', async () => {
    const r = await post(`${h.proxy}/v1/chat/completions`, chat(), { 'x-sim-hang': '1' });
    assert.equal(r.status, 504);
    assert.ok(!r.text.includes('127.0.0.1'));
    const dead = await startHarness();
    const target = dead.engine.url;
    await dead.engine.close();
    try {
      const refused = await post(`${dead.proxy}/v1/chat/completions`, chat());
      assert.equal(refused.status, 502);
      assert.ok(!refused.text.includes(new URL(target).port), refused.text);
      const line = dead.requestLogs().find((l) => l.code === 502)!;
      assertSchema(line);
      assert.match(String(line.error), /^upstream_unavailable: ECONNREFUSED$/);
      const ready = await fetch(`${dead.base}/readyz`);
      assert.equal(ready.status, 503);
    } finally {
      await dead.agent.stop();
    }
    await stillAnswers();
  });

  it('a client abort cancels the engine request within a second and is counted', async () => {
    const ac = new AbortController();
    const res = await fetch(`${h.proxy}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify(chat({ stream: true })),
      headers: { 'content-type': 'application/json', 'x-sim-tokens': '1000', 'x-sim-itl-ms': '20', authorization: `Bearer ${GLOBEX_KEY}` },
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    const abortedAt = performance.now();
    ac.abort();
    const seen = lastSeen(h, (s) => s.url === '/v1/chat/completions')!;
    const cancelled = await eventually(async () => seen.cancelledAt, 3000, 'the engine to see the cancel');
    assert.ok(cancelled - abortedAt < 1000, `cancelled after ${cancelled - abortedAt} ms`);
    const m = await eventually(async () => {
      const body = await h.metrics();
      return sumOf(body, 'inference_stream_resets_total', { reason: 'client_abort', tenant: 'globex' }) === 1 && body;
    });
    assert.equal(sumOf(m, 'inference_requests_usage_unknown_total', { tenant: 'globex' }), 1);
    await stillAnswers();
  });

  it('a slow-reading client holds the engine back (backpressure) and still gets every byte', async () => {
    const tokens = 3000;
    const received = await new Promise<{ bytes: number; text: string }>((resolve, reject) => {
      const req = http.request(
        `${h.proxy}/v1/chat/completions`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'x-sim-burst': '1', 'x-sim-tokens': String(tokens) } },
        (res) => {
          res.pause();
          setTimeout(() => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (text += d));
            res.on('end', () => resolve({ bytes: text.length, text }));
            res.resume();
          }, 500);
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(chat({ stream: true, stream_options: { include_usage: true } })));
    });
    const seen = lastSeen(h, (s) => s.headers['x-sim-burst'] !== undefined)!;
    assert.ok(seen.sawBackpressure, 'the engine had to wait: the proxy stopped reading while the client did');
    assert.equal(dataOf(received.text).length, tokens + 3); // role, tokens, finish_reason, [DONE]
    await stillAnswers();
  });
});

// Its own proxy with the default upstream timeout: the faults above use 300 ms, which a loaded
// machine can exceed while 1,000 streams start at once.
describe('proxy: load', () => {
  it('1000 concurrent streams all complete and are each counted once', async () => {
    const h = await startHarness();
    try {
      const before = sumOf(await h.metrics(), 'inference_requests_total', { route: '/v1/completions', tenant: 'acme' });
      const results = await Promise.all(
        Array.from({ length: 1000 }, () =>
          post(
            `${h.proxy}/v1/completions`,
            { model: 'sim-llama', prompt: 'x', stream: true },
            { 'x-sim-tokens': '4', 'x-sim-itl-ms': '5', authorization: `Bearer ${ACME_KEY}` },
          ),
        ),
      );
      assert.deepEqual(new Set(results.map((r) => r.status)), new Set([200]));
      assert.ok(results.every((r) => dataOf(r.text).length === 6)); // 4 tokens, finish_reason, [DONE]
      const m = await h.metrics();
      assert.equal(sumOf(m, 'inference_requests_total', { route: '/v1/completions', tenant: 'acme' }) - before, 1000);
      assert.equal(sumOf(m, 'infertel_proxy_open_requests'), 0);
      const after = await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'ok?' });
      assert.equal(after.status, 200);
    } finally {
      await h.close();
    }
  });
});

describe('proxy: request log sampling', () => {
  it('samples successes and errors apart; every request stays in the metrics', async () => {
    const h = await startHarness({ requestLog: { sampleSuccess: 0, sampleError: 1 } });
    try {
      for (let i = 0; i < 5; i++) await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' });
      await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' }, { 'x-sim-status': '500' });
      await sleep(50);
      const lines = h.requestLogs();
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!.code, 500);
      assert.equal(lines[0]!.status, 'error');
      assert.equal(lines[0]!.error, 'upstream status 500');
      const m = await h.metrics();
      assert.equal(sumOf(m, 'inference_requests_total', { route: '/v1/completions' }), 6);
      assert.equal(sumOf(m, 'infertel_request_logs_total', { outcome: 'sampled_out' }), 5);
    } finally {
      await h.close();
    }
  });
});
