// The proxy's series lookups remember each label set with its series. These hold the remembered
// path to what a fresh lookup does: the same series, the same guard counts, and a label set over
// the series budget refused (and counted) every time, never remembered as admitted.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildCatalogue } from '../../agent/catalogue/catalogue.js';
import { SeriesLimiter } from '../../agent/guard/cardinality.js';
import { makeLabelPolicy, newGuardCounts } from '../../agent/guard/labels.js';
import { ProxyMetrics, type RequestRecord } from '../../agent/proxy/metrics.js';

const catalogue = buildCatalogue('ms');

function metricsWith(budget = { perMetric: 1000, total: 10_000 }) {
  const guard = { policy: makeLabelPolicy([], 24, []), counts: newGuardCounts(), limiter: new SeriesLimiter(budget) };
  return { metrics: new ProxyMetrics(catalogue, guard, false), guard };
}

function request(over: Partial<RequestRecord>): RequestRecord {
  return {
    model: 'llama-3-8b',
    route: '/v1/chat/completions',
    tenant: 'acme',
    status: 200,
    e2eMs: 120,
    ttftMs: 30,
    gapCounts: [0, 3, 1],
    gapSumMs: 40,
    promptTokens: 12,
    completionTokens: 5,
    usageUnknown: false,
    streamEnd: undefined,
    traceId: undefined,
    ...over,
  };
}

const family = (m: ProxyMetrics, name: string) => m.families().find((f) => f.metric.name === name)?.series ?? [];

describe('proxy metrics: remembered label sets', () => {
  const rows: Array<[string, Partial<RequestRecord>]> = [
    ['plain labels', {}],
    ['a tenant name past the value cap (truncated)', { tenant: 'a-tenant-name-far-longer-than-the-cap' }],
    ['a model name that looks like an id (redacted)', { model: '3f9c2e4b1d0778a6c5e2' }],
    ['both, on a reset stream', { tenant: 't'.repeat(40), model: '0123456789abcdef0123', streamEnd: 'engine_reset', status: 502 }],
  ];
  for (const [what, over] of rows)
    it(`${what}: three records count as three fresh lookups do`, () => {
      const repeated = metricsWith();
      for (let i = 0; i < 3; i++) repeated.metrics.record(request(over), 1000);
      const fresh = [metricsWith(), metricsWith(), metricsWith()];
      for (const f of fresh) f.metrics.record(request(over), 1000);
      const sum = (k: 'truncated' | 'redacted') => fresh.reduce((s, f) => s + f.guard.counts[k], 0);
      assert.equal(repeated.guard.counts.truncated, sum('truncated'));
      assert.equal(repeated.guard.counts.redacted, sum('redacted'));
      const requests = family(repeated.metrics, 'inference_requests_total');
      assert.equal(requests.length, 1, 'one series for the three');
      assert.equal(requests[0]?.value, 3);
      assert.deepEqual(requests[0]?.labels, family(fresh[0]!.metrics, 'inference_requests_total')[0]?.labels);
    });

  it('counts the guards on a hit (the rows above would pass with no guard counts at all)', () => {
    const m = metricsWith();
    m.metrics.record(request({ tenant: 'x'.repeat(30) }), 1000);
    const once = m.guard.counts.truncated;
    assert.ok(once > 0);
    m.metrics.record(request({ tenant: 'x'.repeat(30) }), 1000);
    assert.equal(m.guard.counts.truncated, 2 * once);
  });

  it('asks the limiter again for a label set it refused, and never remembers it as admitted', () => {
    const m = metricsWith({ perMetric: 1, total: 10_000 });
    m.metrics.record(request({ tenant: 'acme' }), 1000);
    for (let i = 0; i < 3; i++) m.metrics.record(request({ tenant: 'globex' }), 1000);
    const requests = family(m.metrics, 'inference_requests_total');
    const overflow = requests.find((s) => s.labels.some(([k]) => k !== 'model' && k !== 'route' && k !== 'tenant' && k !== 'code'));
    assert.equal(overflow?.value, 3, 'globex folded into the overflow series each time');
    assert.equal(m.guard.limiter.overflowed.get(catalogue.metrics.find((c) => c.name === 'inference_requests_total')!.exportName), 3);
  });
});
