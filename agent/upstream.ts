// The loop's side of one upstream: runs its collection cycle (pipeline/cycle.ts) and records
// what happened in one place: health (up, last outcome, last success), self-metrics, the span,
// and log lines on state changes only. The guarded passthrough families it keeps are rendered by
// the exporter; nothing here imports from export/.

import { SpanStatusCode, type Tracer } from '@opentelemetry/api';
import type { UpstreamConfig } from './config/schema.js';
import type { ErrorReporter } from './errors.js';
import type { PassthroughGuard } from './guard/passthrough.js';
import type { Logger } from './logger.js';
import { redactUrl } from './net/http-client.js';
import type { Normalizer } from './normalize/normalizer.js';
import type { Family, RejectReason } from './parse/exposition.js';
import { EngineCycle } from './pipeline/cycle.js';
import type { Flavor } from './sources/flavor.js';
import type { ScrapeOutcome, Source } from './sources/source.js';
import { ATTR, SPAN_SCRAPE } from './tracing/otel.js';

export interface UpstreamHealth {
  name: string;
  url: string;
  flavor: Flavor | 'unknown';
  up: boolean;
  lastOutcome: ScrapeOutcome | 'pending';
  lastDetail: string | undefined;
  lastSuccessMs: number | undefined;
  intervalMs: number;
  /** Duration of the last cycle, seconds. */
  lastSeconds: number | undefined;
  /** Rejected lines and incomplete histograms since start. */
  parseErrorsTotal: number;
}

/** Where health is recorded (the agent's self-metrics satisfy it). */
export interface HealthSink {
  setFlavor(upstream: string, flavor: string, version: string | undefined): void;
  up: { set(labels: { upstream: string }, value: number): void };
  canonicalSeries: { set(labels: { upstream: string }, value: number): void };
  recordScrape(upstream: string, outcome: ScrapeOutcome, seconds: number, parseErrors: number, nowMs: number): void;
  recordRejected(upstream: string, rejected: Partial<Record<RejectReason, number>>): void;
  readonly errors: ErrorReporter;
}

export interface UpstreamDeps {
  normalizer: Normalizer;
  metrics: HealthSink;
  tracer: Tracer;
  log: Logger;
  passthroughGuard: PassthroughGuard;
  defaultModel: string | undefined;
  /** Whether infertel reads the GPUs itself (an engine's own GPU families are then not re-exported). */
  gpuTelemetry: () => boolean;
  /** Failed scrapes after which the upstream's passthrough series are dropped. */
  staleAfterScrapes: number;
  now: () => number;
  /** Catalogue metrics the inline proxy measures in front of this engine (not read from its scrape). */
  proxied?: ReadonlySet<string>;
}

export class Upstream {
  readonly health: UpstreamHealth;
  /** Guarded passthrough families of the last good scrape (the exporter renders them). */
  passthrough: readonly Family[] = [];
  /** Bumped whenever `passthrough` is replaced, so the exporter renders each set once. */
  passthroughVersion = 0;
  private readonly cycleOf: EngineCycle;
  private failedScrapes = 0;
  private unmappedLogged = false;
  private lastRejected: string | undefined;
  private shownVersion: string | undefined;

  constructor(
    readonly cfg: UpstreamConfig,
    source: Source,
    private readonly deps: UpstreamDeps,
  ) {
    this.cycleOf = new EngineCycle(cfg, source, { ...deps, errors: deps.metrics.errors });
    this.health = {
      name: cfg.name,
      url: redactUrl(cfg.url),
      flavor: this.cycleOf.engine?.name ?? 'unknown',
      up: false,
      lastOutcome: 'pending',
      lastDetail: undefined,
      lastSuccessMs: undefined,
      intervalMs: cfg.intervalMs,
      lastSeconds: undefined,
      parseErrorsTotal: 0,
    };
    deps.metrics.setFlavor(cfg.name, this.health.flavor, undefined);
    deps.metrics.up.set({ upstream: cfg.name }, 0);
  }

