// Request traces through a real OTLP/HTTP receiver on loopback (JSON and protobuf), exemplars on
// the proxy's histograms, traceparent to the engine; then the proxy with scraping on beside it,
// where no sum counts a request twice; then canary secrets that must never come out.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { startSimulatedEngines } from '../../agent/demo/demo.js';
import { eventually, sleep, startServer, type TestServer } from '../helpers.js';
import { ACME_KEY, post, startHarness, sumOf, type Harness } from './harness.js';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: Array<{ key: string; value: Record<string, unknown> }>;
  events?: Array<{ name: string }>;
}

/** An OTLP/HTTP trace receiver: decodes JSON exports fully and keeps protobuf ones as bytes. */
async function otlpReceiver(): Promise<TestServer & { spans: OtlpSpan[]; raw: Array<{ contentType: string; body: Buffer }> }> {
  const spans: OtlpSpan[] = [];
  const raw: Array<{ contentType: string; body: Buffer }> = [];
  const server = await startServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const contentType = String(req.headers['content-type']);
      raw.push({ contentType, body });
      if (req.url === '/v1/traces' && contentType.includes('json')) {
        const doc = JSON.parse(body.toString('utf8'));
        for (const rs of doc.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans.push(...(ss.spans ?? []));
      }
      res
        .writeHead(200, { 'content-type': contentType.includes('json') ? 'application/json' : 'application/x-protobuf' })
        .end(contentType.includes('json') ? '{}' : '');
    });
  });
  return Object.assign(server, { spans, raw });
}

const attr = (s: OtlpSpan, key: string) => {
  const v = s.attributes?.find((a) => a.key === key)?.value;
  return v ? (v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue) : undefined;
};

