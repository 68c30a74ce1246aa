// The agent wired together in-process, with fake sources: what the loop records (health,
// readiness, self-metrics, logs) and what the exporter assembles, without a process or a socket.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../agent/config/load.js';
import type { UpstreamConfig } from '../agent/config/schema.js';
import { parseExposition } from '../agent/parse/exposition.js';
import type { ScrapeOutcome, ScrapeResult, Source } from '../agent/sources/source.js';
import { emptyDevice } from '../agent/gpu/probe.js';
import { createGpuTelemetry } from '../agent/gpu/telemetry.js';
import { captureLogger, eventually, fakeProbe, REPO_ROOT, sampleValue } from './helpers.js';

const FIXTURES = join(REPO_ROOT, 'test/fixtures');
const fixture = (path: string) => readFileSync(join(FIXTURES, path), 'utf8');

/** A source that answers what `next` says: a payload, or a failure outcome. */
class FakeSource implements Source {
  next: string | ScrapeResult['outcome'] = 'refused';
  scrapes = 0;
  constructor(readonly name: string) {}
  async scrape(): Promise<ScrapeResult> {
    this.scrapes++;
    const n = this.next;
    if (n.includes('\n')) {
      const parsed = parseExposition(n, n.trimEnd().endsWith('# EOF') ? 'openmetrics' : 'text');
      return { outcome: 'ok', families: parsed.families, bytes: n.length, parseErrors: parsed.errors, rejected: parsed.rejected, detail: undefined };
    }
    return { outcome: n as ScrapeResult['outcome'], families: [], bytes: 0, parseErrors: 0, rejected: {}, detail: `fake ${n}` };
  }
}

function agentWith(upstreams: Array<{ name: string; flavor?: string; model?: string }>, extra: Record<string, unknown> = {}) {
  const sources = new Map<string, FakeSource>();
  const { lines: logs, log } = captureLogger();
  let clock = 1_000_000;
  const config = validateConfig({
    listen: '127.0.0.1:0',
    interval: '1s',
    upstreams: upstreams.map((u) => ({ url: `http://127.0.0.1:1/${u.name}`, flavor: 'auto', ...u })),
    ...extra,
  });
  const agent = new Agent(config, {
    log,
    now: () => clock,
    source: (cfg: UpstreamConfig) => {
      const s = new FakeSource(cfg.name);
      sources.set(cfg.name, s);
      return s;
    },
  });
  const ac = new AbortController();
  return {
    agent,
    logs,
    source: (name: string) => sources.get(name)!,
    async cycle(name: string) {
      clock += 1000;
      return agent.collect(agent.upstreams.find((u) => u.cfg.name === name)!, ac.signal);
    },
    advance: (ms: number) => (clock += ms),
    async body() {
      return `${agent.renderData('text')}${await agent.metrics.text.metrics()}`;
    },
  };
}

