// One engine upstream as a source of the loop: runs its collection cycle (pipeline/cycle.ts) and
// keeps what is the engine's own (passthrough families, detected flavor and version, canonical
// series count); the cycle is recorded by pipeline/runner.ts like every source's. The guarded
// passthrough families it keeps are rendered by the exporter; nothing here imports from export/.

import type { Tracer } from '@opentelemetry/api';
import type { UpstreamConfig } from './config/schema.js';
import type { ErrorReporter } from './errors.js';
import type { PassthroughGuard } from './guard/passthrough.js';
import type { Logger } from './logger.js';
import { redactUrl } from './net/http-client.js';
import type { Normalizer } from './normalize/normalizer.js';
import type { Family, RejectReason } from './parse/exposition.js';
import { EngineCycle } from './pipeline/cycle.js';
import { runCycle, type CycleReport, type LoopedSource, type SourceHealth } from './pipeline/runner.js';
import type { Flavor } from './sources/flavor.js';
import type { ScrapeOutcome, Source } from './sources/source.js';
import { ATTR, SPAN_SCRAPE } from './tracing/otel.js';

export interface UpstreamHealth extends SourceHealth {
  url: string;
  flavor: Flavor | 'unknown';
  lastOutcome: ScrapeOutcome | 'pending';
}

/** Where health is recorded (the agent's self-metrics satisfy it). */
export interface HealthSink {
  setFlavor(upstream: string, flavor: string, version: string | undefined): void;
  up: { set(labels: { upstream: string }, value: number): void };
  canonicalSeries: { set(labels: { upstream: string }, value: number): void };
  recordScrape(upstream: string, outcome: string, seconds: number, parseErrors: number, nowMs: number): void;
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

export class Upstream implements LoopedSource {
  readonly health: UpstreamHealth;
  readonly spanName = SPAN_SCRAPE;
  /**
   * Guarded passthrough families of the last good scrape, until the exporter takes them: it keeps
   * its rendering, and the parsed samples (tens of thousands of objects on a large engine) kept
   * alive between cycles only made every garbage collection mark them again.
   */
  private passthrough: readonly Family[] = [];
  /** Whether the last set handed over had any family (dropped after staleAfterScrapes failures). */
  private holdsPassthrough = false;
  /** Bumped whenever the passthrough set is replaced, so the exporter renders each set once. */
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

  /** One cycle, recorded by the loop's runner; resolves true on success. Never throws. */
  cycle(signal: AbortSignal): Promise<boolean> {
    return runCycle(this, signal, this.deps);
  }

  logContext(): Record<string, unknown> {
    return { upstream: this.cfg.name, url: redactUrl(this.cfg.url), flavor: this.health.flavor };
  }

  async collect(signal: AbortSignal): Promise<CycleReport | undefined> {
    const r = await this.cycleOf.run(signal);
    // Stopping: a scrape cut short by shutdown says nothing about the upstream.
    if (signal.aborted) return undefined;
    this.deps.metrics.recordRejected(this.cfg.name, r.rejected);
    this.noteEngine();
    if (r.outcome === 'ok') {
      this.noteCanonical(r.canonicalSeries);
      this.setPassthrough(r.passthrough ?? []);
      this.failedScrapes = 0;
    } else if (++this.failedScrapes >= this.deps.staleAfterScrapes && this.holdsPassthrough) this.setPassthrough([]);
    // A scrape that succeeds with some lines rejected says so once per change, not every interval.
    const rejected = r.outcome === 'ok' ? r.detail : undefined;
    if (rejected && rejected !== this.lastRejected) this.deps.log.warn({ upstream: this.cfg.name, detail: rejected }, 'upstream lines rejected');
    if (r.outcome === 'ok') this.lastRejected = rejected;
    return {
      outcome: r.outcome,
      detail: r.detail,
      parseErrors: r.parseErrors,
      attributes: {
        [ATTR.upstream]: this.cfg.name,
        [ATTR.flavor]: this.health.flavor,
        [ATTR.series]: r.canonicalSeries,
        [ATTR.bytes]: r.bytes,
        [ATTR.outcome]: r.outcome,
      },
    };
  }

  private setPassthrough(families: readonly Family[]): void {
    this.passthrough = families;
    this.holdsPassthrough = families.length > 0;
    this.passthroughVersion++;
  }

  /** Its configured name: with `passthroughVersion` and `takePassthrough`, what the exporter reads of it. */
  get name(): string {
    return this.cfg.name;
  }

  /** This version's passthrough set, handed over once (later calls get nothing until the next set). */
  takePassthrough(): readonly Family[] {
    const families = this.passthrough;
    this.passthrough = [];
    return families;
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
}
