// Series caps. Keys admitted earlier keep their place; new keys beyond the cap fold into one
// overflow series labelled otel_metric_overflow="true" (the OTel SDK's convention).

export const OVERFLOW_LABEL = 'otel_metric_overflow';

export interface SeriesBudget {
  perMetric: number;
  total: number;
}

export class SeriesLimiter {
  private readonly admitted = new Map<string, Set<string>>();
  private totalAdmitted = 0;
  /** Series folded into overflow since start, per metric. */
  readonly overflowed = new Map<string, number>();

  constructor(readonly budget: SeriesBudget) {}

  /** Canonical series admitted now, against `budget.total`. */
  get admittedTotal(): number {
    return this.totalAdmitted;
  }

  /** True if `key` may have its own series under `metric`; false means fold it into overflow. */
  admit(metric: string, key: string): boolean {
    let set = this.admitted.get(metric);
    if (set?.has(key)) return true;
    if ((set?.size ?? 0) >= this.budget.perMetric || this.totalAdmitted >= this.budget.total) {
      this.overflowed.set(metric, (this.overflowed.get(metric) ?? 0) + 1);
      return false;
    }
    if (!set) this.admitted.set(metric, (set = new Set()));
    set.add(key);
    this.totalAdmitted++;
    return true;
  }

  release(metric: string, key: string): void {
    const set = this.admitted.get(metric);
    if (set?.delete(key)) this.totalAdmitted--;
  }
}