describe('Agent in-process (fake sources)', () => {
  it('detects each engine, maps it, and records health per upstream', async () => {
    const a = agentWith([{ name: 'sg' }, { name: 'llama', model: 'qwen-local' }]);
    a.source('sg').next = fixture('sglang/0.5-tp8/metrics.prom');
    a.source('llama').next = fixture('llamacpp/b7000/metrics.prom');
    assert.equal(await a.cycle('sg'), true);
    assert.equal(await a.cycle('llama'), true);
    const body = await a.body();
    assert.match(body, /\ninfertel_upstream_info\{upstream="sg",flavor="sglang",version=""\} 1\n/);
    assert.match(body, /\ninfertel_upstream_info\{upstream="llama",flavor="llamacpp",version=""\} 1\n/);
    // Worked out in test/fixtures/engines.ts: one rank of the TP group, 12 running.
    assert.equal(sampleValue(body, 'inference_active_streams', 'model="deepseek-ai/DeepSeek-V3"'), 12);
    assert.equal(sampleValue(body, 'tokens_input_total', 'model="qwen-local"'), 12000);
    assert.equal(sampleValue(body, 'infertel_upstream_up', 'upstream="sg"'), 1);
    assert.deepEqual(a.agent.readiness(), { ready: true, upstreams: { sg: { ready: true }, llama: { ready: true } } });
  });

  it('a failing upstream goes down once in the log, keeps its passthrough for staleAfterScrapes, then drops it', async () => {
    const a = agentWith([{ name: 'v' }]);
    a.source('v').next = fixture('vllm/0.11-python/metrics.prom');
    await a.cycle('v');
    assert.match(await a.body(), /\nvllm:num_requests_running\{/);
    a.source('v').next = 'timeout';
    for (let i = 0; i < 2; i++) assert.equal(await a.cycle('v'), false);
    assert.match(await a.body(), /\nvllm:num_requests_running\{/, 'still shown after 2 failed scrapes');
    await a.cycle('v');
    const body = await a.body();
    assert.ok(!body.includes('vllm:num_requests_running{'), 'dropped after the third');
    assert.equal(sampleValue(body, 'infertel_scrape_errors_total', 'upstream="v"', 'reason="timeout"'), 3);
    assert.equal(a.logs.filter((l) => l.includes('"upstream down"')).length, 1);
    a.advance(10_000);
    assert.equal(a.agent.readiness().ready, false);
    // Counters keep what they had counted while the upstream is away.
    assert.equal(sampleValue(body, 'tokens_input_total', 'model="meta-llama/Llama-3.1-8B-Instruct"'), 3500);
  });

  it('the exporter takes each passthrough set once: no parsed samples are kept on the upstream between cycles', async () => {
    const a = agentWith([{ name: 'v' }]);
    a.source('v').next = fixture('vllm/0.11-python/metrics.prom');
    await a.cycle('v');
    assert.match(await a.body(), /\nvllm:num_requests_running\{/);
    const upstream = a.agent.upstreams.find((u) => u.cfg.name === 'v');
    assert.deepEqual(upstream?.takePassthrough(), [], 'already handed to the exporter by the render');
    // A failed scrape makes a new data version; the body is rendered again from the kept blocks.
    a.source('v').next = 'timeout';
    await a.cycle('v');
    assert.match(await a.body(), /\nvllm:num_requests_running\{/);
  });

  it('an OpenMetrics upstream (vLLM Rust frontend) is mapped and passed through with its counters intact', async () => {
    const a = agentWith([{ name: 'v' }]);
    a.source('v').next = fixture('vllm/0.32-rust/metrics.om');
    await a.cycle('v');
    const first = a.agent.renderData('openmetrics');
    assert.match(first, /# TYPE vllm:prompt_tokens counter\nvllm:prompt_tokens_total\{/);
    assert.equal(sampleValue(first, 'tokens_input_total', 'model="Qwen/Qwen3-32B"'), 5000);
  });

  it("the GPU probe is a source of the same loop: its cycles recorded like an engine's (up, duration, errors by outcome, logs on change)", async () => {
    let mode: 'ok' | 'hang' = 'ok';
    let polls = 0;
    const probe = fakeProbe(() => {
      polls++;
      if (mode === 'hang') return new Promise(() => {});
      return Promise.resolve({ devices: [{ ...emptyDevice(0), minor: 0, uuid: 'GPU-a', utilizationGpu: 50 }], xids: [], elapsedUs: 1 });
    }, '580.1');
    const { lines: logs, log } = captureLogger();
    const config = validateConfig({
      listen: '127.0.0.1:0',
      upstreams: [{ url: 'http://127.0.0.1:1/metrics', interval: '1h' }],
      gpu: { interval: '100ms', timeout: '50ms' },
    });
    const agent = new Agent(config, {
      log,
      source: (cfg: UpstreamConfig) => new FakeSource(cfg.name),
      gpu: (catalogue, metrics, onChange) =>
        createGpuTelemetry({
          catalogue,
          metrics,
          onChange,
          log,
          probe,
          env: {},
          config: { intervalMs: 100, timeoutMs: 50, source: 'auto', processRoles: {}, simulate: 0 },
        }),
    });
    await agent.start();
    const body = async () => `${agent.renderData('text')}${await agent.metrics.text.metrics()}`;
    try {
      const up = await eventually(async () => {
        const b = await body();
        return sampleValue(b, 'infertel_upstream_up', 'upstream="gpu"') === 1 && b;
      }, 5000);
      assert.equal(sampleValue(up, 'gpu_utilization_ratio', 'device="nvidia0"'), 0.5);
      assert.ok(sampleValue(up, 'infertel_scrape_duration_seconds', 'upstream="gpu"')! >= 0);
      assert.ok(sampleValue(up, 'infertel_last_scrape_success_timestamp_seconds', 'upstream="gpu"')! > 0);
      mode = 'hang';
      const down = await eventually(async () => {
        const b = await body();
        return (
          sampleValue(b, 'infertel_upstream_up', 'upstream="gpu"') === 0 &&
          (sampleValue(b, 'infertel_scrape_errors_total', 'upstream="gpu"', 'reason="in_flight"') ?? 0) >= 1 &&
          b
        );
      }, 5000);
      assert.equal(
        sampleValue(down, 'infertel_scrape_errors_total', 'upstream="gpu"', 'reason="timeout"'),
        1,
        'one poll hangs; the next ones find it in flight',
      );
      assert.equal(sampleValue(down, 'gpu_telemetry_stale'), 1);
      const downs = logs.filter((l) => l.includes('"upstream down"') && l.includes('"upstream":"gpu"'));
      assert.equal(downs.length, 2, 'logged on each change of outcome (timeout, then in_flight), not at every poll');
      assert.ok(polls >= 2);
    } finally {
      const t0 = performance.now();
      await agent.stop();
      assert.ok(performance.now() - t0 < 1000, 'stop does not wait for the hung poll');
    }
  });

  it('counters stay monotonic across an engine restart: the drop is added to what was counted before', async () => {
    // tokens_generated_total is the _sum of TGI's generated-tokens histogram.
    const tgi = (generated: number, requests: number) =>
      [
        '# TYPE tgi_request_success counter',
        `tgi_request_success ${requests}`,
        '# TYPE tgi_request_generated_tokens histogram',
        `tgi_request_generated_tokens_bucket{le="10.0"} 0`,
        `tgi_request_generated_tokens_bucket{le="1000.0"} ${requests}`,
        `tgi_request_generated_tokens_bucket{le="+Inf"} ${requests}`,
        `tgi_request_generated_tokens_sum ${generated}`,
        `tgi_request_generated_tokens_count ${requests}`,
        '',
      ].join('\n');
    const a = agentWith([{ name: 't', flavor: 'tgi', model: 'm' }]);
    const read = async () => sampleValue(await a.body(), 'tokens_generated_total', 'model="m"');
    const seen: Array<number | undefined> = [];
    // 1000, 1500, then the engine restarts and counts from 200 again, then 300.
    for (const [generated, requests] of [
      [1000, 10],
      [1500, 15],
      [200, 2],
      [300, 3],
    ] as const) {
      a.source('t').next = tgi(generated, requests);
      assert.equal(await a.cycle('t'), true);
      seen.push(await read());
    }
    // After the restart the agent adds the new count to the 1500 it had: 1500 + 200, 1500 + 300.
    assert.deepEqual(seen, [1000, 1500, 1700, 1800]);
    assert.equal(sampleValue(await a.body(), 'inference_requests_total', 'model="m"', 'code="2xx"'), 18, '15 + 3');
  });

  describe('bad upstreams never take the agent down', () => {
    // Each way an HTTP scrape fails, as its source reports it (test/sources/engine-source.test.ts
    // shows which misbehaving server gives which outcome).
    const failing: Record<string, ScrapeOutcome> = {
      refused: 'refused',
      timeout: 'timeout',
      status5xx: 'http_status',
      html: 'not_prometheus',
      garbage: 'parse',
      truncated: 'error',
      oversized: 'body_too_large',
    };
    const GOOD = '# TYPE tgi_request_success counter\ntgi_request_success 5\n# TYPE tgi_queue_size gauge\ntgi_queue_size 1\n';
    const setup = async () => {
      // The fake clock moves 1 s a cycle: 24 cycles stay within the healthy upstream's freshness at 30 s.
      const a = agentWith([{ name: 'healthy' }, ...Object.keys(failing).map((name) => ({ name, flavor: 'tgi', model: 'm' }))], { interval: '30s' });
      a.source('healthy').next = fixture('vllm/0.11-python/metrics.prom');
      for (const [name, outcome] of Object.entries(failing)) a.source(name).next = outcome;
      for (let round = 0; round < 3; round++) for (const u of a.agent.upstreams) await a.cycle(u.cfg.name);
      return a;
    };

    it('the healthy upstream is served; each failing one is down with its errors counted by reason', async () => {
      const a = await setup();
      const body = await a.body();
      assert.equal(sampleValue(body, 'infertel_upstream_up', 'upstream="healthy"'), 1);
      assert.equal(sampleValue(body, 'tokens_input_total', 'model="meta-llama/Llama-3.1-8B-Instruct"'), 3500);
      for (const [name, reason] of Object.entries(failing)) {
        assert.equal(sampleValue(body, 'infertel_upstream_up', `upstream="${name}"`), 0, name);
        assert.equal(sampleValue(body, 'infertel_scrape_errors_total', `upstream="${name}"`, `reason="${reason}"`), 3, `${name}: three rounds`);
      }
    });

    it('readiness is false with a reason per failing upstream; each goes down once in the log', async () => {
      const a = await setup();
      const r = a.agent.readiness();
      assert.equal(r.ready, false);
      assert.deepEqual(r.upstreams.healthy, { ready: true });
      for (const [name, outcome] of Object.entries(failing)) {
        assert.equal(r.upstreams[name]?.ready, false, name);
        assert.match(r.upstreams[name]?.reason ?? '', new RegExp(`never scraped successfully \\(last: ${outcome}: fake ${outcome}\\)`), name);
        assert.equal(
          a.logs.filter((l) => l.includes('"upstream down"') && l.includes(`"upstream":"${name}"`)).length,
          1,
          `${name}: logged once in three failures`,
        );
      }
    });

    it('failing upstreams recover on their next good scrape', async () => {
      const a = await setup();
      for (const name of Object.keys(failing)) a.source(name).next = GOOD;
      for (const name of Object.keys(failing)) assert.equal(await a.cycle(name), true, name);
      const body = await a.body();
      for (const name of Object.keys(failing)) assert.equal(sampleValue(body, 'infertel_upstream_up', `upstream="${name}"`), 1, name);
      assert.equal(a.agent.readiness().ready, true);
      for (const name of Object.keys(failing))
        assert.equal(a.logs.filter((l) => l.includes('"upstream up"') && l.includes(`"upstream":"${name}"`)).length, 1, `${name}: up logged once`);
    });

    it('a label bomb is capped at the per-metric series limit; the rest is one overflow series, counted', async () => {
      const a = agentWith([{ name: 'bomb', flavor: 'tgi', model: 'm' }], { limits: { seriesPerMetric: 500 } });
      const bomb = (round: number) => {
        const lines = ['# TYPE tgi_request_success counter', 'tgi_request_success 1', '# TYPE tgi_batch_concat counter'];
        for (let i = 0; i < 5000; i++) lines.push(`tgi_batch_concat{reason="r${round}-${i}"} 1`);
        return `${lines.join('\n')}\n`;
      };
      a.source('bomb').next = bomb(0);
      assert.equal(await a.cycle('bomb'), true);
      const body = await a.body();
      const series = body.split('\n').filter((l) => l.startsWith('tgi_batch_concat{'));
      // 500 admitted label sets plus the overflow series; 5000 - 500 samples of 1 fold into it.
      assert.equal(series.length, 501);
      assert.equal(sampleValue(body, 'tgi_batch_concat', 'otel_metric_overflow="true"'), 4500);
      assert.equal(sampleValue(body, 'infertel_series_overflow_total', 'metric="tgi_batch_concat"'), 4500);
      assert.equal(sampleValue(body, 'infertel_upstream_up', 'upstream="bomb"'), 1);
      a.source('bomb').next = bomb(1);
      assert.equal(await a.cycle('bomb'), true);
      assert.ok(
        (await a.body()).split('\n').filter((l) => l.startsWith('tgi_batch_concat{')).length <= 501,
        'new label values the next round do not grow past the cap',
      );
    });
  });
});
