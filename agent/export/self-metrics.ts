// The agent's own metrics, kept with prom-client in private registries (one per exposition
// format, since prom-client fixes the format per registry). Nothing uses the global registry.

import client from 'prom-client';
import type { RejectReason } from '../parse/exposition.js';
import type { ScrapeOutcome } from '../sources/source.js';
import { ErrorReporter } from '../errors.js';

/** Distinct `metric` values infertel_series_overflow_total carries; the rest count under "other". */
export const OVERFLOW_METRIC_LABELS_MAX = 100;

export const SELF_PREFIX = 'infertel_';

/**
 * How often the event-loop lag is sampled. prom-client's default of 10 ms is a timer per registry
 * that woke an idle agent 100 times a second; the lag it reports is the same at this rate, from
 * fewer samples.
 */
const EVENT_LOOP_SAMPLE_MS = 100;

/** A counter whose value is read, at each collection, from running totals kept elsewhere (one series per key). */
function countsCounter<L extends string>(
  name: string,
  help: string,
  label: L,
  counts: () => Record<string, number | undefined>,
  registers: client.Registry[],
): client.Counter<L> {
  return new client.Counter({
    name,
    help,
    labelNames: [label],
    registers,
    collect() {
      this.reset();
      for (const [key, n] of Object.entries(counts())) if (n !== undefined) this.inc({ [label]: key } as Record<L, string>, n);
    },
  });
}

export class SelfMetrics {
  readonly text = new client.Registry();
  readonly openmetrics = new client.Registry();
  readonly up: client.Gauge<'upstream'>;
  readonly info: client.Gauge<'upstream' | 'flavor'>;
  readonly scrapeDuration: client.Gauge<'upstream'>;
  readonly scrapeErrors: client.Counter<'upstream' | 'reason'>;
  readonly lastSuccess: client.Gauge<'upstream'>;
  readonly parseErrors: client.Counter<'upstream'>;
  readonly overflow: client.Counter<'metric'>;
  readonly labelRewrites: client.Counter<'action'>;
  readonly gpuPollDuration: client.Gauge;
  readonly rejectedLines: client.Counter<'upstream' | 'reason'>;
  readonly canonicalSeries: client.Gauge<'upstream'>;
  readonly familyClashes: client.Gauge<'format'>;
  readonly unexpressed: client.Gauge<'upstream' | 'format'>;
  private readonly overflowSeen = new Map<string, number>();
  private readonly infoLabels = new Map<string, { upstream: string; flavor: string; version: string }>();
  private readonly overflowLabels = new Set<string>();

