// Drives the normaliser directly with exposition text.

import { buildCatalogue, type UnitProfile } from '../../agent/catalogue/catalogue.js';
import { SeriesLimiter } from '../../agent/guard/cardinality.js';
import { makeLabelPolicy, newGuardCounts } from '../../agent/guard/labels.js';
import { Normalizer, type CanonicalFamily } from '../../agent/normalize/normalizer.js';
import { parseExposition, type InputFormat } from '../../agent/parse/exposition.js';
import { FLAVOR_TABLE, normaliserView, type Flavor } from '../../agent/sources/flavor.js';
import { canonicalInput } from '../../agent/sources/adapter.js';

export interface Harness {
  n: Normalizer;
  limiter: SeriesLimiter;
  /** `readAtMs`: when the engine was asked for `text` (the scrape's send time). */
  ingest(flavor: Flavor, text: string, upstream?: string, model?: string, format?: InputFormat, readAtMs?: number): void;
  fail(upstream: string): void;
  snapshot(nowMs?: number): CanonicalFamily[];
  /** Value of the one series of `metric` whose labels include `labels`; undefined if none. */
  value(metric: string, labels?: Record<string, string>, nowMs?: number): number | undefined;
  series(metric: string, nowMs?: number): Array<{ labels: Record<string, string>; value: number; bounds?: number[]; cum?: number[]; sum?: number }>;
}

export function harness(opts: { profile?: UnitProfile; histograms?: 'rebucket' | 'native'; perMetric?: number; total?: number; stale?: number } = {}): Harness {
  const catalogue = buildCatalogue(opts.profile ?? 'ms');
  const limiter = new SeriesLimiter({ perMetric: opts.perMetric ?? 2000, total: opts.total ?? 50_000 });
  const n = new Normalizer(catalogue, {
    histograms: opts.histograms ?? 'rebucket',
    staleAfterScrapes: opts.stale ?? 3,
    seriesPerMetric: opts.perMetric ?? 2000,
    labelPolicy: makeLabelPolicy([], 128, ['model', 'model_name']),
    limiter,
    guardCounts: newGuardCounts(),
  });
  let clock = 1_000_000;
  const h: Harness = {
    n,
    limiter,
    ingest(flavor, text, upstream = 'u1', model, format = 'text', readAtMs) {
      const fam = parseExposition(text, format).families;
      const a = FLAVOR_TABLE[flavor];
      n.ingest({ ...normaliserView(a, upstream, model ?? a.payloadModel(fam) ?? 'unknown'), readAtMs }, canonicalInput(a, fam));
    },
    fail: (u) => n.markFailed(u),
    snapshot: (nowMs) => {
      n.advance(nowMs ?? (clock += 10_000), 1);
      return n.snapshot();
    },
    series(metric, nowMs) {
      const fam = h.snapshot(nowMs).find((f) => f.metric.exportName === metric || f.metric.name === metric);
      return (fam?.series ?? []).map((s) => ({
        labels: Object.fromEntries(s.labels),
        value: s.value,
        bounds: s.hist?.bounds,
        cum: s.hist?.cum,
        sum: s.hist?.sum,
      }));
    },
    value(metric, labels = {}, nowMs) {
      const matches = h.series(metric, nowMs).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
      if (matches.length > 1) throw new Error(`${metric}: ${matches.length} series match ${JSON.stringify(labels)}`);
      return matches[0]?.value;
    },
  };
  return h;
}

/** vLLM V1 payload builder: two engines by default, prometheus_client formatting. */
export function vllmV1(v: {
  running?: number[];
  waiting?: number[];
  kv?: number[];
  prompt?: number[];
  gen?: number[];
  e2e?: Array<{ cum: number[]; sum: number }>;
  model?: string;
  extra?: string;
}): string {
  const model = v.model ?? 'llama';
  const engines = (v.running ?? [1, 2]).map((_, i) => String(i));
  const lines: string[] = [];
  const g = (name: string, type: string, vals: number[] | undefined) => {
    if (!vals) return;
    lines.push(`# HELP vllm:${name} x\n# TYPE vllm:${name} ${type}`);
    engines.forEach((e, i) => {
      lines.push(`vllm:${name}{engine="${e}",model_name="${model}"} ${vals[i]!.toFixed(1)}`);
    });
  };
  g('num_requests_running', 'gauge', v.running ?? [1, 2]);
  g('num_requests_waiting', 'gauge', v.waiting);
  g('kv_cache_usage_perc', 'gauge', v.kv);
  g('prompt_tokens_total', 'counter', v.prompt);
  g('generation_tokens_total', 'counter', v.gen);
  if (v.e2e) {
    const le = ['0.3', '0.5', '0.8', '1.0', '1.5', '2.0'];
    lines.push('# HELP vllm:e2e_request_latency_seconds x\n# TYPE vllm:e2e_request_latency_seconds histogram');
    engines.forEach((e, i) => {
      const h = v.e2e![i]!;
      le.forEach((b, j) => {
        lines.push(`vllm:e2e_request_latency_seconds_bucket{engine="${e}",le="${b}",model_name="${model}"} ${h.cum[j]}`);
      });
      lines.push(`vllm:e2e_request_latency_seconds_bucket{engine="${e}",le="+Inf",model_name="${model}"} ${h.cum[le.length]}`);
      lines.push(`vllm:e2e_request_latency_seconds_count{engine="${e}",model_name="${model}"} ${h.cum[le.length]}`);
      lines.push(`vllm:e2e_request_latency_seconds_sum{engine="${e}",model_name="${model}"} ${h.sum}`);
    });
  }
  return `${lines.join('\n')}\n${v.extra ?? ''}`;
}

export { asOpenMetrics } from '../../bench/payloads.js';
