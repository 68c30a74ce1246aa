import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { TgiSim } from '../../agent/demo/sim-tgi.js';
import { VllmSim } from '../../agent/demo/sim-vllm.js';
import { SHARED_FIXTURES, sharedFixturesPresent } from '../helpers.js';
import { asOpenMetrics, harness, vllmV1 } from './harness.js';

describe('normaliser: names, units, aliases', () => {
  it('maps vLLM V1 gauges per engine and aggregates them by the catalogue aggregator', () => {
    const h = harness();
    h.ingest('vllm', vllmV1({ running: [3, 4], waiting: [1, 5], kv: [0.2, 0.7] }));
    assert.equal(h.value('inference_active_streams', { model: 'llama' }), 7, 'running: sum');
    assert.equal(h.value('inference_queue_depth', { model: 'llama' }), 6, 'waiting: sum');
    assert.equal(h.value('kv_cache_usage_ratio', { model: 'llama' }), 0.7, 'KV usage: max');
  });

  it('sums counters over engines and converts seconds histograms to ms, bounds and _sum alike', () => {
    const h = harness();
    h.ingest(
      'vllm',
      vllmV1({
        prompt: [10, 20],
        gen: [1, 2],
        e2e: [
          { cum: [1, 2, 3, 4, 5, 6, 7], sum: 2.5 },
          { cum: [0, 0, 1, 1, 1, 1, 2], sum: 1.5 },
        ],
      }),
    );
    assert.equal(h.value('tokens_input_total', { model: 'llama' }), 30);
    assert.equal(h.value('tokens_generated_total', { model: 'llama', phase: 'decode' }), 3);
    const [s] = h.series('inference_request_duration_ms');
    assert.deepEqual(s!.bounds, [5, 10, 20, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800]);
    assert.equal(s!.sum, 4000, '_sum scaled to ms');
    assert.equal(s!.value, 9, '_count exact');
    // 300 ms (0.3 s) holds 1 + 0; interpolated 400 ms = halfway between 300 (1) and 500 (2): 1.5,
    // rounded to a whole count (OpenMetrics): 2.
    assert.equal(s!.cum![6], 2);
    assert.equal(s!.cum![7], 4, 'exact at 800 where bounds coincide: 3 + 1');
    assert.equal(s!.labels.route, 'all');
  });

  it('seconds profile keeps base units and _seconds names', () => {
    const h = harness({ profile: 'seconds' });
    h.ingest(
      'vllm',
      vllmV1({
        e2e: [
          { cum: [1, 2, 3, 4, 5, 6, 7], sum: 2.5 },
          { cum: [0, 0, 0, 0, 0, 0, 0], sum: 0 },
        ],
      }),
    );
    const [s] = h.series('inference_request_duration_seconds');
    assert.equal(s!.sum, 2.5);
    assert.deepEqual(s!.bounds!.slice(0, 3), [0.005, 0.01, 0.02]);
  });

  it('per-metric layouts from config replace the documented ones', async () => {
    const { buildCatalogue } = await import('../../agent/catalogue/catalogue.js');
    assert.deepEqual(
      buildCatalogue('ms', { inference_request_duration_ms: [100, 1000, 10000] }).byName.get('inference_request_duration_ms')!.bounds,
      [100, 1000, 10000],
    );
    assert.deepEqual(buildCatalogue('seconds').byName.get('prefill_latency_ms')!.bounds!.slice(0, 2), [0.0002, 0.0005], 'ms layouts in seconds');
    assert.deepEqual(buildCatalogue('seconds').byName.get('batch_size_observed')!.bounds!.slice(0, 2), [1, 2], 'non-time layouts are not scaled');
  });

  it('native histograms keep the upstream bounds, scaled', () => {
    const h = harness({ histograms: 'native' });
    h.ingest(
      'vllm',
      vllmV1({
        e2e: [
          { cum: [1, 2, 3, 4, 5, 6, 7], sum: 2.5 },
          { cum: [0, 0, 0, 0, 0, 0, 1], sum: 9 },
        ],
      }),
    );
    const [s] = h.series('inference_request_duration_ms');
    assert.deepEqual(s!.bounds, [300, 500, 800, 1000, 1500, 2000]);
    assert.deepEqual(s!.cum, [1, 2, 3, 4, 5, 6]);
  });

  const aliasCases: Array<{ name: string; text: string; metric: string; want: number | undefined }> = [
    {
      name: 'V0 gpu_cache_usage_perc',
      text: '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name="m"} 0.4\n',
      metric: 'kv_cache_usage_ratio',
      want: 0.4,
    },
    {
      name: '0.9-0.10 emit old and new KV names: the new one wins, no double count',
      text: '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.9\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.3\n',
      metric: 'kv_cache_usage_ratio',
      want: 0.3,
    },
    {
      name: 'ray_vllm: prefix with Ray worker labels',
      text: '# TYPE ray_vllm:num_requests_running gauge\nray_vllm:num_requests_running{WorkerId="a1",model_name="m"} 2\nray_vllm:num_requests_running{WorkerId="b2",model_name="m"} 3\n',
      metric: 'inference_active_streams',
      want: 5,
    },
    {
      name: 'NIM unprefixed vLLM names',
      text: '# TYPE num_requests_waiting gauge\nnum_requests_waiting{model_name="m"} 4.0\n',
      metric: 'inference_queue_depth',
      want: 4,
    },
    {
      name: 'V0 prefix-cache hit rate gauge used as is',
      text: '# TYPE vllm:gpu_prefix_cache_hit_rate gauge\nvllm:gpu_prefix_cache_hit_rate{model_name="m"} 0.25\n',
      metric: 'kv_cache_hit_ratio',
      want: 0.25,
    },
    {
      name: 'V0 hit rate -1 means disabled: no series',
      text: '# TYPE vllm:gpu_prefix_cache_hit_rate gauge\nvllm:gpu_prefix_cache_hit_rate{model_name="m"} -1\n',
      metric: 'kv_cache_hit_ratio',
      want: undefined,
    },
    {
      name: 'V0 spec-decode acceptance gauge',
      text: '# TYPE vllm:spec_decode_draft_acceptance_rate gauge\nvllm:spec_decode_draft_acceptance_rate{model_name="m"} 0.6\n',
      metric: 'draft_accept_ratio',
      want: 0.6,
    },
    {
      name: 'finish reasons',
      text: '# TYPE vllm:request_success_total counter\nvllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 7.0\nvllm:request_success_total{engine="1",finished_reason="stop",model_name="m"} 3.0\n',
      metric: 'inference_requests_finished_total',
      want: 10,
    },
  ];
  for (const c of aliasCases) {
    it(`alias: ${c.name}`, () => {
      const h = harness();
      h.ingest('vllm', c.text);
      assert.equal(h.value(c.metric), c.want);
    });
  }

  it('prefers inter_token_latency over the deprecated time_per_output_token when both are present', () => {
    const hist = (name: string, n: number) =>
      `# TYPE vllm:${name} histogram\nvllm:${name}_bucket{le="0.01",model_name="m"} ${n}\nvllm:${name}_bucket{le="+Inf",model_name="m"} ${n}\nvllm:${name}_count{model_name="m"} ${n}\nvllm:${name}_sum{model_name="m"} 0.001\n`;
    const h = harness();
    h.ingest('vllm', hist('time_per_output_token_seconds', 50) + hist('inter_token_latency_seconds', 7));
    assert.equal(h.value('decode_iter_latency_ms'), 7);
  });

  it('maps http_requests_total handler/status to route/code and takes the model from the payload', () => {
    const h = harness();
    h.ingest(
      'vllm',
      vllmV1({
        extra:
          '# TYPE http_requests_total counter\nhttp_requests_total{handler="/v1/chat/completions",method="POST",status="2xx"} 5.0\nhttp_requests_total{handler="/v1/chat/completions",method="GET",status="2xx"} 1.0\nhttp_requests_total{handler="/v1/chat/completions",method="POST",status="5xx"} 2.0\n',
      }),
    );
    assert.equal(h.value('inference_requests_total', { model: 'llama', route: '/v1/chat/completions', code: '2xx' }), 6);
    assert.equal(h.value('inference_requests_total', { code: '5xx' }), 2);
  });

  it('TGI: success is 2xx, failures map to the class the router answers with, model from config', () => {
    const h = harness();
    h.ingest(
      'tgi',
      '# TYPE tgi_request_success counter\ntgi_request_success 10\n\n# TYPE tgi_request_failure counter\ntgi_request_failure{err="validation"} 2\ntgi_request_failure{err="overloaded"} 1\ntgi_request_failure{err="generation"} 1\ntgi_request_failure{err="incomplete"} 3\ntgi_request_failure{err="dropped"} 1\n\n',
      'tgi',
      'mistral',
    );
    assert.equal(h.value('inference_requests_total', { model: 'mistral', code: '2xx' }), 10);
    assert.equal(h.value('inference_requests_total', { code: '4xx' }), 4);
    assert.equal(h.value('inference_requests_total', { code: '5xx' }), 4);
  });

  it('TGI: token counters come from the length histograms _sum; batch histograms split by method', () => {
    const sim = new TgiSim({ maxInputTokens: 511, maxTotalTokens: 512, rate: 50, seed: 3 }, 0);
    sim.advance(10_000);
    const text = sim.render();
    const h = harness();
    h.ingest('tgi', text, 'tgi', 'mistral');
    const sumOf = (name: string) =>
      Number(
        text
          .split('\n')
          .find((l) => l.startsWith(`${name}_sum `))!
          .split(' ')[1],
      );
    assert.equal(h.value('tokens_generated_total', { model: 'mistral' }), sumOf('tgi_request_generated_tokens'));
    assert.equal(h.value('tokens_input_total', { model: 'mistral' }), sumOf('tgi_request_input_length'));
    assert.ok(h.value('prefill_latency_ms')! > 0);
    assert.ok(h.value('decode_iter_latency_ms')! > h.value('prefill_latency_ms')!, 'more decode steps than prefills');
    assert.equal(h.value('inference_ttft_ms'), undefined, 'TGI has no TTFT: none is invented');
    const ctx = h.series('inference_requests_by_context_total');
    assert.equal(
      ctx.reduce((a, s) => a + s.value, 0),
      Number(
        text
          .split('\n')
          .find((l) => l.startsWith('tgi_request_input_length_count '))!
          .split(' ')[1],
      ),
    );
  });
});