  constructor(
    version: string,
    overflowSource: () => ReadonlyMap<string, number>,
    labelCounts: () => Record<string, number>,
    droppedCounts: () => Record<string, number> = () => ({}),
    invalidCounts: () => Record<string, number | undefined> = () => ({}),
    readonly errors: ErrorReporter = new ErrorReporter(),
  ) {
    const registers = [this.text, this.openmetrics];
    const self = this;
    this.up = new client.Gauge({
      name: 'infertel_upstream_up',
      help: '1 if the last scrape of the upstream succeeded, else 0.',
      labelNames: ['upstream'],
      registers,
    });
    this.info = new client.Gauge({
      name: 'infertel_upstream_info',
      help: 'Engine flavor detected or configured for each upstream, and its version where the engine says (value 1).',
      labelNames: ['upstream', 'flavor', 'version'],
      registers,
    });
    this.scrapeDuration = new client.Gauge({
      name: 'infertel_scrape_duration_seconds',
      help: 'Duration of the last scrape cycle (fetch, parse, normalise).',
      labelNames: ['upstream'],
      registers,
    });
    this.scrapeErrors = new client.Counter({
      name: 'infertel_scrape_errors_total',
      help: 'Failed scrapes by reason.',
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.lastSuccess = new client.Gauge({
      name: 'infertel_last_scrape_success_timestamp_seconds',
      help: 'Unix time of the last successful scrape.',
      labelNames: ['upstream'],
      registers,
    });
    this.parseErrors = new client.Counter({
      name: 'infertel_parse_errors_total',
      help: 'Exposition lines that could not be parsed and were skipped.',
      labelNames: ['upstream'],
      registers,
    });
    this.overflow = new client.Counter({
      name: 'infertel_series_overflow_total',
      help: 'Series folded into the otel_metric_overflow series because a cap was reached, once per series per scrape.',
      labelNames: ['metric'],
      registers,
      collect() {
        for (const [metric, n] of overflowSource()) {
          const seen = self.overflowSeen.get(metric) ?? 0;
          if (n <= seen) continue;
          // Family names can churn without end: the label takes the first hundred, then "other".
          if (!self.overflowLabels.has(metric) && self.overflowLabels.size < OVERFLOW_METRIC_LABELS_MAX) self.overflowLabels.add(metric);
          this.inc({ metric: self.overflowLabels.has(metric) ? metric : 'other' }, n - seen);
          self.overflowSeen.set(metric, n);
        }
      },
    });
    this.labelRewrites = countsCounter(
      'infertel_label_rewrites_total',
      'Label values rewritten by the guards (truncated, redacted as unbounded, forbidden name dropped).',
      'action',
      labelCounts,
      registers,
    );
    this.rejectedLines = new client.Counter({
      name: 'infertel_rejected_lines_total',
      help: 'Exposition lines rejected by the parser, by reason (never copied to the output).',
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.canonicalSeries = new client.Gauge({
      name: 'infertel_upstream_canonical_series',
      help: 'Canonical source series the last successful scrape of the upstream mapped (0: nothing maps, passthrough only).',
      labelNames: ['upstream'],
      registers,
    });
    this.familyClashes = new client.Gauge({
      name: 'infertel_family_clashes',
      help: 'Passthrough families left out of the last render because another family already took one of their sample names.',
      labelNames: ['format'],
      registers,
    });
    this.unexpressed = new client.Gauge({
      name: 'infertel_passthrough_unexpressed_samples',
      help: 'Passthrough samples of the last scrape that an output format cannot carry (e.g. fractional bucket counts in OpenMetrics) and so leaves out.',
      labelNames: ['upstream', 'format'],
      registers,
    });
    countsCounter(
      'infertel_passthrough_dropped_samples_total',
      'Passthrough samples dropped by the guard: duplicate (repeated in the payload), merged (made identical by a label guard, summed), over_bucket_cap (series with too many buckets or quantiles).',
      'reason',
      droppedCounts,
      registers,
    );
    countsCounter(
      'infertel_invalid_samples_total',
      'Upstream samples the counter rules ignored or held: non_finite, negative, too_large (counter-like over 1e300), jitter (decrease within 1e-9 relative, held), type_mismatch (family TYPE no longer fits).',
      'reason',
      invalidCounts,
      registers,
    );
    countsCounter(
      'infertel_errors_total',
      'Errors the agent caught and carried on from, by code of the error catalogue (README, "Errors"); the first of each code is logged.',
      'code',
      () => errors.snapshot(),
      registers,
    );
    this.gpuPollDuration = new client.Gauge({ name: 'infertel_gpu_poll_duration_seconds', help: 'Duration of the last GPU poll.', registers });
    this.openmetrics.setContentType(client.Registry.OPENMETRICS_CONTENT_TYPE as never);
    const build = new client.Gauge({ name: 'infertel_build_info', help: 'infertel build information (value 1).', labelNames: ['version'], registers });
    build.set({ version }, 1);
    for (const register of registers) {
      client.collectDefaultMetrics({ register, prefix: SELF_PREFIX, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
      // prom-client exports these gauges with a _total suffix, which promtool rightly rejects.
      for (const gaugeWithTotal of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
        register.removeSingleMetric(SELF_PREFIX + gaugeWithTotal);
      }
    }
  }

  /** A counter read from running totals kept elsewhere, one series per key (the proxy's event counts). */
  addCounts(name: string, help: string, label: string, counts: () => Record<string, number | undefined>): void {
    countsCounter(name, help, label, counts, [this.text, this.openmetrics]);
  }

  /** A gauge read at each collection. */
  addGauge(name: string, help: string, read: () => number): void {
    new client.Gauge({
      name,
      help,
      registers: [this.text, this.openmetrics],
      collect() {
        this.set(read());
      },
    });
  }

  recordScrape(upstream: string, outcome: ScrapeOutcome, seconds: number, parseErrors: number, nowMs: number): void {
    this.scrapeDuration.set({ upstream }, seconds);
    if (parseErrors > 0) this.parseErrors.inc({ upstream }, parseErrors);
    if (outcome === 'ok') {
      this.up.set({ upstream }, 1);
      this.lastSuccess.set({ upstream }, nowMs / 1000);
    } else {
      this.up.set({ upstream }, 0);
      this.scrapeErrors.inc({ upstream, reason: outcome });
    }
  }

  recordRejected(upstream: string, rejected: Partial<Record<RejectReason, number>>): void {
    for (const [reason, n] of Object.entries(rejected)) if (n) this.rejectedLines.inc({ upstream, reason }, n);
  }

  setFamilyClashes(format: string, n: number): void {
    this.familyClashes.set({ format }, n);
  }

  /** One info series per upstream: the previous one (flavor unknown, version not yet known) goes. */
  setFlavor(upstream: string, flavor: string, version: string | undefined): void {
    const prev = this.infoLabels.get(upstream);
    if (prev) this.info.remove(prev);
    const labels = { upstream, flavor, version: version ?? '' };
    this.infoLabels.set(upstream, labels);
    this.info.set(labels, 1);
  }
}
