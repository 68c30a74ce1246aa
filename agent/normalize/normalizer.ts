// The normaliser: upstream families in, canonical series out. It owns the state that makes
// exported counters monotonic (reset offsets, retired contributions), the aggregation over
// dropped labels, the derived metrics and the canonical series caps.

import type { CanonicalMetric, Catalogue, SourceSpec } from '../catalogue/catalogue.js';
import { roundBound } from '../catalogue/catalogue.js';
import { labelValue, type Family } from '../parse/exposition.js';
import { guardValue, type GuardCounts, type LabelPolicy } from '../guard/labels.js';
import { OVERFLOW_LABEL, type SeriesLimiter } from '../guard/cardinality.js';
import { bucketizeCounts, rebucket } from './rebucket.js';
import { addHist, cloneHist, emptyHist, histogramsOf, matches, wholeCumulative, type HistData } from './histograms.js';
import { Derivations } from './derive.js';
import { aggregate, type ExportedState, type SourceState, type Contribution } from './aggregate.js';

export { wholeCumulative, type HistData } from './histograms.js';

export interface CanonicalSeries {
  /** Label pairs in the catalogue's label order. */
  labels: Array<[string, string]>;
  value: number;
  hist: HistData | undefined;
  /**
   * Counters the normaliser aggregates: how many live source series add up to it now. An engine's
   * data-parallel ranks each report their own, so a per-GPU counter over this many is one GPU's.
   */
  sources?: number;
  /** Per bucket (the last is +Inf): the trace of one request that landed there (proxy histograms, OpenMetrics only). */
  exemplars?: ReadonlyArray<{ traceId: string; value: number; timestampSec: number } | undefined> | undefined;
}

export interface CanonicalFamily {
  metric: CanonicalMetric;
  series: CanonicalSeries[];
}

/** What the normaliser needs to know about the upstream a payload came from. */
export interface UpstreamView {
  name: string;
  /** Catalogue source flavors that apply (the engine's own, then one it inherits). */
  flavors: readonly string[];
  /** Maps an upstream family name to the catalogue's spelling (strips `vllm:` and the like). */
  familyKey(name: string): string;
  /** Upstream label names that carry the model, in order of preference. */
  modelLabels: readonly string[];
  /** Model for series whose labels name none. */
  defaultModel: string;
  /** Catalogue metrics not read from this upstream (the inline proxy measures them in front of it). */
  skip?: ReadonlySet<string> | undefined;
  /**
   * When the engine was asked for these readings (the scrape's send time). Rates over its counters
   * run from one reading to the next: the agent's own cycle times lag the readings by however long
   * the answer took to arrive and be read, and that lag differs from one cycle to the next.
   */
  readAtMs?: number | undefined;
}

export interface NormalizerOptions {
  histograms: 'rebucket' | 'native';
  staleAfterScrapes: number;
  seriesPerMetric: number;
  labelPolicy: LabelPolicy;
  limiter: SeriesLimiter;
  guardCounts: GuardCounts;
  /** Samples ignored or held by the counter rules, by reason (see SampleRejection). */
  invalid?: Partial<Record<SampleRejection, number>>;
}

/**
 * Why an upstream sample did not move a canonical series (README, "Counter rules"):
 * non_finite (NaN or ±Inf), negative and too_large (over 1e300) counter-like values are ignored
 * and the last value is kept; jitter is a decrease within a relative 1e-9, held at the last
 * value rather than read as a restart; type_mismatch is a family whose TYPE no longer fits the
 * canonical metric (a gauge source that turned into a histogram), skipped.
 */
export type SampleRejection = 'non_finite' | 'negative' | 'too_large' | 'jitter' | 'type_mismatch';

/** Counter-like values above this are ignored: sums of a few of them stay finite. */
export const MAX_COUNTER_VALUE = 1e300;
/** A decrease smaller than this, relative to the last value, is jitter, not a restart. */
export const JITTER_REL_EPS = 1e-9;

export interface IngestStats {
  /** Canonical source series touched by this payload. */
  series: number;
  /** Histograms skipped because they had no +Inf bucket (truncated or malformed). */
  incompleteHistograms: number;
}