describe('normaliser: NVIDIA NIM (vLLM names without a prefix)', () => {
  it('label-less series take the one model the payload names, and finish reasons come from request_finish_total', () => {
    const h = harness();
    h.ingest(
      'vllm',
      '# TYPE num_requests_running gauge\nnum_requests_running 2.0\n' +
        '# TYPE prompt_tokens_total counter\nprompt_tokens_total{model_name="llama"} 5.0\n' +
        '# TYPE request_finish_total counter\nrequest_finish_total{finished_reason="stop",model_name="llama"} 3.0\nrequest_finish_total{finished_reason="length",model_name="llama"} 1.0\n' +
        '# TYPE request_success_total counter\nrequest_success_total{model_name="llama"} 4.0\n',
    );
    assert.equal(h.value('inference_active_streams', { model: 'llama' }), 2);
    assert.equal(h.value('inference_requests_finished_total', { model: 'llama', reason: 'stop' }), 3);
    assert.equal(h.value('inference_requests_finished_total', { model: 'llama', reason: 'length' }), 1);
    assert.equal(h.series('inference_requests_finished_total').length, 2, 'no reason="unknown" series');
  });
});

describe('normaliser: old and new names are chosen per model', () => {
  it('a model still on the old KV name keeps its series beside one on the new name; a model with both counts once', () => {
    const h = harness();
    h.ingest(
      'vllm',
      '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0",model_name="new"} 0.5\nvllm:kv_cache_usage_perc{engine="0",model_name="both"} 0.25\n' +
        '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{engine="0",model_name="old"} 0.75\nvllm:gpu_cache_usage_perc{engine="0",model_name="both"} 0.9\n',
    );
    assert.equal(h.value('kv_cache_usage_ratio', { model: 'new' }), 0.5);
    assert.equal(h.value('kv_cache_usage_ratio', { model: 'old' }), 0.75, 'the old name is not lost for this model');
    assert.equal(h.value('kv_cache_usage_ratio', { model: 'both' }), 0.25, 'the newest name wins, no double count');
  });
});

