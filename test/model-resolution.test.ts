// The model of series that name none: payload, then upstream config, then the engine's info
// endpoint, then the global --model, then unknown. A global model never splits one engine in two.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import { buildCatalogue } from '../agent/catalogue/catalogue.js';
import { SelfMetrics } from '../agent/export/self-metrics.js';
import { SeriesLimiter } from '../agent/guard/cardinality.js';
import { makeLabelPolicy, newGuardCounts } from '../agent/guard/labels.js';
import { PassthroughGuard } from '../agent/guard/passthrough.js';
import { Normalizer } from '../agent/normalize/normalizer.js';
import { parseExposition } from '../agent/parse/exposition.js';
import type { Source } from '../agent/sources/source.js';
import { resultOfParse } from '../agent/sources/engine.js';
import { Upstream } from '../agent/upstream.js';
import type { UpstreamConfig } from '../agent/config/schema.js';
import { llamacpp } from '../agent/sources/engines/llamacpp.js';
import { vllm } from '../agent/sources/engines/vllm.js';
import { captureLogger, startServer } from './helpers.js';

const VLLM =
  '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="llama"} 1.0\n' +
  '# TYPE http_requests_total counter\nhttp_requests_total{handler="/v1/completions",method="POST",status="2xx"} 7.0\n';

function upstreamOf(
  body: string,
  flavor: 'vllm' | 'tgi' | 'auto',
  upstreamModel: string | undefined,
  globalModel: string | undefined,
  clock: { ms: number; answerTakesMs: number } = { ms: 0, answerTakesMs: 0 },
) {
  const catalogue = buildCatalogue('ms');
  const policy = makeLabelPolicy([], 128, ['model', 'model_name']);
  const normalizer = new Normalizer(catalogue, {
    histograms: 'rebucket',
    staleAfterScrapes: 3,
    seriesPerMetric: 100,
    labelPolicy: policy,
    limiter: new SeriesLimiter({ perMetric: 100, total: 1000 }),
    guardCounts: newGuardCounts(),
  });
  const source: Source = {
    name: 'u',
    scrape: async () => {
      clock.ms += clock.answerTakesMs;
      return resultOfParse(parseExposition(body), body.length);
    },
  };
  const cfg: UpstreamConfig = {
    name: 'u',
    url: 'http://127.0.0.1:1/metrics',
    flavor,
    model: upstreamModel,
    intervalMs: 1000,
    timeoutMs: 500,
    maxBodyBytes: 1 << 20,
    passthrough: false,
    auth: undefined,
    tls: undefined,
  };
  const { lines: logs, log } = captureLogger();
  const metrics = new SelfMetrics(
    't',
    () => new Map(),
    () => ({}),
  );
  const up = new Upstream(cfg, source, {
    normalizer,
    metrics,
    tracer: trace.getTracer('t'),
    log,
    passthroughGuard: new PassthroughGuard(policy, { seriesPerFamily: 10, seriesTotal: 100, bucketsPerSeries: 10 }, () => {}, newGuardCounts()),
    defaultModel: globalModel,
    gpuTelemetry: () => false,
    staleAfterScrapes: 3,
    now: () => clock.ms,
  });
  return { up, normalizer, logs, metrics };
}

async function modelsOf(body: string, flavor: 'vllm' | 'tgi', upstreamModel: string | undefined, globalModel: string | undefined): Promise<string[]> {
  const { up, normalizer } = upstreamOf(body, flavor, upstreamModel, globalModel);
  assert.equal(await up.cycle(new AbortController().signal), true);
  const models = new Set<string>();
  for (const f of normalizer.snapshot()) for (const s of f.series) for (const [k, v] of s.labels) if (k === 'model') models.add(v);
  return [...models].sort();
}

describe('model resolution per upstream', () => {
  it('a global --model does not override the model a vLLM payload names (no second model from http_requests_total)', async () => {
    assert.deepEqual(await modelsOf(VLLM, 'vllm', undefined, 'global-model'), ['llama']);
  });
  it('an engine that names no model takes the upstream model before the global one', async () => {
    assert.deepEqual(await modelsOf('# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n', 'tgi', 'per-upstream', 'global-model'), ['per-upstream']);
  });
  it('then the global model (the info endpoint is down here), then unknown', async () => {
    assert.deepEqual(await modelsOf('# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n', 'tgi', undefined, 'global-model'), ['global-model']);
    assert.deepEqual(await modelsOf('# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n', 'tgi', undefined, undefined), ['unknown']);
  });
});

describe('when a scrape read the engine', () => {
  it('is when the engine was asked, not when its answer had been read (rates run between readings)', async () => {
    const clock = { ms: 5_000, answerTakesMs: 700 };
    const { up, normalizer } = upstreamOf(VLLM, 'vllm', undefined, undefined, clock);
    assert.equal(await up.cycle(new AbortController().signal), true);
    assert.equal(clock.ms, 5_700, 'the answer came 700 ms after the scrape was sent');
    assert.equal(normalizer.readingTime('llama'), 5_000);
  });
});