const SEP = '\u0000';

const PER_SECOND: Record<NonNullable<SourceSpec['unit']>, number> = { seconds: 1, ms: 1e3, us: 1e6 };

/**
 * Converts a source's unit to the metric's (time units to the profile's): multiply, then divide,
 * so microseconds to milliseconds is one correctly rounded division, not a product with 0.001.
 */
function unitScaler(spec: SourceSpec, metric: CanonicalMetric): (v: number) => number {
  // A scale like 0.01 (percent to ratio) is a division by 100 too: 41 / 100 is 0.41, 41 * 0.01 is not.
  const scale = spec.scale ?? 1;
  const inverse = scale < 1 && Number.isInteger(1 / scale) ? 1 / scale : 1;
  const mul = (spec.unit ? metric.secondsFactor : 1) * (inverse === 1 ? scale : 1);
  const div = (spec.unit ? PER_SECOND[spec.unit] : 1) * inverse;
  if (mul === 1 && div === 1) return (v) => v;
  return div === 1 ? (v) => v * mul : (v) => (v * mul) / div;
}

/** `4xx` for "404"; `unknown` for anything that is not a three-digit status code. */
export function statusClass(code: string | undefined): string {
  return code !== undefined && /^[1-5]\d\d$/.test(code) ? `${code[0]}xx` : 'unknown';
}

export class Normalizer {
  private cycle = 0;
  private readonly sources = new Map<string, Map<string, SourceState>>();
  /** Reset-correction states per metric, for each upstream's state map. */
  private readonly stateCounts = new WeakMap<Map<string, SourceState>, Map<string, number>>();
  private readonly exported = new Map<string, ExportedState>();
  private readonly derivations: Derivations;
  /** Aggregated families and the snapshot, kept until the data changes. */
  private aggregated: Map<string, CanonicalFamily> | undefined;
  private snapshotCache: CanonicalFamily[] | undefined;
  /** Data changed since the derived metrics were last advanced. */
  private dirty = false;
  /** Per upstream: when its last ingested readings were taken, and the models they fed. */
  private readonly readings = new Map<string, { atMs: number; models: Set<string> }>();

  constructor(
    private readonly catalogue: Catalogue,
    private readonly opts: NormalizerOptions,
  ) {
    this.derivations = new Derivations(catalogue);
  }

  /** Ingest one successful scrape of an upstream. */
  ingest(up: UpstreamView, families: readonly Family[]): IngestStats {
    const cycle = ++this.cycle;
    const stats: IngestStats = { series: 0, incompleteHistograms: 0 };
    const index = new Map<string, Family>();
    for (const fam of families) {
      const key = up.familyKey(fam.name);
      if (!index.has(key)) index.set(key, fam);
      // An OpenMetrics counter family is named without _total (its samples carry it). The
      // catalogue names counters as their text samples are named: with _total (vLLM), or
      // without it where the engine's text output has none (TGI, Triton), so both are indexed.
      if (fam.type === 'counter' && !key.endsWith('_total') && fam.samples.some((x) => x.name === `${fam.name}_total`) && !index.has(`${key}_total`))
        index.set(`${key}_total`, fam);
    }
    let states = this.sources.get(up.name);
    if (!states) this.sources.set(up.name, (states = new Map()));
    const fedModels = new Set<string>();
    for (const metric of this.catalogue.metrics) {
      if (metric.needs || !metric.sources || up.skip?.has(metric.name)) continue;
      metric.sources.forEach((spec, specIndex) => {
        if (!up.flavors.includes(spec.flavor)) return;
        // Names are listed newest first; the choice is made per model, so a model still on an
        // older name keeps its series beside one already on the newer name (never both for one).
        const served = new Set<string>();
        // A GPU source names the sampled field, which its exposition uses as the family name.
        for (const famName of spec.from ?? (spec.field !== undefined ? [spec.field] : [])) {
          const fam = index.get(famName);
          if (!fam) continue;
          for (const m of this.ingestSource(up, states!, metric, spec, `${specIndex}`, fam, cycle, stats, served)) {
            served.add(m);
            fedModels.add(m);
          }
        }
      });
    }
    if (up.readAtMs !== undefined) this.readings.set(up.name, { atMs: up.readAtMs, models: fedModels });
    this.sweep(up.name, cycle);
    this.changed();
    return stats;
  }