describe('proxy: traces and exemplars (OTLP http/json)', () => {
  let h: Harness;
  let receiver: Awaited<ReturnType<typeof otlpReceiver>>;
  before(async () => {
    receiver = await otlpReceiver();
    h = await startHarness({ tracing: { endpoint: receiver.url, protocol: 'http/json' } });
  });
  after(async () => {
    await h.close();
    await receiver.close();
  });

  it('one trace per request with the span structure of §18.5, built from measured times, joined by the engine', async () => {
    const incomingTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const r = await post(
      `${h.proxy}/v1/chat/completions`,
      { model: 'sim-llama', messages: [{ role: 'user', content: 'hi' }], stream: true },
      {
        authorization: `Bearer ${ACME_KEY}`,
        traceparent: `00-${incomingTrace}-00f067aa0ba902b7-01`,
        'x-sim-tokens': '70',
        // Far enough apart that no two events arrive in one read (a read is one chunk to the observer).
        'x-sim-itl-ms': '5',
        'x-slo-class': 'interactive',
      },
    );
    assert.equal(r.status, 200);
    const seen = [...h.engine.seen].reverse().find((s) => s.url === '/v1/chat/completions')!;
    const tp = String(seen.headers.traceparent);
    assert.match(tp, new RegExp(`^00-${incomingTrace}-[0-9a-f]{16}-01$`), 'the engine joins the incoming trace');
    const spans = await eventually(
      async () => {
        const mine = receiver.spans.filter((s) => s.traceId === incomingTrace);
        return mine.length >= 6 && mine;
      },
      8000,
      'six spans at the receiver',
    );
    const byName = new Map(spans.map((s) => [s.name, s]));
    const root = byName.get('inference.request')!;
    assert.equal(root.kind, 2, 'SERVER');
    assert.equal(root.parentSpanId, '00f067aa0ba902b7');
    for (const child of ['router.admission', 'upstream.request', 'prefill', 'decode.loop', 'stream.flush'])
      assert.equal(byName.get(child)?.parentSpanId, root.spanId, child);
    assert.equal(byName.get('upstream.request')!.kind, 3, 'CLIENT');
    assert.equal(tp.split('-')[2], byName.get('upstream.request')!.spanId, 'traceparent names upstream.request');
    // 70 content chunks with an event every 32: two tokens_emitted events, never a span per token.
    assert.equal(byName.get('decode.loop')!.events?.filter((e) => e.name === 'tokens_emitted').length, 2);
    assert.equal(spans.length, 6);
    assert.equal(attr(root, 'tenant'), 'acme');
    assert.equal(attr(root, 'route'), '/v1/chat/completions');
    assert.equal(attr(root, 'model'), 'sim-llama');
    assert.equal(attr(root, 'gen_ai.request.model'), 'sim-llama');
    assert.equal(Number(attr(root, 'generated_len')), 70);
    assert.equal(Number(attr(root, 'gen_ai.usage.output_tokens')), 70);
    assert.ok(Number(attr(root, 'prefill_len')) > 0);
    assert.equal(attr(root, 'slo_class'), 'interactive');
    assert.ok(attr(root, 'worker_id'));
    assert.match(String(attr(root, 'context_bucket')), /^<=512$/);
    // prefill ends where decode.loop starts: both are the first content chunk's time.
    assert.equal(byName.get('prefill')!.endTimeUnixNano, byName.get('decode.loop')!.startTimeUnixNano);
  });

  it('OpenMetrics output carries exemplars with a sampled trace id; the text format none; strict parsers accept it', async () => {
    await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'x', stream: true });
    const om = await h.metrics('openmetrics');
    const ex = [
      ...om.matchAll(/^inference_(?:ttft|request_duration|inter_token_latency)_ms_bucket\{[^}]*\} \d+ # \{trace_id="([0-9a-f]{32})"\} [\d.e+-]+ [\d.]+$/gm),
    ];
    assert.ok(
      ex.length >= 3,
      om
        .split('\n')
        .filter((l) => l.includes('# {'))
        .join('\n'),
    );
    await eventually(async () => receiver.spans.some((s) => s.traceId === ex[0]![1]), 8000, 'the exemplar trace at the receiver');
    assert.ok(!(await h.metrics('text')).includes('trace_id'));
    const py = spawnSync(
      '/usr/bin/python3',
      ['-c', 'import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nlist(p(sys.stdin.read()))\nprint("ok")'],
      {
        input: om,
        encoding: 'utf8',
      },
    );
    if (py.error || /No module named/.test(py.stderr)) return;
    assert.equal(py.stdout.trim(), 'ok', py.stderr);
  });
});

describe('proxy: OTLP http/protobuf', () => {
  it('exports protobuf to /v1/traces when OTEL_EXPORTER_OTLP_PROTOCOL asks for it', async () => {
    const receiver = await otlpReceiver();
    const h = await startHarness({ tracing: { endpoint: receiver.url } });
    try {
      await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'x' });
      const got = await eventually(async () => receiver.raw.find((r) => r.contentType === 'application/x-protobuf'), 8000, 'a protobuf export');
      assert.ok(got.body.includes(Buffer.from('inference.request')) && got.body.includes(Buffer.from('upstream.request')));
    } finally {
      await h.close();
      await receiver.close();
    }
  });
});

