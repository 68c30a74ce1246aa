// Aggregation: the canonical series as the sum (or max, or mean) of the source series that land
// in them, plus what retired source series had counted. A pure function of the normaliser's state.

import type { CanonicalMetric } from '../catalogue/catalogue.js';
import { addHist, cloneHist, emptyHist, type HistData } from './histograms.js';
import type { CanonicalFamily } from './normalizer.js';

/** What one source series adds to the exported series it lands in (reset-corrected). */
export type Contribution =
  | { kind: 'counter'; value: number }
  | { kind: 'gauge'; value: number }
  | { kind: 'hist'; hist: HistData /** The same counts in the engine's own bounds, before any re-bucketing. */; native: HistData }
  | { kind: 'buckets'; values: number[] };

/** One upstream series' reset-correction state. */
export interface SourceState {
  metric: CanonicalMetric;
  exportKeys: string[];
  lastRaw: number[];
  offset: number[];
  contribution: Contribution;
  seenCycle: number;
  missed: number;
}

/** One exported canonical series: its labels, live sources and what retired ones counted. */
export interface ExportedState {
  metric: CanonicalMetric;
  labels: Array<[string, string]>;
  live: number;
  retiredValue: number;
  retiredHist: HistData | undefined;
  /** Histograms infertel fills itself (batch sizes sampled each scrape). */
  observed: HistData | undefined;
  layout: number[] | undefined;
}

/** The canonical families by metric name, from the live source states and the exported series. */
export function aggregate(sources: Iterable<ReadonlyMap<string, SourceState>>, exported: ReadonlyMap<string, ExportedState>): Map<string, CanonicalFamily> {
  const acc = new Map<string, { value: number; n: number; hist: HistData | undefined }>();
  for (const states of sources) {
    for (const st of states.values()) {
      const c = st.contribution;
      st.exportKeys.forEach((key, i) => {
        let a = acc.get(key);
        if (!a) acc.set(key, (a = { value: 0, n: 0, hist: undefined }));
        a.n++;
        if (c.kind === 'counter') a.value += c.value;
        else if (c.kind === 'buckets') a.value += c.values[i] ?? 0;
        else if (c.kind === 'hist') {
          a.hist ??= emptyHist(c.hist.bounds);
          addHist(a.hist, c.hist);
        } else {
          const agg = exported.get(key)?.metric.aggregate;
          if (agg === 'max') a.value = a.n === 1 ? c.value : Math.max(a.value, c.value);
          else a.value += c.value;
        }
      });
    }
  }
  const byMetric = new Map<string, CanonicalFamily>();
  const familyOf = (metric: CanonicalMetric) => {
    let f = byMetric.get(metric.name);
    if (!f) byMetric.set(metric.name, (f = { metric, series: [] }));
    return f;
  };
  for (const [key, ex] of exported) {
    const a = acc.get(key);
    const m = ex.metric;
    if (m.type === 'histogram') {
      const hist = ex.retiredHist ? cloneHist(ex.retiredHist) : emptyHist(ex.layout ?? m.bounds ?? []);
      if (a?.hist) addHist(hist, a.hist);
      if (ex.observed) addHist(hist, ex.observed);
      if (!a?.hist && !ex.retiredHist && !ex.observed) continue;
      familyOf(m).series.push({ labels: ex.labels, value: hist.count, hist });
    } else if (m.type === 'gauge') {
      if (!a) continue;
      familyOf(m).series.push({ labels: ex.labels, value: m.aggregate === 'avg' ? a.value / a.n : a.value, hist: undefined });
    } else {
      familyOf(m).series.push({ labels: ex.labels, value: ex.retiredValue + (a?.value ?? 0), hist: undefined, sources: a?.n ?? 0 });
    }
  }
  return byMetric;
}