  /** A scrape failed: the upstream's series age as if they were missing from a scrape. */
  markFailed(upstream: string): void {
    this.sweep(upstream, ++this.cycle);
    this.changed();
  }

  private changed(): void {
    this.aggregated = undefined;
    this.snapshotCache = undefined;
    this.dirty = true;
  }

  /** The model a source series belongs to (its label, else the upstream's default). */
  private modelOf(up: UpstreamView, labels: readonly string[]): string {
    for (const ml of up.modelLabels) {
      const v = labelValue(labels, ml);
      if (v !== undefined) return v;
    }
    return up.defaultModel;
  }

  /** Ingests one upstream family for one source spec, skipping models in `skip`; returns the models it fed. */
  private ingestSource(
    up: UpstreamView,
    states: Map<string, SourceState>,
    metric: CanonicalMetric,
    spec: SourceSpec,
    specKey: string,
    fam: Family,
    cycle: number,
    stats: IngestStats,
    skip: ReadonlySet<string>,
  ): Set<string> {
    const fed = new Set<string>();
    const scale = unitScaler(spec, metric);
    const stateKeyBase = metric.name + SEP + specKey + SEP;
    if (fam.type === 'histogram' && (metric.type === 'histogram' || spec.bucketize || spec.component)) {
      if (spec.sample) return fed;
      for (const h of histogramsOf(fam, spec.match, stats)) {
        const model = this.modelOf(up, h.labels);
        if (skip.has(model)) continue;
        fed.add(model);
        const labels = this.canonicalLabels(metric, spec, h.labels, model);
        if (!labels) continue;
        const layoutSig = h.bounds.join(',');
        const stateKey = stateKeyBase + h.labels.join(SEP) + SEP + layoutSig;
        if (metric.type === 'histogram') {
          const bounds = this.scaledBounds(layoutSig, h.bounds, scale);
          const exportKey = this.exportKeyFor(metric, labels, bounds);
          const raw = [...h.cum, h.count, scale(h.sum)];
          this.update(states, stateKey, metric, [exportKey], raw, cycle, stats, (corr) => {
            const n = bounds.length;
            const target = this.exported.get(exportKey)?.layout ?? bounds;
            const whole = wholeCumulative(target === bounds ? corr.slice(0, n) : rebucket(bounds, corr.slice(0, n), target), corr[n] ?? 0);
            const sum = corr[n + 1] ?? 0;
            return {
              kind: 'hist',
              hist: { bounds: target, cum: whole.cum, count: whole.count, sum },
              native: { bounds, cum: corr.slice(0, n), count: corr[n] ?? 0, sum },
            };
          });
        } else if (spec.bucketize) {
          const b = spec.bucketize;
          const exportKeys = b.values.map((v) => this.exportKeyFor(metric, { ...labels, [b.label]: v }, undefined));
          this.update(states, stateKey, metric, exportKeys, [...h.cum, h.count], cycle, stats, (corr) => ({
            kind: 'buckets',
            values: bucketizeCounts(h.bounds, corr.slice(0, h.bounds.length), corr[h.bounds.length] ?? 0, b.bounds),
          }));
        } else {
          const exportKey = this.exportKeyFor(metric, labels, undefined);
          const raw = spec.component === 'sum' ? scale(h.sum) : h.count;
          this.update(states, stateKey, metric, [exportKey], [raw], cycle, stats, (corr) => ({ kind: 'counter', value: corr[0] ?? 0 }));
        }
      }
      return fed;
    }
    // A family whose TYPE no longer fits (a gauge source that became a histogram or summary)
    // would feed its buckets or quantiles in as values.
    if (fam.type === 'histogram' || fam.type === 'summary' || (metric.type === 'histogram' && !spec.sample)) {
      this.reject('type_mismatch');
      return fed;
    }
    for (const s of fam.samples) {
      if (s.name !== fam.name && s.name !== `${fam.name}_total`) continue;
      if (spec.match && !matches(s.labels, spec.match)) continue;
      if (spec.absentBelow !== undefined && !(s.value >= spec.absentBelow)) continue;
      const model = this.modelOf(up, s.labels);
      if (skip.has(model)) continue;
      fed.add(model);
      const labels = this.canonicalLabels(metric, spec, s.labels, model);
      if (!labels) continue;
      const exportKey = this.exportKeyFor(metric, labels, undefined);
      if (spec.sample) {
        this.observe(exportKey, s.value);
        continue;
      }
      const stateKey = stateKeyBase + s.labels.join(SEP);
      if (metric.type === 'counter') {
        this.update(states, stateKey, metric, [exportKey], [scale(s.value)], cycle, stats, (corr) => ({ kind: 'counter', value: corr[0] ?? 0 }));
      } else {
        this.update(states, stateKey, metric, [exportKey], [scale(s.value)], cycle, stats, (v) => ({ kind: 'gauge', value: v[0] ?? 0 }), false);
      }
    }
    return fed;
  }