describe('proxy and scraping together', () => {
  it('no sum over the exported series counts a request twice; the engine families stay in passthrough', async () => {
    const engines = await startSimulatedEngines(0);
    // The proxy fronts the simulated vLLM (which serves the OpenAI API and counts requests of its
    // own synthetic load); TGI is scraped beside it, not behind the proxy.
    const h = await startHarness({
      proxy: { target: engines.vllm.url },
      upstreams: [
        { url: `${engines.vllm.url}/metrics`, flavor: 'vllm' },
        { url: `${engines.tgi.url}/metrics`, flavor: 'tgi', model: 'tgi-model' },
      ],
      interval: '200ms',
    });
    try {
      for (let i = 0; i < 7; i++) await post(`${h.proxy}/v1/completions`, { model: 'x', prompt: 'x' }, { 'x-sim-tokens': '2' });
      const body = await eventually(
        async () => {
          const m = await h.metrics();
          return sumOf(m, 'http_requests_total') > 0 && sumOf(m, 'tgi_request_success') > 0 && m;
        },
        8000,
        'both engines scraped',
      );
      assert.ok(sumOf(body, 'http_requests_total') > 0, "vLLM's own request counter stays in passthrough");
      const tgiOwn = sumOf(body, 'tgi_request_success') + sumOf(body, 'tgi_request_failure');
      // The proxied engine's requests are the proxy's 7; TGI's are its own, still from the scrape.
      assert.equal(sumOf(body, 'inference_requests_total', { tenant: 'anonymous' }), 7);
      assert.equal(sumOf(body, 'inference_requests_total', { model: 'tgi-model' }), tgiOwn);
      assert.equal(sumOf(body, 'inference_requests_total'), 7 + tgiOwn);
      assert.equal(sumOf(body, 'tokens_generated_total', { tenant: 'anonymous' }), 7 * 2);
      assert.equal(sumOf(body, 'inference_request_duration_ms_count', { model: 'meta-llama/Llama-3.1-8B-Instruct' }), 7);
      // Engine-only metrics of the proxied engine still come from its scrape.
      assert.ok(body.includes('kv_cache_usage_ratio{model="meta-llama/Llama-3.1-8B-Instruct"'));
      assert.equal((body.match(/^# TYPE inference_requests_total /gm) ?? []).length, 1, 'one family, series of both');
    } finally {
      await h.close();
      await engines.close();
    }
  });
});

describe('proxy: canary secrets', () => {
  it('an API key, an email and an SSN in a prompt never reach logs, metrics, traces or error bodies', async () => {
    const receiver = await otlpReceiver();
    const secrets = ['sk-canary-5e5e5e5e5e5e5e5e', 'jane.canary@example.org', '078-05-1120'];
    const h = await startHarness({ tracing: { endpoint: receiver.url, protocol: 'http/json' }, proxy: { upstreamTimeout: '1s' } });
    const outputs: string[] = [];
    try {
      const prompt = `My key is ${secrets[0]}, mail ${secrets[1]}, SSN ${secrets[2]}`;
      const headers = { authorization: `Bearer ${secrets[0]}`, 'x-request-id': secrets[1]! };
      const faults: Array<Record<string, string>> = [{}, { 'x-sim-status': '500' }, { 'x-sim-reset-after': '2' }, { 'x-sim-hang': '1' }];
      for (const extra of faults) {
        const r = await post(
          `${h.proxy}/v1/chat/completions`,
          { model: secrets[1], messages: [{ role: 'user', content: prompt }], stream: true },
          { ...headers, ...extra },
        ).catch((e: Error) => ({ status: 0, text: e.message, headers: new Headers() }));
        if (r.status >= 500 && r.text) outputs.push(r.text);
        if ('x-sim-hang' in extra) break;
      }
      const big = await post(`${h.proxy}/v1/chat/completions`, 'x'.repeat(40 * 1024 * 1024));
      outputs.push(big.text);
      await sleep(1500);
      outputs.push(await h.metrics(), await h.metrics('openmetrics'), JSON.stringify(h.requestLogs()), h.agentLogs());
      outputs.push(JSON.stringify(receiver.spans), ...receiver.raw.map((r) => r.body.toString('utf8')));
      assert.ok(receiver.spans.length > 0, 'spans were exported, so the check below looked at some');
      assert.ok(h.requestLogs().length >= 3, 'request lines were written, so the check below looked at some');
      for (const out of outputs) for (const s of secrets) assert.ok(!out.includes(s), `${s} leaked into: ${out.slice(0, 200)}`);
    } finally {
      await h.close();
      await receiver.close();
    }
  });
});
