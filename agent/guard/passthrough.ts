// Passthrough guard: the engine's own families, re-exported as they are minus forbidden labels,
// with values capped, buckets per series and series per family bounded, and never two samples
// with the same name and labels. Rules (README, "Passthrough"):
// - a series made identical to another by the guards (a forbidden label dropped, a value
//   redacted as unbounded) is merged: counters, gauges and histogram/summary _sum, _count and
//   buckets are summed; summary quantiles of merged series are dropped (they cannot be summed);
// - an identical series repeated in the payload itself keeps its first sample;
// - a histogram or summary series with more than `bucketsPerSeries` buckets or quantiles is
//   dropped whole (le and quantile values are numbers the parser checked, but unbounded in count);
// - series beyond the per-family cap fold into one otel_metric_overflow="true" series per
//   family; histograms fold into their +Inf bucket, _count and _sum only, summaries into _count
//   and _sum, so the fold is always a valid family. Every series admitted last scrape has its
//   slot reserved (per family and in the total), so new series, in any family, only get what
//   is left.

import { parseValue, type Family, type FamilyType, type Sample } from '../parse/exposition.js';
import { guardLabels, type GuardCounts, type LabelPolicy } from './labels.js';
import { OVERFLOW_LABEL } from './cardinality.js';

export interface PassthroughLimits {
  seriesPerFamily: number;
  seriesTotal: number;
  /** Buckets (histograms) or quantiles (summaries) one series may have. */
  bucketsPerSeries: number;
}

/** What the guard dropped or merged, by reason (self-metrics read these). */
export interface PassthroughCounts {
  duplicateSamples: number;
  mergedSamples: number;
  seriesOverBucketCap: number;
}

export function newPassthroughCounts(): PassthroughCounts {
  return { duplicateSamples: 0, mergedSamples: 0, seriesOverBucketCap: 0 };
}

/** The label name an upstream's own `upstream` label is moved to (Prometheus' exported_ rule). */
export const EXPORTED_UPSTREAM = 'exported_upstream';

/** Which label of a sample is its bucket or quantile coordinate, given its family, if any. */
function coordinateLabel(type: FamilyType, family: string, sampleName: string): 'le' | 'quantile' | undefined {
  if ((type === 'histogram' || type === 'gaugehistogram') && sampleName === `${family}_bucket`) return 'le';
  if (type === 'summary' && sampleName === family) return 'quantile';
  return undefined;
}

/** Label pairs in name order as one string, skipping `skip` (order-insensitive, as Prometheus sees series). */
function labelKey(labels: readonly string[], skip: string | undefined): string {
  let sorted = true;
  for (let i = 2; i < labels.length; i += 2)
    if ((labels[i] ?? '') < (labels[i - 2] ?? '')) {
      sorted = false;
      break;
    }
  let idx: number[] | undefined;
  if (!sorted) {
    idx = [];
    for (let i = 0; i < labels.length; i += 2) idx.push(i);
    idx.sort((a, b) => ((labels[a] ?? '') < (labels[b] ?? '') ? -1 : 1));
  }
  let key = '';
  const n = labels.length / 2;
  for (let k = 0; k < n; k++) {
    const i = idx?.[k] ?? k * 2;
    if (labels[i] === skip) continue;
    // Names are [a-zA-Z0-9_]; a value's length before it keeps any character in it (a NUL
    // included) from running into the next pair.
    const value = labels[i + 1] ?? '';
    key += `${labels[i]}=${value.length}:${value}`;
  }
  return key;
}

/** Whether two label arrays hold the same strings except for the coordinate label (a cheap identity test, no key built). */
function sameSeries(a: readonly string[], b: readonly string[], coord: string | undefined): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 2) {
    if (a[i] !== b[i]) return false;
    if (a[i] !== coord && a[i + 1] !== b[i + 1]) return false;
  }
  return true;
}

function coordOf(labels: readonly string[], coord: string): string {
  for (let i = 0; i < labels.length; i += 2) if (labels[i] === coord) return labels[i + 1] ?? '';
  return '';
}

function seenIn(g: SeriesGroup, key: string): Sample | undefined {
  return g.seen ? g.seen.get(key) : g.firstKey === key ? g.first : undefined;
}

function remember(g: SeriesGroup, key: string, s: Sample): void {
  if (g.seen) g.seen.set(key, s);
  else if (g.firstKey === undefined || g.firstKey === key) {
    g.firstKey = key;
    g.first = s;
  } else
    g.seen = new Map([
      [g.firstKey, g.first!],
      [key, s],
    ]);
}

