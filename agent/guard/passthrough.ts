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
  /** Per family: the admitted series keys, or (fast path) last scrape's samples to derive them from. */
  private admitted = new Map<string, Set<string> | Sample[]>();

  constructor(private readonly policy: LabelPolicy, private readonly limits: PassthroughLimits,
    private readonly onOverflow: (family: string, series: number) => void, private readonly counts: GuardCounts) {}

  apply(families: readonly Family[]): Family[] {
    const next = new Map<string, Set<string> | Sample[]>();
    const out: Family[] = [];
    let total = 0;
    for (const fam of families) {
      const guarded = fam.samples.map((s) => this.guardSample(s));
      // Fast path: a family with no more samples than the cap cannot have too many series.
      if (guarded.length <= this.limits.seriesPerFamily && total + guarded.length <= this.limits.seriesTotal) {
        total += guarded.length;
        next.set(fam.name, guarded);
        out.push({ name: fam.name, type: fam.type, help: fam.help, samples: guarded, text: fam.text });
        continue;
      }
      const last = this.admitted.get(fam.name);
      const prev = Array.isArray(last) ? new Set(last.map((x) => seriesKey(x.labels))) : last;
      const keep = new Set<string>();
      const samples: Sample[] = [];
      const overflow = new Map<string, Sample>();
      const keys = guarded.map((s) => seriesKey(s.labels));
      // Two passes: series admitted last time first, then new ones while there is room.
      for (const pass of [0, 1]) {
        for (let i = 0; i < guarded.length; i++) {
          const s = guarded[i]!;
          const key = keys[i]!;
          if ((pass === 0) !== (prev?.has(key) ?? false)) continue;
          if (keep.has(key) || (keep.size < this.limits.seriesPerFamily && total < this.limits.seriesTotal)) {
            if (!keep.has(key)) { keep.add(key); total++; }
            samples.push(s);
            continue;
          }
          if (s.labels.includes('quantile')) continue;
          const le = s.labels.indexOf('le');
          const labels = le >= 0 && le % 2 === 0 ? [OVERFLOW_LABEL, 'true', 'le', s.labels[le + 1] as string] : [OVERFLOW_LABEL, 'true'];
          const okey = s.name + SEP + labels.join(SEP);
          const o = overflow.get(okey);
          if (o) o.value += s.value;
          else overflow.set(okey, { name: s.name, labels, value: s.value });
        }
      }
      if (overflow.size) {
        this.onOverflow(fam.name, new Set(keys.filter((k) => !keep.has(k))).size);
        samples.push(...overflow.values());
      }
      next.set(fam.name, keep);
      out.push({ name: fam.name, type: fam.type, help: fam.help, samples, text: fam.text });
    }
    this.admitted = next;
    return out;
  }

  /** The sample itself when the guards change nothing (keeping its verbatim line), else a copy. */
  private guardSample(s: Sample): Sample {
    const labels = guardLabels(this.policy, s.labels, this.counts, 'le');
    return labels === s.labels ? s : { name: s.name, labels: labels as string[], value: s.value };
  }
}
