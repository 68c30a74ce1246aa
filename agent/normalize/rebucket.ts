// Histogram re-bucketing by linear interpolation of cumulative counts. Exact where bounds
// coincide; monotonic in `le` and, for a fixed source layout, in time (every target count is a
// non-negative combination of source counts). Mass beyond the source's last finite bound stays
// in +Inf.

const REL_EPS = 1e-9;

function same(a: number, b: number): boolean {
  return a === b || Math.abs(a - b) <= REL_EPS * Math.max(Math.abs(a), Math.abs(b));
}

/**
 * Cumulative count at `t` given a source layout: `bounds` ascending finite upper bounds and
 * `cum` their cumulative counts. Below the first bound the lower edge is taken as 0.
 */
export function cumulativeAt(bounds: readonly number[], cum: readonly number[], t: number): number {
  const n = bounds.length;
  if (n === 0) return 0;
  const last = bounds[n - 1] ?? 0;
  if (t > last && !same(t, last)) return cum[n - 1] ?? 0;
  let lo = 0,
    hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((bounds[mid] ?? 0) < t && !same(bounds[mid] ?? 0, t)) lo = mid + 1;
    else hi = mid;
  }
  const b = bounds[lo] ?? 0;
  const c = cum[lo] ?? 0;
  if (same(b, t)) return c;
  const prevB = lo === 0 ? 0 : (bounds[lo - 1] ?? 0);
  const prevC = lo === 0 ? 0 : (cum[lo - 1] ?? 0);
  if (t <= prevB) return prevC;
  return prevC + ((c - prevC) * (t - prevB)) / (b - prevB);
}

/** Cumulative counts of the source histogram at each target bound. */
export function rebucket(bounds: readonly number[], cum: readonly number[], target: readonly number[]): number[] {
  const out = new Array<number>(target.length);
  for (let i = 0; i < target.length; i++) out[i] = cumulativeAt(bounds, cum, target[i] ?? 0);
  return out;
}

/** Counts per range: (-inf, b0], (b0, b1], …, (b_last, +Inf). */
export function bucketizeCounts(bounds: readonly number[], cum: readonly number[], total: number, edges: readonly number[]): number[] {
  const at = rebucket(bounds, cum, edges);
  const out: number[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(Math.max(0, c - prev));
    prev = c;
  }
  out.push(Math.max(0, total - prev));
  return out;
}

/** Quantile from cumulative buckets, as Prometheus' histogram_quantile computes it. */
export function quantileFromBuckets(q: number, bounds: readonly number[], cum: readonly number[], total: number): number | undefined {
  return quantileAcross(q, [{ bounds, cum, count: total }]);
}

/**
 * The q-quantile of several histograms taken together, each possibly with its own bounds, as
 * Prometheus's histogram_quantile computes it for one: linear within a bucket, the first bucket
 * starting at 0, and the highest finite bound when the rank falls among the +Inf observations.
 * Between two consecutive bounds of the union every histogram's cumulative count is linear, so
 * the combined count is too and the rank is solved exactly there.
 */
export function quantileAcross(q: number, hists: ReadonlyArray<{ bounds: readonly number[]; cum: readonly number[]; count: number }>): number | undefined {
  const total = hists.reduce((a, h) => a + h.count, 0);
  const withBounds = hists.filter((h) => h.bounds.length > 0);
  if (total <= 0 || withBounds.length === 0) return undefined;
  const rank = q * total;
  const points = [...new Set(withBounds.flatMap((h) => [...h.bounds]))].sort((a, b) => a - b);
  const cumAt = (x: number): number => {
    let c = 0;
    for (const h of withBounds) {
      const i = h.bounds.findIndex((b) => b >= x);
      const upper = h.bounds[i];
      const atUpper = h.cum[i] ?? 0;
      if (upper === undefined) c += h.cum[h.cum.length - 1] ?? 0;
      else if (upper === x) c += atUpper;
      else {
        const lower = h.bounds[i - 1] ?? 0;
        const below = h.cum[i - 1] ?? 0;
        c += x <= lower ? below : below + ((atUpper - below) * (x - lower)) / (upper - lower);
      }
    }
    return c;
  };
  let prevX = 0;
  let prevC = 0;
  for (const x of points) {
    const c = cumAt(x);
    if (c >= rank) {
      if (x <= 0 || c === prevC) return x;
      // Prometheus's order of operations (bucketStart + width * (rank / count)), so the last bit agrees.
      return prevX + (x - prevX) * ((rank - prevC) / (c - prevC));
    }
    prevX = x;
    prevC = c;
  }
  return points[points.length - 1];
}
