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
import type { ScrapeResult, Source } from '../agent/sources/source.js';
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

function agentWith(upstreams: Array<{ name: string; flavor?: string; model?: string }>) {
  const sources = new Map<string, FakeSource>();
  const { lines: logs, log } = captureLogger();
  let clock = 1_000_000;
  const config = validateConfig({
    listen: '127.0.0.1:0',
    interval: '1s',
    upstreams: upstreams.map((u) => ({ url: `http://127.0.0.1:1/${u.name}`, flavor: 'auto', ...u })),
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
});
