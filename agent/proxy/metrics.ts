// The request-level metrics the proxy measures, kept as canonical series of the catalogue's
// `proxy` sources. Each finished request is recorded once, so no sum over these series counts a
// request twice; the engine's copy of the same metrics is left out of the catalogue while the
// proxy is on (catalogue.ts, proxySourced).

import { requestLevel, type CanonicalMetric, type Catalogue } from '../catalogue/catalogue.js';
import { OVERFLOW_LABEL, type SeriesLimiter } from '../guard/cardinality.js';
import { guardValue, type GuardCounts, type LabelPolicy } from '../guard/labels.js';
import type { CanonicalFamily, CanonicalSeries } from '../normalize/normalizer.js';

/** An OpenMetrics exemplar: the trace of one request that landed in a bucket. */
export interface Exemplar {
  traceId: string;
  /** In the profile's unit, like the bucket. */
  value: number;
  timestampSec: number;
}

export type StreamEnd = 'engine_reset' | 'client_abort' | 'upstream_timeout';

export interface CanaryRecord {
  model: string;
  sloClass: string;
  result: string;
  ttftMs: number | undefined;
  tokensPerSecond: number | undefined;
  consecutiveFailures: number;
}

/** What the proxy measured about one finished request (times in ms). */
export interface RequestRecord {
  model: string;
  route: string;
  tenant: string;
  /** HTTP status the client got; undefined when the client left before any. */
  status: number | undefined;
  e2eMs: number;
  ttftMs: number | undefined;
  /** Gaps between content chunks, as counts per bucket of the inter_token layout (bounded). */
  gapCounts: readonly number[] | undefined;
  gapSumMs: number;
  promptTokens: number | undefined;
  completionTokens: number | undefined;
  /** A stream that ended before its usage chunk: its tokens are unknown, not zero. */
  usageUnknown: boolean;
  streamEnd: StreamEnd | undefined;
  /** Trace id of a sampled span, for exemplars. */
  traceId: string | undefined;
}

interface Series {
  labels: Array<[string, string]>;
  value: number;
  hist: { bounds: number[]; cum: number[]; count: number; sum: number } | undefined;
  exemplars: Array<Exemplar | undefined> | undefined;
}

export function statusClass(status: number | undefined): string {
  if (status === undefined) return 'unknown';
  return `${Math.floor(status / 100)}xx`;
}