  private readonly boundsCache = new Map<string, number[]>();

  /** Upstream bounds in the profile's unit; layouts repeat every scrape, so they are cached. */
  private scaledBounds(sig: string, bounds: number[], scale: (v: number) => number): number[] {
    const key = `${scale(1)}|${sig}`;
    let b = this.boundsCache.get(key);
    if (!b) {
      if (this.boundsCache.size > 1000) this.boundsCache.clear();
      this.boundsCache.set(key, (b = bounds.map((x) => roundBound(scale(x)))));
    }
    return b;
  }

  /** Record one scrape's raw values for a source series, correcting counter resets. */
  private update(
    states: Map<string, SourceState>,
    key: string,
    metric: CanonicalMetric,
    exportKeys: string[],
    raw: number[],
    cycle: number,
    stats: IngestStats,
    contribute: (corrected: number[]) => Contribution,
    monotonic = true,
  ): void {
    const bad = this.invalidValues(raw, monotonic);
    if (bad) {
      this.reject(bad);
      return;
    }
    let st = states.get(key);
    if (!st) {
      // Bounds the reset-correction state per metric and upstream, so a bomb on one family
      // cannot evict another's series (those admitted earlier keep their place).
      const perMetric = this.stateCounts.get(states) ?? new Map<string, number>();
      this.stateCounts.set(states, perMetric);
      const n = perMetric.get(metric.name) ?? 0;
      if (n >= this.opts.seriesPerMetric * 8) {
        this.opts.limiter.overflowed.set(metric.exportName, (this.opts.limiter.overflowed.get(metric.exportName) ?? 0) + 1);
        return;
      }
      perMetric.set(metric.name, n + 1);
      st = {
        metric,
        exportKeys,
        lastRaw: raw.map(() => 0),
        offset: raw.map(() => 0),
        contribution: { kind: 'counter', value: 0 },
        seenCycle: cycle,
        missed: 0,
      };
      states.set(key, st);
      for (const k of exportKeys) {
        const ex = this.exported.get(k);
        if (ex) ex.live++;
      }
    }
    if (monotonic) {
      // A decrease within a relative 1e-9 is float jitter (held at the last value); a larger one
      // is a restart: the count and every bucket start again from zero together, so the whole
      // vector is carried into the offset.
      let restart = false;
      let jitter = false;
      for (let i = 0; i < raw.length; i++) {
        const last = st.lastRaw[i] ?? 0;
        const v = raw[i] ?? 0;
        if (v >= last) continue;
        if (last - v <= JITTER_REL_EPS * Math.max(1, last)) jitter = true;
        else restart = true;
      }
      if (restart) {
        for (let i = 0; i < raw.length; i++) st.offset[i] = (st.offset[i] ?? 0) + (st.lastRaw[i] ?? 0);
      } else if (jitter) {
        this.reject('jitter');
        raw = raw.map((v, i) => Math.max(v, st!.lastRaw[i] ?? 0));
      }
    }
    st.lastRaw = raw;
    st.seenCycle = cycle;
    st.missed = 0;
    st.contribution = contribute(monotonic ? raw.map((v, i) => v + (st!.offset[i] ?? 0)) : raw);
    stats.series++;
  }