interface SeriesGroup {
  key: string;
  samples: Sample[];
  /**
   * The series' samples by their coordinate (a bucket's le, a quantile) or, without one, their
   * name (_count, _sum, the sample itself): the two never collide, so no key string is built per
   * sample. A one-sample series (most counters and gauges) keeps it in `first`, with no map.
   */
  firstKey: string | undefined;
  first: Sample | undefined;
  seen: Map<string, Sample> | undefined;
  /** Distinct coordinates (le or quantile values) seen. */
  coords: number;
  /** Some sample's labels were changed by the guards, so collisions merge rather than repeat. */
  merged: boolean;
}

const boundCache = new Map<string, number>();

/** A bucket bound or quantile as a number (the parser checked it); the same few strings repeat. */
export function coordinateValue(raw: string): number {
  let v = boundCache.get(raw);
  if (v === undefined) {
    v = parseValue(raw);
    if (boundCache.size > 4096) boundCache.clear();
    boundCache.set(raw, v);
  }
  return v;
}

/** A series' samples in the order both formats want: buckets by bound, then _count, _sum, _created. */
function orderSeries(type: FamilyType, family: string, samples: Sample[]): Sample[] {
  if (type !== 'histogram' && type !== 'summary' && type !== 'gaugehistogram') return samples;
  const coord = type === 'summary' ? 'quantile' : 'le';
  const rank = (s: Sample): number => {
    const n = s.name.length - family.length;
    if (type === 'gaugehistogram') return s.name.endsWith('_bucket') ? 0 : s.name.endsWith('_gcount') ? 1 : 2;
    // '', _bucket: 0; _count: 1; _sum: 2; _created: 3.
    return n === 0 || n === 7 ? 0 : n === 6 ? 1 : n === 4 ? 2 : 3;
  };
  const bound = (s: Sample): number => {
    for (let i = 0; i < s.labels.length; i += 2) if (s.labels[i] === coord) return coordinateValue(s.labels[i + 1] ?? '');
    return 0;
  };
  // Engines already write series in this order; check before sorting.
  let sorted = true;
  let a: Sample | undefined;
  for (const b of samples) {
    if (a) {
      const d = rank(a) - rank(b);
      if (d > 0 || (d === 0 && bound(a) > bound(b))) {
        sorted = false;
        break;
      }
    }
    a = b;
  }
  if (sorted) return samples;
  const keyed = samples.map((s) => ({ s, r: rank(s), b: bound(s) }));
  keyed.sort((x, y) => x.r - y.r || x.b - y.b);
  return keyed.map((k) => k.s);
}

/** Keeps, per family, which series were admitted last time, so survivors keep their slots. */
export class PassthroughGuard {
  private admitted = new Map<string, Set<string>>();

  constructor(
    private readonly policy: LabelPolicy,
    private readonly limits: PassthroughLimits,
    private readonly onOverflow: (family: string, series: number) => void,
    private readonly counts: GuardCounts,
    readonly dropped: PassthroughCounts = newPassthroughCounts(),
  ) {}

  apply(families: readonly Family[]): Family[] {
    // Slots are reserved for every series admitted last time, so a bomb in one family (or a new
    // family) never takes the place of another's known series; new series get what is left.
    let reserved = 0;
    for (const fam of families) reserved += this.admitted.get(fam.name)?.size ?? 0;
    const room = { total: Math.max(0, this.limits.seriesTotal - reserved) };
    const next = new Map<string, Set<string>>();
    const out: Family[] = [];
    for (const fam of families) {
      const { groups, overflow, folded } = this.group(fam, this.admitted.get(fam.name), room);
      const samples: Sample[] = [];
      for (const g of groups.values()) for (const s of orderSeries(fam.type, fam.name, g.samples)) samples.push(s);
      if (folded > 0) {
        this.onOverflow(fam.name, folded);
        for (const s of orderSeries(fam.type, fam.name, [...overflow.values()])) samples.push(s);
      }
      next.set(fam.name, new Set(groups.keys()));
      out.push({ name: fam.name, type: fam.type, help: fam.help, samples, text: fam.text });
    }
    this.admitted = next;
    return out;
  }

