// Regression tests for the hardening rules that live in pure code (the parser's and the guards'
// own tables are in their test files; the e2e side is in e2e/hardening.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SelfMetrics } from '../agent/export/self-metrics.js';
import { makeLabelPolicy, newGuardCounts } from '../agent/guard/labels.js';
import { newPassthroughCounts, PassthroughGuard } from '../agent/guard/passthrough.js';
import { parseExposition } from '../agent/parse/exposition.js';
import { harness, vllmV1 } from './normalize/harness.js';
import { pipeline } from './fuzz/pipeline.js';

function guard(limits: Partial<{ seriesPerFamily: number; seriesTotal: number; bucketsPerSeries: number }> = {}) {
  const counts = newPassthroughCounts();
  const folded = new Map<string, number>();
  const g = new PassthroughGuard(
    makeLabelPolicy([], 128, []),
    { seriesPerFamily: 10, seriesTotal: 100, bucketsPerSeries: 16, ...limits },
    (f, n) => folded.set(f, (folded.get(f) ?? 0) + n),
    newGuardCounts(),
    counts,
  );
  return { g, counts, folded };
}

describe('hardening: le and quantile cannot bypass the caps', () => {
  it('a histogram series with 50,000 bucket bounds is dropped whole and counted', () => {
    const { g, counts } = guard();
    const buckets = Array.from({ length: 50_000 }, (_, i) => `h_bucket{le="${i + 1}"} ${i}`).join('\n');
    const out = g.apply(parseExposition(`# TYPE h histogram\n${buckets}\nh_bucket{le="+Inf"} 50000\nh_count 50000\nh_sum 1\n# TYPE ok gauge\nok 1\n`).families);
    assert.equal(out.find((f) => f.name === 'h')!.samples.length, 0);
    assert.equal(counts.seriesOverBucketCap, 1);
    assert.equal(out.find((f) => f.name === 'ok')!.samples.length, 1);
  });

  it('a gauge with 50,000 le values is an ordinary label: capped per family, the rest folded', () => {
    const { g, folded } = guard();
    const lines = Array.from({ length: 50_000 }, (_, i) => `g{le="${i}"} 1`).join('\n');
    const out = g.apply(parseExposition(`# TYPE g gauge\n${lines}\n`).families);
    assert.equal(out[0]!.samples.length, 11, '10 series and the overflow series');
    assert.equal(folded.get('g'), 49_990);
  });

  it('a summary with 50,000 quantiles is dropped whole', () => {
    const { g, counts } = guard();
    const q = Array.from({ length: 50_000 }, (_, i) => `s{quantile="${(i / 50_000).toFixed(6)}"} 1`).join('\n');
    const out = g.apply(parseExposition(`# TYPE s summary\n${q}\ns_sum 1\ns_count 1\n`).families);
    assert.equal(out[0]!.samples.length, 0);
    assert.equal(counts.seriesOverBucketCap, 1);
  });
});

describe('hardening: a bomb on one family never starves another', () => {
  it('passthrough: series admitted before keep their slots when a new family bombs the total cap', () => {
    const { g } = guard({ seriesPerFamily: 50, seriesTotal: 60 });
    const queue = Array.from({ length: 20 }, (_, i) => `queue{q="${i}"} 1`).join('\n');
    g.apply(parseExposition(`# TYPE queue gauge\n${queue}\n`).families);
    const bomb = Array.from({ length: 5000 }, (_, i) => `bomb{v="${i}"} 1`).join('\n');
    // The bomb comes first in the payload and still cannot take the queue's reserved slots.
    const out = g.apply(parseExposition(`# TYPE bomb gauge\n${bomb}\n# TYPE queue gauge\n${queue}\n`).families);
    assert.equal(out.find((f) => f.name === 'queue')!.samples.length, 20);
    assert.equal(out.find((f) => f.name === 'bomb')!.samples.length, 41, '40 slots left, plus the overflow series');
  });

  it('normaliser: a bomb of engines on one metric cannot evict tokens and the queue (per-metric reset state)', () => {
    const h = harness({ perMetric: 5 });
    const bomb = Array.from({ length: 500 }, (_, i) => `vllm:num_requests_running{engine="${i}",model_name="llama"} 1.0`).join('\n');
    h.ingest(
      'vllm',
      `# TYPE vllm:num_requests_running gauge\n${bomb}\n${vllmV1({ prompt: [10, 20], waiting: [1, 2] }).replace(/# HELP vllm:num_requests_running[\s\S]*?(?=# HELP vllm:num_requests_waiting)/, '')}`,
    );
    assert.equal(h.value('tokens_input_total', { model: 'llama' }), 30);
    assert.equal(h.value('inference_queue_depth', { model: 'llama' }), 3);
  });
});