  private sweep(upstream: string, cycle: number): void {
    const states = this.sources.get(upstream);
    if (!states) return;
    for (const [key, st] of states) {
      if (st.seenCycle === cycle) continue;
      if (++st.missed < this.opts.staleAfterScrapes) continue;
      this.retire(st);
      states.delete(key);
      const perMetric = this.stateCounts.get(states);
      perMetric?.set(st.metric.name, (perMetric.get(st.metric.name) ?? 1) - 1);
    }
  }

  /** A source series went away: what it had counted stays in the exported totals. */
  private retire(st: SourceState): void {
    const c = st.contribution;
    st.exportKeys.forEach((k, i) => {
      const ex = this.exported.get(k);
      if (!ex) return;
      ex.live--;
      if (c.kind === 'counter') ex.retiredValue += c.value;
      else if (c.kind === 'buckets') ex.retiredValue += c.values[i] ?? 0;
      else if (c.kind === 'hist') {
        ex.retiredHist ??= emptyHist(c.hist.bounds);
        addHist(ex.retiredHist, c.hist);
        this.retireNative(st.metric.name, c.native);
      }
      if (ex.live <= 0 && !ex.observed && (ex.metric.type === 'gauge' || (ex.retiredValue === 0 && !ex.retiredHist))) {
        this.exported.delete(k);
        this.opts.limiter.release(ex.metric.exportName, k);
      }
    });
  }

  /** Retired native histograms, merged per metric and layout (a few layouts per metric at most). */
  private readonly retiredNative = new Map<string, HistData>();

  private retireNative(metric: string, h: HistData): void {
    const key = metric + SEP + h.bounds.join(',');
    const r = this.retiredNative.get(key);
    if (r) addHist(r, h);
    else if (this.retiredNative.size < 1000) this.retiredNative.set(key, cloneHist(h));
  }

  /**
   * A histogram metric's series in the engines' own bounds (live and retired), for quantiles that
   * interpolate once, as histogram_quantile over the engine's series would, not over buckets
   * that were themselves interpolated.
   */
  nativeHistograms(metric: string): HistData[] {
    const out: HistData[] = [];
    for (const states of this.sources.values()) {
      for (const st of states.values()) if (st.metric.name === metric && st.contribution.kind === 'hist') out.push(st.contribution.native);
    }
    for (const [key, h] of this.retiredNative) if (key.startsWith(metric + SEP)) out.push(h);
    return out;
  }

  private reject(reason: SampleRejection): void {
    const inv = this.opts.invalid;
    if (inv) inv[reason] = (inv[reason] ?? 0) + 1;
  }

  /** Why raw values cannot be taken, if they cannot (counter-like vectors must be finite, >= 0, not absurd). */
  private invalidValues(raw: readonly number[], monotonic: boolean): SampleRejection | undefined {
    for (const v of raw) {
      if (!Number.isFinite(v)) return 'non_finite';
      if (!monotonic) continue;
      if (v < 0) return 'negative';
      if (v > MAX_COUNTER_VALUE) return 'too_large';
    }
    return undefined;
  }

  private observe(exportKey: string, value: number): void {
    // Observed values are sizes (running requests): never NaN, infinite or negative.
    if (!Number.isFinite(value)) {
      this.reject('non_finite');
      return;
    }
    if (value < 0) {
      this.reject('negative');
      return;
    }
    const ex = this.exported.get(exportKey);
    if (!ex) return;
    ex.observed ??= emptyHist(ex.layout ?? ex.metric.bounds ?? []);
    const h = ex.observed;
    for (let i = 0; i < h.bounds.length; i++) if (value <= (h.bounds[i] ?? 0)) h.cum[i] = (h.cum[i] ?? 0) + 1;
    h.count++;
    h.sum += value;
  }