  /** Adds one sample of a series beyond the cap into the family's overflow series; true when it stands for one series. */
  private fold(fam: Family, s: Sample, coord: 'le' | 'quantile' | undefined, overflow: Map<string, Sample>): boolean {
    if (coord === 'quantile') return false;
    let labels: string[] = [OVERFLOW_LABEL, 'true'];
    if (coord === 'le') {
      let le: string | undefined;
      for (let i = 0; i < s.labels.length; i += 2) if (s.labels[i] === 'le') le = s.labels[i + 1];
      if (le === undefined || parseValue(le) !== Infinity) return false;
      labels = [OVERFLOW_LABEL, 'true', 'le', '+Inf'];
    }
    const o = overflow.get(s.name);
    if (o) o.value += s.value;
    else overflow.set(s.name, { name: s.name, labels, value: s.value });
    // Each folded series has exactly one of these samples: its +Inf bucket, its summary count, or itself.
    return coord === 'le' || fam.type !== 'summary' || s.name === `${fam.name}_count`;
  }

  /**
   * Guards each sample's labels and groups samples into series, merging or dropping collisions;
   * series beyond the family's room fold into overflow at once (no state is kept for them).
   */
  private group(
    fam: Family,
    prev: ReadonlySet<string> | undefined,
    room: { total: number },
  ): { groups: Map<string, SeriesGroup>; overflow: Map<string, Sample>; folded: number } {
    const groups = new Map<string, SeriesGroup>();
    const overflow = new Map<string, Sample>();
    let newRoom = Math.max(0, this.limits.seriesPerFamily - (prev?.size ?? 0));
    let folded = 0;
    let prevLabels: readonly string[] | undefined;
    let prevKey = '';
    for (const raw of fam.samples) {
      const coord = coordinateLabel(fam.type, fam.name, raw.name);
      const s = this.guardSample(raw, coord);
      const changed = s !== raw;
      // Consecutive samples of one series share their label strings (the parser reuses them).
      const seriesKey = prevLabels !== undefined && sameSeries(prevLabels, s.labels, coord) ? prevKey : labelKey(s.labels, coord);
      prevLabels = s.labels;
      prevKey = seriesKey;
      let g = groups.get(seriesKey);
      if (!g) {
        if (!prev?.has(seriesKey)) {
          if (newRoom <= 0 || room.total <= 0) {
            if (this.fold(fam, s, coord, overflow)) folded++;
            continue;
          }
          newRoom--;
          room.total--;
        }
        groups.set(seriesKey, (g = { key: seriesKey, samples: [], firstKey: undefined, first: undefined, seen: undefined, coords: 0, merged: false }));
      }
      const sampleKey = coord ? coordOf(s.labels, coord) : raw.name;
      const twin = seenIn(g, sampleKey);
      if (twin) {
        if (changed || g.merged) {
          if (coord === 'quantile') g.samples = g.samples.filter((x) => x.name !== fam.name);
          else {
            const sum: Sample = { name: twin.name, labels: twin.labels, value: twin.value + s.value };
            g.samples[g.samples.indexOf(twin)] = sum;
            remember(g, sampleKey, sum);
          }
          this.dropped.mergedSamples++;
        } else this.dropped.duplicateSamples++;
        continue;
      }
      if (changed) g.merged = true;
      if (coord && ++g.coords > this.limits.bucketsPerSeries) {
        if (g.coords === this.limits.bucketsPerSeries + 1) this.dropped.seriesOverBucketCap++;
        continue;
      }
      g.samples.push(s);
      remember(g, sampleKey, s);
    }
    for (const [key, g] of groups) if (g.coords > this.limits.bucketsPerSeries) groups.delete(key);
    return { groups, overflow, folded };
  }

  /** The sample itself when the guards change nothing (keeping its verbatim line), else a copy. */
  private guardSample(s: Sample, coord: 'le' | 'quantile' | undefined): Sample {
    let labels = guardLabels(this.policy, s.labels, this.counts, coord);
    for (let i = 0; i < labels.length; i += 2) {
      if (labels[i] !== 'upstream') continue;
      const copy = labels.slice();
      let taken = false;
      for (let j = 0; j < copy.length; j += 2) if (copy[j] === EXPORTED_UPSTREAM) taken = true;
      if (taken) copy.splice(i, 2);
      else copy[i] = EXPORTED_UPSTREAM;
      labels = copy;
      break;
    }
    return labels === s.labels ? s : { name: s.name, labels: labels as string[], value: s.value };
  }
}
