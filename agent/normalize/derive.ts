// Derived canonical metrics (catalogue `derive`): per-second rates, ratios of two counters'
// increases, and means (total over count). They need the previous values, kept here in an
// explicit rate memory that only `update` advances, so reading a snapshot changes nothing.

import { deriveInputs, type Catalogue, type CanonicalMetric } from '../catalogue/catalogue.js';
import type { CanonicalFamily, CanonicalSeries } from './normalizer.js';

const SEP = '\u0000';

const valuesKey = (labels: ReadonlyArray<[string, string]>): string => labels.map((p) => p[1]).join(SEP);

export class Derivations {
  /** Previous numerator and denominator (or time), per derived series, per inputs. */
  private readonly memory = new Map<string, Map<string, { num: number; den: number; t: number }>>();
  private readonly values = new Map<string, CanonicalSeries & { metric: CanonicalMetric }>();

  constructor(private readonly catalogue: Catalogue) {}

  /**
   * Advances the derived values to `nowMs` from the aggregated families. `minRateInterval`
   * (seconds) keeps a rate from being taken over a sliver of time when several upstreams finish
   * close together. A derived series whose inputs are gone is dropped. `readAt` gives, per model,
   * when its counters were read: a per-second rate runs from one reading to the next (`nowMs`
   * stands in where it says nothing).
   */
  update(
    byMetric: ReadonlyMap<string, CanonicalFamily>,
    nowMs: number,
    minRateInterval: number,
    readAt: (model: string) => number | undefined = () => undefined,
  ): void {
    const live = new Set<string>();
    const nowS = nowMs / 1000;
    for (const metric of this.catalogue.metrics) {
      if (!metric.derive) continue;
      const direct = new Set((byMetric.get(metric.name)?.series ?? []).map((s) => valuesKey(s.labels)));
      for (const d of metric.derive) {
        const inputs = deriveInputs(d);
        const first = byMetric.get(inputs[0]);
        if (!first) continue;
        const second = inputs[1] ? byMetric.get(inputs[1]) : undefined;
        // Denominators by label values, looked up once per numerator series rather than searched.
        const denominators = new Map(second?.series.map((x) => [valuesKey(x.labels), x]));
        for (const s of first.series) {
          const labelsRec: Record<string, string> = Object.fromEntries(s.labels);
          Object.assign(labelsRec, d.set ?? {});
          const pairs = metric.labels.flatMap((l): Array<[string, string]> => {
            const v = labelsRec[l];
            return v === undefined ? [] : [[l, v]];
          });
          const sig = valuesKey(pairs);
          if (direct.has(sig)) continue;
          const key = metric.name + SEP + sig;
          const denom = denominators.get(valuesKey(s.labels));
          if (inputs[1] && !denom) continue;
          live.add(key);
          let memory = this.memory.get(key);
          if (!memory) this.memory.set(key, (memory = new Map()));
          const inputsKey = inputs.join(SEP);
          const model = labelsRec.model;
          const readS = model === undefined ? undefined : readAt(model);
          const atS = readS === undefined ? nowS : readS / 1000;
          const den = denom ? denom.value : atS;
          const prev = memory.get(inputsKey);
          if (prev && atS - prev.t < minRateInterval) continue;
          memory.set(inputsKey, { num: s.value, den, t: atS });
          if (!prev) continue;
          const dDen = den - prev.den;
          if (dDen <= 0) continue;
          const value = Math.max(0, (s.value - prev.num) / dDen);
          this.values.set(key, { metric, labels: pairs, value: 'ratio' in d ? Math.min(1, value) : value, hist: undefined });
        }
      }
    }
    for (const key of this.values.keys()) if (!live.has(key)) this.values.delete(key);
    for (const key of this.memory.keys()) if (!live.has(key)) this.memory.delete(key);
  }

  /** The current derived series (what `update` last computed). */
  series(): ReadonlyArray<CanonicalSeries & { metric: CanonicalMetric }> {
    return [...this.values.values()];
  }
}