describe('normaliser: OpenMetrics input', () => {
  it('the same vLLM payload as text 0.0.4 and as OpenMetrics gives identical canonical output (counters named without _total)', () => {
    const payload = vllmV1({
      prompt: [10, 20],
      gen: [1, 2],
      waiting: [1, 1],
      e2e: [
        { cum: [1, 2, 3, 4, 5, 6, 7], sum: 2.5 },
        { cum: [0, 0, 1, 1, 1, 1, 2], sum: 1.5 },
      ],
    });
    const om = asOpenMetrics(payload);
    assert.match(om, /^# TYPE vllm:prompt_tokens counter$/m, 'the OpenMetrics spelling is used');
    const text = harness();
    const open = harness();
    text.ingest('vllm', payload);
    open.ingest('vllm', om, 'u1', undefined, 'openmetrics');
    assert.equal(open.value('tokens_input_total', { model: 'llama' }), 30);
    assert.deepEqual(open.snapshot(50_000), text.snapshot(50_000));
  });
});

describe('normaliser: counters stay monotonic', () => {
  it('a counter reset (engine restart) is carried as an offset', () => {
    const h = harness();
    h.ingest('vllm', vllmV1({ prompt: [100, 50] }));
    h.ingest('vllm', vllmV1({ prompt: [120, 60] }));
    assert.equal(h.value('tokens_input_total'), 180);
    h.ingest('vllm', vllmV1({ prompt: [5, 70] }));
    assert.equal(h.value('tokens_input_total'), 120 + 5 + 70);
    h.ingest('vllm', vllmV1({ prompt: [15, 71] }));
    assert.equal(h.value('tokens_input_total'), 120 + 15 + 71);
  });

  it('a histogram reset keeps buckets, _count and _sum monotonic', () => {
    const h = harness();
    const e2e = (k: number) => [
      { cum: [1, 2, 3, 4, 5, 6, 7].map((x) => x * k), sum: 2 * k },
      { cum: [0, 0, 0, 0, 0, 0, 0], sum: 0 },
    ];
    h.ingest('vllm', vllmV1({ e2e: e2e(3) }));
    const before = h.series('inference_request_duration_ms')[0]!;
    h.ingest('vllm', vllmV1({ e2e: e2e(1) }));
    const after = h.series('inference_request_duration_ms')[0]!;
    assert.equal(after.value, 21 + 7);
    assert.equal(after.sum, (6 + 2) * 1000);
    after.cum!.forEach((c, i) => {
      assert.ok(c >= before.cum![i]!, `bucket ${i}`);
    });
  });

  it('merged upstreams stay monotonic when one restarts and when one disappears', () => {
    const h = harness({ stale: 2 });
    const tgi = (n: number) => `# TYPE tgi_request_success counter\ntgi_request_success ${n}\n`;
    h.ingest('tgi', tgi(10), 'a', 'm');
    h.ingest('tgi', tgi(20), 'b', 'm');
    assert.equal(h.value('inference_requests_total'), 30);
    h.ingest('tgi', tgi(2), 'a', 'm');
    assert.equal(h.value('inference_requests_total'), 32);
    h.fail('b');
    h.fail('b');
    assert.equal(h.value('inference_requests_total'), 32, 'b retired after 2 failed scrapes; its count stays');
    h.ingest('tgi', tgi(3), 'a', 'm');
    assert.equal(h.value('inference_requests_total'), 33);
  });

  it('gauges of a vanished series are dropped after N scrapes', () => {
    const h = harness({ stale: 3 });
    h.ingest('vllm', vllmV1({ running: [1, 2] }));
    h.ingest('vllm', '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="llama"} 1.0\n');
    assert.equal(h.value('inference_active_streams'), 3, 'engine 1 kept while missing < 3 scrapes');
    h.ingest('vllm', '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="llama"} 1.0\n');
    h.ingest('vllm', '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="llama"} 1.0\n');
    assert.equal(h.value('inference_active_streams'), 1);
  });
});

describe('normaliser: derived metrics', () => {
  it('tokens_per_second is the counter delta over the interval, per phase', () => {
    const h = harness();
    h.ingest('vllm', vllmV1({ gen: [100, 100], prompt: [1000, 0] }));
    h.snapshot(0);
    h.ingest('vllm', vllmV1({ gen: [150, 150], prompt: [3000, 0] }));
    assert.equal(h.value('tokens_per_second', { phase: 'decode' }, 10_000), 10);
    assert.equal(h.value('tokens_per_second', { phase: 'prefill' }, 10_000), 200);
  });

  it('kv_cache_hit_ratio comes from prefix-cache counter deltas (V1), not lifetime totals', () => {
    const h = harness();
    const p = (q: number, hit: number) =>
      `# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{engine="0",model_name="m"} ${q}\n# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{engine="0",model_name="m"} ${hit}\n`;
    h.ingest('vllm', p(1000, 900));
    h.snapshot(0);
    h.ingest('vllm', p(2000, 1100));
    assert.equal(h.value('kv_cache_hit_ratio', {}, 10_000), 0.2);
    assert.equal(h.series('infertel_internal_prefix_cache_hits_total').length, 1, 'inputs exist internally');
  });

  it('draft_accept_ratio from V1 spec-decode counters', () => {
    const h = harness();
    const p = (d: number, a: number) =>
      `# TYPE vllm:spec_decode_num_draft_tokens_total counter\nvllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} ${d}\n# TYPE vllm:spec_decode_num_accepted_tokens_total counter\nvllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} ${a}\n`;
    h.ingest('vllm', p(100, 50));
    h.snapshot(0);
    h.ingest('vllm', p(300, 200));
    assert.equal(h.value('draft_accept_ratio', {}, 10_000), 0.75);
  });

  it('batch_size_observed samples running requests each scrape (decode)', () => {
    const h = harness();
    h.ingest('vllm', vllmV1({ running: [3, 4] }));
    h.ingest('vllm', vllmV1({ running: [1, 1] }));
    const [s] = h.series('batch_size_observed');
    assert.equal(s!.labels.phase, 'decode');
    assert.equal(s!.value, 4, 'two engines x two scrapes');
    assert.equal(s!.sum, 9);
  });

  it('context buckets from the vLLM prompt-length histogram', () => {
    const h = harness();
    h.ingest(
      'vllm',
      `# TYPE vllm:request_prompt_tokens histogram\n${[
        [1000, 40],
        [2000, 60],
        [5000, 90],
        [10000, 95],
        [20000, 100],
      ]
        .map(([le, c]) => `vllm:request_prompt_tokens_bucket{le="${le}.0",model_name="m"} ${c}.0`)
        .join(
          '\n',
        )}\nvllm:request_prompt_tokens_bucket{le="+Inf",model_name="m"} 100.0\nvllm:request_prompt_tokens_count{model_name="m"} 100.0\nvllm:request_prompt_tokens_sum{model_name="m"} 1.0\n`,
    );
    const got = Object.fromEntries(h.series('inference_requests_by_context_total').map((s) => [s.labels.context_bucket, Math.round(s.value * 1e6) / 1e6]));
    assert.deepEqual(got, { '<=1k': 40, '1k-4k': 40, '4k-16k': 18, '>16k': 2 });
  });
});

describe('normaliser: guards', () => {
  it('caps series per metric and folds the rest into otel_metric_overflow', () => {
    const h = harness({ perMetric: 3 });
    const lines = Array.from({ length: 10 }, (_, i) => `vllm:num_requests_running{model_name="model-${i}"} 1`).join('\n');
    h.ingest('vllm', `# TYPE vllm:num_requests_running gauge\n${lines}\n`);
    const s = h.series('inference_active_streams');
    assert.equal(s.length, 4);
    assert.equal(s.find((x) => x.labels.otel_metric_overflow === 'true')!.value, 7);
    assert.equal(h.limiter.overflowed.get('inference_active_streams'), 7);
  });

  it('never exports labels outside the allowlist', () => {
    const h = harness();
    h.ingest('vllm', '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="m",request_id="r1",user_id="u"} 2\n');
    const [s] = h.series('inference_active_streams');
    assert.deepEqual(Object.keys(s!.labels), ['model']);
  });
});

describe('normaliser: real captures (../shared/fixtures)', { skip: !sharedFixturesPresent() && 'no ../shared/fixtures' }, () => {
  it('vLLM V0 capture yields canonical series', () => {
    const h = harness();
    h.ingest('vllm', readFileSync(`${SHARED_FIXTURES}vllm-v0-2024-06-datadog-opt125m.prom`, 'utf8'));
    assert.ok(h.value('inference_ttft_ms', { model: 'facebook/opt-125m' })! > 0);
    assert.notEqual(h.value('kv_cache_usage_ratio', { model: 'facebook/opt-125m' }), undefined);
    assert.ok(h.value('tokens_generated_total', { model: 'facebook/opt-125m' })! > 0);
  });
  it('TGI 3.x capture yields canonical series with the configured model', () => {
    const h = harness();
    h.ingest('tgi', readFileSync(`${SHARED_FIXTURES}tgi-3.x-datadog.prom`, 'utf8'), 'tgi', 'hermes');
    assert.equal(h.value('inference_requests_total', { model: 'hermes', code: '2xx' }), 109);
    assert.equal(h.value('inference_requests_total', { code: '4xx' }), 2);
    assert.ok(h.value('inference_request_duration_ms')! > 0);
  });
});

describe('normaliser: how many engine series add up to a counter', () => {
  it('each canonical counter says how many live source series it sums (a per-GPU counter over two data-parallel ranks)', () => {
    const h = harness();
    const flops = (values: number[]) =>
      `# TYPE vllm:estimated_flops_per_gpu_total counter\n${values.map((v, i) => `vllm:estimated_flops_per_gpu_total{engine="${i}",model_name="m"} ${v}\n`).join('')}`;
    h.ingest('vllm', flops([10, 30]));
    const series = () => h.snapshot().find((f) => f.metric.name === 'inference_estimated_flops_per_gpu_total')?.series[0];
    assert.equal(series()?.value, 40);
    assert.equal(series()?.sources, 2);
    h.ingest('vllm', flops([20]));
    h.ingest('vllm', flops([20]));
    h.ingest('vllm', flops([20]));
    assert.equal(series()?.sources, 1, 'a rank gone for staleAfterScrapes (3) scrapes no longer counts');
    assert.equal(series()?.value, 50, 'and what it had counted stays in the sum');
  });
});

describe('normaliser: simulated vLLM V1 with two engines', () => {
  it('every canonical vLLM metric appears', () => {
    const sim = new VllmSim({ model: 'm', engines: 2, maxModelLen: 32768, rate: 20, seed: 1 }, 0);
    sim.advance(5000);
    const h = harness();
    h.ingest('vllm', sim.render());
    sim.advance(15_000);
    h.snapshot(0);
    h.ingest('vllm', sim.render());
    const present = new Set(h.snapshot(10_000).map((f) => f.metric.name));
    for (const m of [
      'inference_requests_total',
      'inference_requests_finished_total',
      'inference_request_duration_ms',
      'inference_ttft_ms',
      'queue_time_ms',
      'prefill_latency_ms',
      'decode_iter_latency_ms',
      'inference_active_streams',
      'inference_queue_depth',
      'tokens_generated_total',
      'tokens_input_total',
      'tokens_per_second',
      'batch_size_observed',
      'kv_cache_usage_ratio',
      'kv_cache_hit_ratio',
      'preemptions_total',
      'inference_requests_by_context_total',
    ]) {
      assert.ok(present.has(m), m);
    }
  });
});

describe('derived metrics advance only when told (snapshot() is pure)', () => {
  it('reading a snapshot never moves a rate; advance() does, once per change of the data', () => {
    const h = harness();
    const gen = (v: number) => vllmV1({ running: [1], gen: [v] });
    const rate = () =>
      h.n
        .snapshot()
        .find((f) => f.metric.name === 'tokens_per_second')
        ?.series.find((s) => s.labels.some(([k, v]) => k === 'phase' && v === 'decode'))?.value;
    h.ingest('vllm', gen(100));
    h.n.advance(1_000_000, 1);
    h.ingest('vllm', gen(300));
    assert.equal(rate(), undefined, 'no rate before the second advance');
    h.n.advance(1_010_000, 1);
    assert.equal(rate(), 20, '(300 - 100) / 10 s');
    for (let i = 0; i < 3; i++) assert.equal(rate(), 20, 'reading again changes nothing');
    h.n.advance(1_020_000, 1);
    assert.equal(rate(), 20, 'no new data: advancing is a no-op, not a rate of 0');
    h.ingest('vllm', gen(400));
    h.n.advance(1_020_000 + 50_000, 1);
    assert.equal(rate(), 100 / 60, 'measured from the last advance that took a sample');
  });

  it("a rate runs from one reading of the engine to the next, not between the agent's cycles", () => {
    const h = harness();
    const decode = (model: string) =>
      h.n
        .snapshot()
        .find((f) => f.metric.name === 'tokens_per_second')
        ?.series.find((s) => s.labels.some(([k, v]) => k === 'model' && v === model) && s.labels.some(([k, v]) => k === 'phase' && v === 'decode'))?.value;
    h.ingest('vllm', vllmV1({ running: [1], gen: [100] }), 'u1', undefined, 'text', 1_000_000);
    // The first answer was read 300 ms after the engine was asked, the second at once: the agent's
    // cycles are 9.7 s apart, the readings 10 s.
    h.n.advance(1_000_300, 1);
    h.ingest('vllm', vllmV1({ running: [1], gen: [300] }), 'u1', undefined, 'text', 1_010_000);
    h.n.advance(1_010_000, 1);
    assert.equal(decode('llama'), 20, '(300 - 100) tokens / 10 s between the readings, not 200 / 9.7 s');
    assert.equal(h.n.readingTime('llama'), 1_010_000);
    assert.equal(h.n.readingTime('absent'), undefined, "no reading names it: the caller's clock stands in");

    // A second upstream with its own model and its own reading times; neither moves the other's.
    h.ingest('vllm', vllmV1({ running: [1], gen: [0], model: 'other' }), 'u2', undefined, 'text', 1_002_000);
    h.n.advance(1_012_000, 1);
    h.ingest('vllm', vllmV1({ running: [1], gen: [50], model: 'other' }), 'u2', undefined, 'text', 1_007_000);
    h.n.advance(1_013_000, 1);
    assert.equal(decode('other'), 10, "50 tokens over the 5 s between u2's readings");
    assert.equal(h.n.readingTime('other'), 1_007_000);
    assert.equal(h.n.readingTime('llama'), 1_010_000, 'u1 was not read again');
  });
});