describe('an engine no adapter maps', () => {
  it('is said once in the log and shows 0 canonical series (not a silent "up")', async () => {
    const { up, logs, metrics } = upstreamOf(
      '# TYPE mistralrs_running_requests gauge\nmistralrs_running_requests{model="m"} 3\n',
      'auto',
      undefined,
      undefined,
    );
    for (let i = 0; i < 3; i++) assert.equal(await up.cycle(new AbortController().signal), true);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(logs.filter((l) => l.includes('no adapter recognises this engine')).length, 1, logs.join(''));
    assert.match(await metrics.text.metrics(), /infertel_upstream_canonical_series\{upstream="u"\} 0/);
  });
});

describe("a scrape's canonical series and its passthrough", () => {
  it('are recorded in the turn the normaliser takes the scrape in, so no /metrics between them pairs new series with the old passthrough', async () => {
    const { up, normalizer } = upstreamOf(VLLM, 'vllm', undefined, undefined);
    let recorded = false;
    let recordedByTheNextTurn: boolean | undefined;
    const ingest = normalizer.ingest.bind(normalizer);
    // A /metrics request is served in a turn of its own: one queued as the normaliser takes the
    // scrape finds the cycle recorded (its passthrough stored; the agent moves the data version in
    // that same turn, in Agent.collect) or not.
    normalizer.ingest = (...args: Parameters<typeof ingest>) => {
      setImmediate(() => {
        recordedByTheNextTurn = recorded;
      });
      return ingest(...args);
    };
    const ok = await up.cycle(new AbortController().signal);
    recorded = true;
    assert.equal(ok, true);
    await new Promise((r) => setImmediate(r));
    assert.equal(recordedByTheNextTurn, true);
  });
});

describe('rejected lines in a successful scrape', () => {
  it('are logged once (position and reason), not at every interval', async () => {
    const { up, logs } = upstreamOf(
      '# TYPE tgi_queue_size gauge\ntgi_queue_size 2\ntgi_x{k="sk-secret"} 0x10\ntgi_batch_current_size 3\n',
      'tgi',
      'm',
      undefined,
    );
    for (let i = 0; i < 3; i++) assert.equal(await up.cycle(new AbortController().signal), true);
    await new Promise((r) => setTimeout(r, 50));
    const lines = logs.filter((l) => l.includes('upstream lines rejected'));
    assert.equal(lines.length, 1, logs.join(''));
    assert.match(lines[0]!, /first at line 3: bad_value/);
    assert.ok(!logs.join('').includes('sk-secret'));
  });
});

describe('JSON summary when no source gives a count', () => {
  it('reports null, not 0, for counts that nothing maps (an unsupported engine says nothing)', async () => {
    const { buildSummary } = await import('../agent/export/summary.js');
    const s = buildSummary([], 1, undefined, { source: 'none', nvml_unavailable: true, devices: [] });
    assert.equal(s.requests_total, null);
    assert.equal(s.errors_total, null);
    assert.equal(s.tokens_generated_total, null);
    assert.equal(s.prompt_tokens_total, null);
  });
});

describe('model from the engine info endpoints', () => {
  const served = (routes: Record<string, unknown>) =>
    startServer((req, res) => {
      const doc = routes[req.url ?? ''];
      if (doc === undefined) res.writeHead(404).end();
      else res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(doc));
    });

  it('vLLM serving LoRA adapters: the base model (entries with a parent are adapters), and the version', async () => {
    const s = await served({
      '/v1/models': {
        data: [
          { id: 'meta-llama/Llama-3.1-8B', parent: null },
          { id: 'sql-lora', parent: 'meta-llama/Llama-3.1-8B' },
        ],
      },
      '/version': { version: '0.11.2' },
    });
    try {
      assert.deepEqual(await vllm.info(`${s.url}/metrics`, new AbortController().signal), { model: 'meta-llama/Llama-3.1-8B', version: '0.11.2' });
    } finally {
      await s.close();
    }
  });

  it('llama.cpp: /v1/models first, else /props (alias, then the file name of model_path), and build_info as version', async () => {
    const s = await served({ '/props': { model_path: '/models/q/qwen2.5-7b-q4.gguf', build_info: 'b7001-abc' } });
    try {
      assert.deepEqual(await llamacpp.info(`${s.url}/metrics`, new AbortController().signal), { model: 'qwen2.5-7b-q4.gguf', version: 'b7001-abc' });
    } finally {
      await s.close();
    }
  });

  it('a missing version does not hide the model; two base models name none', async () => {
    const s = await served({ '/v1/models': { data: [{ id: 'a' }, { id: 'b' }] } });
    try {
      assert.deepEqual(await vllm.info(`${s.url}/metrics`, new AbortController().signal), { model: undefined, version: undefined });
    } finally {
      await s.close();
    }
  });
});