describe('hardening: guards never create duplicates', () => {
  it('series made identical by dropping a forbidden label are merged (summed), not emitted twice', () => {
    const { g, counts } = guard();
    const out = g.apply(parseExposition('# TYPE c counter\nc{request_id="1",k="a"} 2\nc{request_id="2",k="a"} 3\nc{k="b"} 1\n').families);
    assert.deepEqual(
      out[0]!.samples.map((s) => [s.labels.join('='), s.value]),
      [
        ['k=a', 5],
        ['k=b', 1],
      ],
    );
    assert.equal(counts.mergedSamples, 1);
  });

  it('values redacted as unbounded (worker addresses) merge too; an identical line repeated in the payload keeps its first sample', () => {
    const { g, counts } = guard();
    const out = g.apply(
      parseExposition('# TYPE w gauge\nw{worker="10.0.0.1:5000"} 2\nw{worker="10.0.0.2:5000"} 3\n# TYPE d gauge\nd{k="x"} 1\nd{k="x"} 9\n').families,
    );
    assert.deepEqual(
      out[0]!.samples.map((s) => [s.labels.join('='), s.value]),
      [['worker=_unbounded_', 5]],
    );
    assert.deepEqual(
      out[1]!.samples.map((s) => s.value),
      [1],
    );
    assert.equal(counts.duplicateSamples, 1);
  });

  it('merged histograms sum bucket by bucket, _count and _sum; merged summaries keep _count and _sum and drop their quantiles', () => {
    const { g, counts } = guard();
    const out = g.apply(
      parseExposition(
        [
          '# TYPE h histogram',
          'h_bucket{request_id="1",le="1"} 1',
          'h_bucket{request_id="1",le="+Inf"} 4',
          'h_count{request_id="1"} 4',
          'h_sum{request_id="1"} 6',
          'h_bucket{request_id="2",le="1"} 2',
          'h_bucket{request_id="2",le="+Inf"} 3',
          'h_count{request_id="2"} 3',
          'h_sum{request_id="2"} 2.5',
          '# TYPE s summary',
          's{request_id="1",quantile="0.5"} 0.2',
          's_count{request_id="1"} 10',
          's_sum{request_id="1"} 4',
          's{request_id="2",quantile="0.5"} 0.9',
          's_count{request_id="2"} 5',
          's_sum{request_id="2"} 1',
          '',
        ].join('\n'),
      ).families,
    );
    // By hand: le=1 1+2, +Inf 4+3, count 4+3, sum 6+2.5; summary count 10+5, sum 4+1, no quantile.
    assert.deepEqual(
      out[0]!.samples.map((s) => [s.name, s.labels.join('='), s.value]),
      [
        ['h_bucket', 'le=1', 3],
        ['h_bucket', 'le=+Inf', 7],
        ['h_count', '', 7],
        ['h_sum', '', 8.5],
      ],
    );
    assert.deepEqual(
      out[1]!.samples.map((s) => [s.name, s.value]),
      [
        ['s_count', 15],
        ['s_sum', 5],
      ],
    );
    assert.equal(counts.mergedSamples, 7);
  });

  it('label values holding the key separator never make two series one', () => {
    const { g } = guard();
    const out = g.apply(parseExposition('# TYPE n gauge\nn{a="x\u0000b\u0000y"} 1\nn{a="x",b="y"} 2\n').families);
    assert.deepEqual(
      out[0]!.samples.map((s) => s.value),
      [1, 2],
    );
  });

  it('an upstream label of the engine is moved to exported_upstream (no duplicate label when shared)', () => {
    const p = pipeline();
    const body = '# TYPE shared_g gauge\nshared_g{upstream="engine-a"} 1\n';
    const out = p.scrape(body, body);
    assert.match(out.text, /shared_g\{upstream="u0",exported_upstream="engine-a"\} 1/);
  });

  it('a \\r or U+2028 inside a shared label value stays inside it (the upstream label is added at the name, once)', () => {
    const p = pipeline();
    const body = '# TYPE sh gauge\nsh{v="a\rb\u2028c"} 1\n';
    const out = p.scrape(body, body);
    assert.ok(out.text.includes('sh{upstream="u0",v="a\rb\u2028c"} 1\n'), JSON.stringify(out.text));
    assert.equal(out.text.split('upstream="u0"').length - 1, 1);
  });
});