/** Bucket index of a value among ascending bounds (bounds.length means +Inf). */
export function bucketIndex(bounds: readonly number[], v: number): number {
  let lo = 0;
  let hi = bounds.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (v <= (bounds[mid] ?? Number.POSITIVE_INFINITY)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

const SEP = '\u0000';
/**
 * Label sets remembered with their series (a cache: cleared when full). Their values are model
 * names the engine serves, tenants under the cap and fixed words, far fewer than this.
 */
const MAX_RESOLVED = 10_000;

export class ProxyMetrics {
  private readonly series = new Map<string, Series>();
  /**
   * Each label set as given, before the guards, with its series and what guarding it counted: a
   * request's labels repeat from one request to the next, and guarding and joining them again cost
   * most of a record (profiled under load). A hit counts the same again, as guarding would.
   */
  private readonly resolved = new Map<string, { series: Series; truncated: number; redacted: number }>();
  private readonly metrics: Map<string, CanonicalMetric>;
  private cache: CanonicalFamily[] | undefined;
  /** Bumped on each record, so the exposition cache knows the data changed. */
  version = 0;

  constructor(
    catalogue: Catalogue,
    private readonly guard: { policy: LabelPolicy; counts: GuardCounts; limiter: SeriesLimiter },
    private readonly exemplars: boolean,
  ) {
    this.metrics = new Map(catalogue.metrics.filter(requestLevel).map((m) => [m.name, m]));
  }

  /** Bounds of the inter-chunk histogram in ms, for the per-request gap counts. */
  gapBoundsMs(): number[] {
    const m = this.metric('inference_inter_token_latency_ms');
    return (m.bounds ?? []).map((b) => (b * 1000) / m.secondsFactor);
  }

  private metric(name: string): CanonicalMetric {
    const m = this.metrics.get(name);
    if (!m) throw new Error(`${name} has no proxy source in the catalogue`);
    return m;
  }

  private seriesFor(name: string, labels: Record<string, string>): Series {
    const m = this.metric(name);
    let raw = name;
    for (const l of m.labels) {
      const v = labels[l];
      raw += v === undefined ? `${SEP}-` : `${SEP}+${v}`;
    }
    const known = this.resolved.get(raw);
    if (known) {
      this.guard.counts.truncated += known.truncated;
      this.guard.counts.redacted += known.redacted;
      return known.series;
    }
    const truncated = this.guard.counts.truncated;
    const redacted = this.guard.counts.redacted;
    const pairs: Array<[string, string]> = [];
    for (const l of m.labels) {
      const v = labels[l];
      if (v !== undefined) pairs.push([l, guardValue(this.guard.policy, l, v, this.guard.counts)]);
    }
    let key = name + SEP + pairs.map((p) => p[1]).join(SEP);
    let s = this.series.get(key);
    if (!s) {
      if (!this.guard.limiter.admit(m.exportName, key)) {
        // Not remembered: each refused lookup asks the limiter again, which counts it.
        key = name + SEP + OVERFLOW_LABEL;
        s = this.series.get(key);
        if (s) return s;
        pairs.length = 0;
        pairs.push([OVERFLOW_LABEL, 'true']);
        return this.created(m, key, pairs);
      }
      s = this.created(m, key, pairs);
    }
    if (this.resolved.size >= MAX_RESOLVED) this.resolved.clear();
    this.resolved.set(raw, { series: s, truncated: this.guard.counts.truncated - truncated, redacted: this.guard.counts.redacted - redacted });
    return s;
  }

  private created(m: CanonicalMetric, key: string, pairs: Array<[string, string]>): Series {
    const bounds = m.bounds;
    const s: Series = {
      labels: pairs,
      value: 0,
      hist: m.type === 'histogram' && bounds ? { bounds, cum: bounds.map(() => 0), count: 0, sum: 0 } : undefined,
      exemplars: m.type === 'histogram' && bounds && this.exemplars ? new Array(bounds.length + 1).fill(undefined) : undefined,
    };
    this.series.set(key, s);
    return s;
  }

  private toProfile(name: string, ms: number): number {
    return (ms * this.metric(name).secondsFactor) / 1000;
  }

  private observe(name: string, labels: Record<string, string>, ms: number, traceId: string | undefined, nowSec: number): void {
    const s = this.seriesFor(name, labels);
    const h = s.hist!;
    const v = this.toProfile(name, ms);
    const i = bucketIndex(h.bounds, v);
    for (let j = i; j < h.cum.length; j++) h.cum[j] = (h.cum[j] ?? 0) + 1;
    h.count++;
    h.sum += v;
    if (s.exemplars && traceId) s.exemplars[i] = { traceId, value: v, timestampSec: nowSec };
  }

  record(r: RequestRecord, nowMs: number): void {
    const nowSec = nowMs / 1000;
    const base = { model: r.model, route: r.route, tenant: r.tenant };
    this.seriesFor('inference_requests_total', { ...base, code: statusClass(r.status) }).value++;
    this.observe('inference_request_duration_ms', base, r.e2eMs, r.traceId, nowSec);
    if (r.ttftMs !== undefined) this.observe('inference_ttft_ms', base, r.ttftMs, r.traceId, nowSec);
    if (r.gapCounts?.some((n) => n > 0)) {
      const s = this.seriesFor('inference_inter_token_latency_ms', base);
      const h = s.hist!;
      let running = 0;
      for (let i = 0; i < h.cum.length; i++) {
        running += r.gapCounts[i] ?? 0;
        h.cum[i] = (h.cum[i] ?? 0) + running;
      }
      const n = r.gapCounts.reduce((a, b) => a + b, 0);
      h.count += n;
      h.sum += this.toProfile('inference_inter_token_latency_ms', r.gapSumMs);
      if (s.exemplars && r.traceId) {
        const mean = this.toProfile('inference_inter_token_latency_ms', r.gapSumMs / n);
        s.exemplars[bucketIndex(h.bounds, mean)] = { traceId: r.traceId, value: mean, timestampSec: nowSec };
      }
    }
    if (r.promptTokens !== undefined) this.seriesFor('tokens_input_total', { model: r.model, tenant: r.tenant }).value += r.promptTokens;
    if (r.completionTokens !== undefined)
      this.seriesFor('tokens_generated_total', { model: r.model, tenant: r.tenant, phase: 'decode' }).value += r.completionTokens;
    if (r.usageUnknown) this.seriesFor('inference_requests_usage_unknown_total', base).value++;
    if (r.streamEnd) this.seriesFor('inference_stream_resets_total', { ...base, reason: r.streamEnd }).value++;
    this.changed();
  }

  /** A request over a tenant's limit (refused, or only counted for a shadow tenant). */
  recordRateLimited(tenant: string, limit: string): void {
    this.seriesFor('rate_limited_requests_total', { tenant, limit }).value++;
    this.changed();
  }

  /** The remaining share of a tenant's limits, as its latest admission saw them. */
  recordRemaining(tenant: string, ratios: Partial<Record<string, number>>): void {
    for (const [limit, ratio] of Object.entries(ratios)) if (ratio !== undefined) this.seriesFor('rate_limit_remaining_ratio', { tenant, limit }).value = ratio;
    this.cache = undefined;
  }

  /** One canary run: its result, TTFT, decode speed and failures in a row. */
  recordCanary(r: CanaryRecord): void {
    const labels = { model: r.model, slo_class: r.sloClass };
    this.seriesFor('canary_runs_total', { ...labels, result: r.result }).value++;
    if (r.ttftMs !== undefined) this.observe('canary_ttft_ms', labels, r.ttftMs, undefined, 0);
    if (r.tokensPerSecond !== undefined) this.seriesFor('canary_tokens_per_second', labels).value = r.tokensPerSecond;
    this.seriesFor('canary_consecutive_failures', labels).value = r.consecutiveFailures;
    this.changed();
  }

  /** One ping of an engine endpoint (health, models) beside the canaries. */
  recordPing(endpoint: string, up: boolean, ms: number): void {
    this.seriesFor('canary_endpoint_up', { endpoint }).value = up ? 1 : 0;
    this.seriesFor('canary_endpoint_duration_ms', { endpoint }).value = this.toProfile('canary_endpoint_duration_ms', ms);
    this.changed();
  }

  /** One load probe step: latency quantiles (ms) and the step's output tokens per second. */
  recordProbeStep(
    model: string,
    concurrency: number,
    step: { durationMs: [number, number]; ttftMs: [number, number] | undefined; tokensPerSecond: number },
  ): void {
    const c = String(concurrency);
    for (const [q, i] of [
      ['0.5', 0],
      ['0.95', 1],
    ] as const) {
      this.seriesFor('load_probe_request_duration_ms', { model, concurrency: c, quantile: q }).value = this.toProfile(
        'load_probe_request_duration_ms',
        step.durationMs[i],
      );
      if (step.ttftMs)
        this.seriesFor('load_probe_ttft_ms', { model, concurrency: c, quantile: q }).value = this.toProfile('load_probe_ttft_ms', step.ttftMs[i]);
    }
    this.seriesFor('load_probe_tokens_per_second', { model, concurrency: c }).value = step.tokensPerSecond;
    this.changed();
  }

  /** A stream's violations of the SSE contract, one count per kind (streamValidator). */
  recordViolations(model: string, kinds: readonly string[]): void {
    for (const kind of kinds) this.seriesFor('inference_stream_violations_total', { model, kind }).value++;
    this.changed();
  }

  /** Errors of the shared limiter backend. */
  recordBackendError(backend: string): void {
    this.seriesFor('rate_limiter_backend_errors_total', { backend }).value++;
    this.changed();
  }

  /** A series changed: the next families() rebuilds, and the exposition sees a new version. */
  private changed(): void {
    this.cache = undefined;
    this.version++;
  }

  families(): CanonicalFamily[] {
    if (this.cache) return this.cache;
    const byMetric = new Map<string, CanonicalSeries[]>();
    for (const [key, s] of this.series) {
      const name = key.slice(0, key.indexOf(SEP));
      let list = byMetric.get(name);
      if (!list) byMetric.set(name, (list = []));
      list.push({ labels: s.labels, value: s.value, hist: s.hist && { ...s.hist, cum: [...s.hist.cum] }, exemplars: s.exemplars && [...s.exemplars] });
    }
    this.cache = [...this.metrics.values()].flatMap((m) => {
      const series = byMetric.get(m.name);
      return series ? [{ metric: m, series }] : [];
    });
    return this.cache;
  }
}