  private canonicalLabels(metric: CanonicalMetric, spec: SourceSpec, src: readonly string[], model: string): Record<string, string> | undefined {
    const out: Record<string, string> = {};
    out.model = model;
    // A field source (the GPU's) carries the catalogue's own label names.
    if (spec.field !== undefined)
      for (const name of metric.labels) {
        const v = labelValue(src, name);
        if (v !== undefined) out[name] = v;
      }
    if (spec.labels) for (const [canon, from] of Object.entries(spec.labels)) out[canon] = labelValue(src, from) ?? 'unknown';
    if (spec.map) {
      for (const [canon, m] of Object.entries(spec.map)) {
        const v = labelValue(src, m.from);
        out[canon] = (v !== undefined ? m.values[v] : undefined) ?? m.default;
      }
    }
    if (spec.set) Object.assign(out, spec.set);
    if (spec.statusClass) out.code = statusClass(labelValue(src, spec.statusClass));
    const guarded: Record<string, string> = {};
    for (const name of metric.labels) {
      const v = out[name];
      if (v !== undefined) guarded[name] = guardValue(this.opts.labelPolicy, name, v, this.opts.guardCounts);
    }
    return guarded;
  }

  /** The exported series a canonical label set lands in, created (or folded into overflow) on first use. */
  private exportKeyFor(metric: CanonicalMetric, labels: Record<string, string>, sourceBounds: number[] | undefined): string {
    const pairs: Array<[string, string]> = [];
    for (const name of metric.labels) {
      const v = labels[name];
      if (v !== undefined) pairs.push([name, v]);
    }
    let key = metric.name + SEP + pairs.map((p) => p[1]).join(SEP);
    if (this.exported.has(key)) return key;
    if (!this.opts.limiter.admit(metric.exportName, key)) {
      key = metric.name + SEP + OVERFLOW_LABEL;
      if (this.exported.has(key)) return key;
      pairs.length = 0;
      pairs.push([OVERFLOW_LABEL, 'true']);
    }
    const layout = metric.type !== 'histogram' ? undefined : this.opts.histograms === 'native' && sourceBounds ? sourceBounds : metric.bounds;
    this.exported.set(key, { metric, labels: pairs, live: 0, retiredValue: 0, retiredHist: undefined, observed: undefined, layout });
    return key;
  }

  /** The aggregated families by metric, computed once per change of the data. */
  private aggregate(): Map<string, CanonicalFamily> {
    this.aggregated ??= aggregate(this.sources.values(), this.exported);
    return this.aggregated;
  }

  /**
   * Advances the derived metrics (rates, ratios, means) to `nowMs`, once per change of the data;
   * `minRateInterval` (seconds) keeps a rate from being taken over a sliver of time when several
   * upstreams finish close together. The only step that moves the rate memory.
   */
  advance(nowMs: number, minRateInterval: number): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.derivations.update(this.aggregate(), nowMs, minRateInterval, (model) => this.readingTime(model));
    this.snapshotCache = undefined;
  }

  /**
   * When the engine readings behind a model's series were taken: the latest among the upstreams
   * that fed it in their last scrape; undefined when no scrape said (the caller's clock stands in).
   */
  readingTime(model: string): number | undefined {
    let at: number | undefined;
    for (const r of this.readings.values()) if (r.models.has(model) && (at === undefined || r.atMs > at)) at = r.atMs;
    return at;
  }

  /** The canonical families: aggregated series and the derived values of the last `advance`. Pure. */
  snapshot(): CanonicalFamily[] {
    if (this.snapshotCache) return this.snapshotCache;
    const byMetric = this.aggregate();
    const derived = new Map<string, CanonicalSeries[]>();
    for (const d of this.derivations.series()) {
      let list = derived.get(d.metric.name);
      if (!list) derived.set(d.metric.name, (list = []));
      list.push({ labels: d.labels, value: d.value, hist: undefined });
    }
    const out: CanonicalFamily[] = [];
    for (const m of this.catalogue.metrics) {
      const f = byMetric.get(m.name);
      const extra = derived.get(m.name);
      const series = extra ? [...(f?.series ?? []), ...extra] : f?.series;
      if (series?.length) out.push(extra ? { metric: m, series } : f!);
    }
    this.snapshotCache = out;
    return out;
  }
}
