// Passthrough guard: the engine's own families, re-exported as they are minus forbidden labels,
// with values capped and series per family bounded. Series beyond the cap fold into one
// otel_metric_overflow="true" series per family (values summed).

import type { Family, Sample } from '../parse/exposition.js';
import { guardLabels, type GuardCounts, type LabelPolicy } from './labels.js';
import { OVERFLOW_LABEL } from './cardinality.js';

export interface PassthroughLimits {
  seriesPerFamily: number;
  seriesTotal: number;
}

const SEP = '\u0000';

function seriesKey(labels: readonly string[]): string {
  let key = '';
  for (let i = 0; i < labels.length; i += 2) {
    const n = labels[i];
    if (n === 'le' || n === 'quantile') continue;
    key += n + SEP + labels[i + 1] + SEP;
  }
  return key;
}

/** Keeps, per family, which series were admitted last time, so survivors keep their slots. */
export class PassthroughGuard {
  private admitted = new Map<string, Set<string>>();

  constructor(private readonly policy: LabelPolicy, private readonly limits: PassthroughLimits,
    private readonly onOverflow: (family: string, series: number) => void, private readonly counts: GuardCounts) {}

  apply(families: readonly Family[]): Family[] {
    const next = new Map<string, Set<string>>();
    const out: Family[] = [];
    let total = 0;
    for (const fam of families) {
      const prev = this.admitted.get(fam.name);
      const keep = new Set<string>();
      const samples: Sample[] = [];
      const overflow = new Map<string, Sample>();
      const guarded = fam.samples.map((s) => ({ s, labels: guardLabels(this.policy, s.labels, this.counts, 'le') }));
      // Two passes: series admitted last time first, then new ones while there is room.
      for (const pass of [0, 1]) {
        for (const g of guarded) {
          const key = seriesKey(g.labels);
          const wasAdmitted = prev?.has(key) ?? false;
          if ((pass === 0) !== wasAdmitted) continue;
          if (keep.has(key) || (keep.size < this.limits.seriesPerFamily && total < this.limits.seriesTotal)) {
            if (!keep.has(key)) { keep.add(key); total++; }
            samples.push(g.labels === g.s.labels ? g.s : { name: g.s.name, labels: g.labels as string[], value: g.s.value });
            continue;
          }
          if (g.labels.includes('quantile')) continue;
          const le = g.labels.indexOf('le');
          const labels = le >= 0 && le % 2 === 0 ? [OVERFLOW_LABEL, 'true', 'le', g.labels[le + 1] as string] : [OVERFLOW_LABEL, 'true'];
          const okey = g.s.name + SEP + labels.join(SEP);
          const o = overflow.get(okey);
          if (o) o.value += g.s.value;
          else overflow.set(okey, { name: g.s.name, labels, value: g.s.value });
        }
      }
      if (overflow.size) {
        const folded = new Set(guarded.map((g) => seriesKey(g.labels)).filter((k) => !keep.has(k))).size;
        this.onOverflow(fam.name, folded);
        samples.push(...overflow.values());
      }
      next.set(fam.name, keep);
      out.push({ name: fam.name, type: fam.type, help: fam.help, samples });
    }
    this.admitted = next;
    return out;
  }
}
