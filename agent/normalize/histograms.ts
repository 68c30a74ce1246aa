// Histogram pieces of the normaliser: an upstream family's histograms grouped by series, the
// whole-count rounding OpenMetrics needs, and the sums that aggregation and retirement use.

import { labelValue, parseValue, type Family } from '../parse/exposition.js';

export interface HistData {
  /** Finite upper bounds, ascending. */
  bounds: number[];
  /** Cumulative count at each finite bound. */
  cum: number[];
  /** The +Inf bucket. */
  count: number;
  sum: number;
}

/** Rounded cumulative counts that only rise with `le` and never pass the total (OpenMetrics wants whole counts). */
export function wholeCumulative(cum: readonly number[], count: number): { cum: number[]; count: number } {
  const total = Math.round(count);
  const out = new Array<number>(cum.length);
  let prev = 0;
  for (let i = 0; i < cum.length; i++) {
    const v = Math.min(total, Math.max(prev, Math.round(cum[i] ?? 0)));
    out[i] = v;
    prev = v;
  }
  return { cum: out, count: total };
}

export interface RawHist {
  labels: string[];
  bounds: number[];
  cum: number[];
  count: number;
  sum: number;
}

const SEP = '\u0000';

/** Whether a sample's labels have every value `match` asks for. */
export function matches(labels: readonly string[], match: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(match)) if (labelValue(labels, k) !== v) return false;
  return true;
}

/** An upstream histogram family's series (those matching `match`); incomplete ones (no +Inf) are counted, not read. */
export function histogramsOf(fam: Family, match: Record<string, string> | undefined, stats: { incompleteHistograms: number }): RawHist[] {
  const groups = new Map<string, { labels: string[]; buckets: Array<[number, number]>; sum: number | undefined; count: number | undefined }>();
  const base = fam.name;
  for (const s of fam.samples) {
    const suffix = s.name.slice(base.length);
    if (suffix !== '_bucket' && suffix !== '_sum' && suffix !== '_count') continue;
    const labels: string[] = [];
    let le: string | undefined;
    for (let i = 0; i < s.labels.length; i += 2) {
      if (s.labels[i] === 'le') le = s.labels[i + 1];
      else labels.push(s.labels[i] ?? '', s.labels[i + 1] ?? '');
    }
    if (match && !matches(labels, match)) continue;
    const key = labels.join(SEP);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { labels, buckets: [], sum: undefined, count: undefined }));
    if (suffix === '_bucket') {
      if (le !== undefined) g.buckets.push([parseValue(le), s.value]);
    } else if (suffix === '_sum') g.sum = s.value;
    else g.count = s.value;
  }
  const out: RawHist[] = [];
  for (const g of groups.values()) {
    g.buckets.sort((a, b) => a[0] - b[0]);
    const inf = g.buckets.at(-1)?.[0] === Infinity ? g.buckets.pop()?.[1] : undefined;
    if (inf === undefined || g.buckets.some((b) => Number.isNaN(b[0]))) {
      stats.incompleteHistograms++;
      continue;
    }
    out.push({ labels: g.labels, bounds: g.buckets.map((b) => b[0]), cum: g.buckets.map((b) => b[1]), count: g.count ?? inf, sum: g.sum ?? 0 });
  }
  return out;
}

export function emptyHist(bounds: number[]): HistData {
  return { bounds, cum: bounds.map(() => 0), count: 0, sum: 0 };
}

export function addHist(into: HistData, h: HistData): void {
  for (let i = 0; i < into.cum.length; i++) into.cum[i] = (into.cum[i] ?? 0) + (h.cum[i] ?? 0);
  into.count += h.count;
  into.sum += h.sum;
}

export function cloneHist(h: HistData): HistData {
  return { bounds: h.bounds, cum: [...h.cum], count: h.count, sum: h.sum };
}