describe('hardening: exemplars and timestamps', () => {
  it('exemplars from an OpenMetrics upstream never reach either output (their labels would bypass the guards)', () => {
    const p = pipeline();
    const om =
      '# TYPE x counter\nx_total 3 # {api_key="sk-SECRET"} 1 1700000000.1\n# TYPE h histogram\nh_bucket{le="1"} 1 # {email="a@b.co"} 0.5\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 0.5\n# EOF\n';
    const out = p.scrape(om, om, 'openmetrics');
    for (const body of [out.text, out.openmetrics]) {
      assert.ok(!body.includes('sk-SECRET') && !body.includes('a@b.co'), body);
      assert.ok(!/ # \{/.test(body), 'no exemplar syntax');
    }
    assert.match(out.text, /^x_total\{upstream="u0"\} 3$/m);
  });

  it('timestamps are dropped: text milliseconds never become OpenMetrics seconds', () => {
    const p = pipeline();
    const out = p.scrape('ts_g 5 1700000000000\n', 'other_g 1\n');
    assert.match(out.openmetrics, /^ts_g 5$/m);
    assert.match(out.text, /^ts_g 5$/m);
  });
});

describe('hardening: counter rules', () => {
  const counter = (v: string) => `# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{engine="0",model_name="m"} ${v}\n`;
  it('a 1e-9 backwards jitter is held, not read as a restart (an oscillating upstream does not inflate the export)', () => {
    const h = harness();
    for (const v of ['1000', '999.9999999999', '1000', '999.9999999999', '1000']) h.ingest('vllm', counter(v));
    assert.equal(h.value('tokens_input_total', { model: 'm' }), 1000, 'read as restarts it would be 3000');
  });

  it('a real decrease is a restart: the export stays monotonic', () => {
    const h = harness();
    for (const v of ['1000', '10', '30']) h.ingest('vllm', counter(v));
    assert.equal(h.value('tokens_input_total', { model: 'm' }), 1030);
  });

  for (const poison of ['+Inf', 'NaN', '-5', '1e308e0', '2e300']) {
    it(`a counter sample of ${poison} is ignored: the last good value stays and later samples count`, () => {
      const h = harness();
      h.ingest('vllm', counter('100'));
      const bad = parseExposition(counter(poison)).errors === 0;
      h.ingest('vllm', counter(poison));
      h.ingest('vllm', counter('150'));
      const v = h.value('tokens_input_total', { model: 'm' })!;
      assert.ok(Number.isFinite(v), `${poison}: ${v}`);
      assert.equal(v, 150, `${poison} (parsed: ${bad})`);
    });
  }

  it('a NaN gauge does not poison the observed batch-size histogram', () => {
    const h = harness();
    const running = (v: string) => `# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="m"} ${v}\n`;
    for (const v of ['4', 'NaN', '6', '-3']) h.ingest('vllm', running(v));
    const [s] = h.series('batch_size_observed');
    assert.equal(s!.sum, 10);
    assert.equal(s!.value, 2);
  });

  it('a family whose TYPE flips from gauge to histogram does not feed buckets in as gauge values', () => {
    const h = harness();
    h.ingest('vllm', '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="m"} 3\n');
    h.ingest(
      'vllm',
      '# TYPE vllm:num_requests_waiting histogram\nvllm:num_requests_waiting_bucket{model_name="m",le="+Inf"} 99\nvllm:num_requests_waiting_count{model_name="m"} 99\nvllm:num_requests_waiting_sum{model_name="m"} 500\n',
    );
    const v = h.value('inference_queue_depth', { model: 'm' });
    assert.ok(v === undefined || v === 3, `queue depth ${v}`);
  });
});

describe('hardening: self-metrics are bounded', () => {
  it('infertel_series_overflow_total carries at most 100 metric values, then "other"', async () => {
    const overflowed = new Map<string, number>();
    const m = new SelfMetrics(
      'test',
      () => overflowed,
      () => ({}),
    );
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 100; i++) overflowed.set(`family_${round}_${i}`, 1);
      await m.text.metrics();
    }
    const text = await m.text.metrics();
    const lines = text.split('\n').filter((l) => l.startsWith('infertel_series_overflow_total{'));
    assert.equal(lines.length, 101);
    assert.match(text, /infertel_series_overflow_total\{metric="other"\} 400/);
  });
});