  /** One cycle, recorded; resolves true on success. Never throws. */
  async cycle(signal: AbortSignal): Promise<boolean> {
    const { tracer, metrics } = this.deps;
    return tracer.startActiveSpan(SPAN_SCRAPE, async (span) => {
      const started = performance.now();
      const r = await this.cycleOf.run(signal);
      if (signal.aborted) {
        // Stopping: a scrape cut short by shutdown says nothing about the upstream.
        span.end();
        return false;
      }
      metrics.recordRejected(this.cfg.name, r.rejected);
      this.noteEngine();
      if (r.outcome === 'ok') {
        this.noteCanonical(r.canonicalSeries);
        this.setPassthrough(r.passthrough ?? []);
        this.failedScrapes = 0;
      } else if (++this.failedScrapes >= this.deps.staleAfterScrapes && this.passthrough.length) this.setPassthrough([]);
      const nowMs = this.deps.now();
      const seconds = (performance.now() - started) / 1000;
      this.health.lastSeconds = seconds;
      this.health.parseErrorsTotal += r.parseErrors;
      metrics.recordScrape(this.cfg.name, r.outcome, seconds, r.parseErrors, nowMs);
      this.transition(r.outcome, r.detail, nowMs);
      span.setAttributes({
        [ATTR.upstream]: this.cfg.name,
        [ATTR.flavor]: this.health.flavor,
        [ATTR.series]: r.canonicalSeries,
        [ATTR.bytes]: r.bytes,
        [ATTR.outcome]: r.outcome,
      });
      if (r.outcome !== 'ok') span.setStatus({ code: SpanStatusCode.ERROR, message: r.detail ? redactUrl(r.detail) : r.outcome });
      span.end();
      return r.outcome === 'ok';
    });
  }

  private setPassthrough(families: readonly Family[]): void {
    this.passthrough = families;
    this.passthroughVersion++;
  }

  /** The engine's version, once known. */
  get version(): string | undefined {
    return this.cycleOf.version;
  }

  /** The flavor once detected and the version once known go into infertel_upstream_info. */
  private noteEngine(): void {
    const engine = this.cycleOf.engine;
    if (!engine) return;
    const version = this.cycleOf.version;
    if (this.health.flavor === engine.name && this.shownVersion === version) return;
    this.health.flavor = engine.name;
    this.shownVersion = version;
    this.deps.metrics.setFlavor(this.cfg.name, engine.name, version);
  }

  /** Counts what the scrape mapped; a payload that maps to nothing is said once, not hidden. */
  private noteCanonical(series: number): void {
    this.deps.metrics.canonicalSeries.set({ upstream: this.cfg.name }, series);
    if (series > 0) {
      this.unmappedLogged = false;
      return;
    }
    if (this.unmappedLogged) return;
    this.unmappedLogged = true;
    this.deps.log.warn(
      { upstream: this.cfg.name, flavor: this.health.flavor },
      this.cycleOf.engine
        ? 'no canonical series from this upstream (its payload has none of the families the catalogue maps)'
        : 'no adapter recognises this engine: passthrough only, no canonical series',
    );
  }

  /** Log state changes once, not at every interval. */
  private transition(outcome: ScrapeOutcome, detail: string | undefined, nowMs: number): void {
    const wasUp = this.health.up;
    const prevOutcome = this.health.lastOutcome;
    this.health.up = outcome === 'ok';
    this.health.lastOutcome = outcome;
    this.health.lastDetail = detail;
    if (outcome === 'ok') this.health.lastSuccessMs = nowMs;
    const log = this.deps.log;
    const url = redactUrl(this.cfg.url);
    if (outcome === 'ok' && !wasUp) log.info({ upstream: this.cfg.name, url, flavor: this.health.flavor }, 'upstream up');
    else if (outcome !== 'ok' && (wasUp || prevOutcome !== outcome))
      log.warn({ upstream: this.cfg.name, url, reason: outcome, detail: detail && redactUrl(detail) }, 'upstream down');
    // A scrape that succeeds with some lines rejected says so once per change, not every interval.
    const rejected = outcome === 'ok' ? detail : undefined;
    if (rejected && rejected !== this.lastRejected) log.warn({ upstream: this.cfg.name, detail: rejected }, 'upstream lines rejected');
    if (outcome === 'ok') this.lastRejected = rejected;
  }
}
