// One configured upstream: its source, its flavor (configured or detected), its model and its
// health. Runs one scrape cycle: fetch, parse, normalise, record.

import { SpanStatusCode, type Tracer } from '@opentelemetry/api';
import type { UpstreamConfig } from './config/schema.js';
import type { SelfMetrics } from './export/self-metrics.js';
import type { Family } from './parse/exposition.js';
import type { Logger } from './logger.js';
import type { Normalizer } from './normalize/normalizer.js';
import type { PassthroughGuard } from './guard/passthrough.js';
import { toPassthroughFamilies, type PassthroughFamily } from './export/render.js';
import { FLAVOR_TABLE, detectFlavor, normaliserView, type Flavor, type FlavorAdapter } from './sources/flavor.js';
import { canonicalInput, passthroughInput } from './sources/adapter.js';
import type { ScrapeOutcome, Source } from './sources/source.js';
import { ATTR, SPAN_SCRAPE } from './tracing/otel.js';
import { redactUrl } from './net/http-client.js';

export interface UpstreamHealth {
  name: string;
  url: string;
  flavor: Flavor | 'unknown';
  up: boolean;
  lastOutcome: ScrapeOutcome | 'pending';
  lastDetail: string | undefined;
  lastSuccessMs: number | undefined;
  intervalMs: number;
}

export interface UpstreamDeps {
  normalizer: Normalizer;
  metrics: SelfMetrics;
  tracer: Tracer;
  log: Logger;
  passthroughGuard: PassthroughGuard;
  defaultModel: string | undefined;
  /** Whether infertel reads the GPUs itself (an engine's own GPU families are then not re-exported). */
  gpuTelemetry: () => boolean;
  /** Failed scrapes after which the upstream's passthrough series are dropped. */
  staleAfterScrapes: number;
  now: () => number;
}

function yieldToLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** How long a failed info lookup (model, version) waits before it is tried again. */
const INFO_LOOKUP_RETRY_MS = 60_000;

export class Upstream {
  readonly health: UpstreamHealth;
  passthrough: PassthroughFamily[] = [];
  private adapter: FlavorAdapter | undefined;
  private model: string | undefined;
  private version: string | undefined;
  private infoLookupAt = 0;
  private infoLookups = 0;
  private failedScrapes = 0;

  constructor(
    readonly cfg: UpstreamConfig,
    private readonly source: Source,
    private readonly deps: UpstreamDeps,
  ) {
    this.adapter = cfg.flavor === 'auto' ? undefined : FLAVOR_TABLE[cfg.flavor];
    this.health = {
      name: cfg.name,
      url: redactUrl(cfg.url),
      flavor: this.adapter?.name ?? 'unknown',
      up: false,
      lastOutcome: 'pending',
      lastDetail: undefined,
      lastSuccessMs: undefined,
      intervalMs: cfg.intervalMs,
    };
    deps.metrics.setFlavor(cfg.name, this.health.flavor, undefined);
    deps.metrics.up.set({ upstream: cfg.name }, 0);
  }

  /** One scrape cycle; resolves true on success. Never throws. */
  async cycle(signal: AbortSignal): Promise<boolean> {
    const { tracer, metrics, normalizer } = this.deps;
    return tracer.startActiveSpan(SPAN_SCRAPE, async (span) => {
      const started = performance.now();
      let outcome: ScrapeOutcome = 'error';
      let detail: string | undefined;
      let series = 0;
      let bytes = 0;
      let parseErrors = 0;
      try {
        const res = await this.source.scrape(signal);
        outcome = res.outcome;
        detail = res.detail;
        bytes = res.bytes;
        parseErrors = res.parseErrors;
        metrics.recordRejected(this.cfg.name, res.rejected);
        if (outcome === 'ok') {
          if (!this.adapter) {
            this.adapter = detectFlavor(res.families);
            if (this.adapter) {
              this.health.flavor = this.adapter.name;
              metrics.setFlavor(this.cfg.name, this.adapter.name, this.version);
              this.deps.log.info({ upstream: this.cfg.name, flavor: this.adapter.name }, 'detected engine flavor');
            }
          }
          if (this.adapter) {
            const adapter = this.adapter;
            await this.resolveInfo(adapter, res.families, signal);
            const view = normaliserView(adapter, this.cfg.name, this.defaultModel(res.families));
            await yieldToLoop();
            const stats = normalizer.ingest(view, canonicalInput(adapter, res.families));
            series = stats.series;
            parseErrors += stats.incompleteHistograms;
          }
          this.noteCanonical(series);
          await yieldToLoop();
          if (this.cfg.passthrough) {
            const guarded = this.deps.passthroughGuard.apply(passthroughInput(this.adapter, res.families, this.deps.gpuTelemetry()));
            await yieldToLoop();
            this.setPassthrough(toPassthroughFamilies(guarded));
          } else this.setPassthrough([]);
          for (const format of ['text', 'openmetrics'] as const) {
            metrics.unexpressed.set(
              { upstream: this.cfg.name, format },
              this.passthrough.reduce((a, f) => a + f.droppedIn[format], 0),
            );
          }
          this.failedScrapes = 0;
        } else {
          normalizer.markFailed(this.cfg.name);
          if (++this.failedScrapes >= this.deps.staleAfterScrapes && this.passthrough.length) this.setPassthrough([]);
        }
      } catch (err) {
        outcome = 'error';
        detail = redactUrl((err as Error).message);
        normalizer.markFailed(this.cfg.name);
      }
      if (signal.aborted) {
        // Stopping: a scrape cut short by shutdown says nothing about the upstream.
        span.end();
        return false;
      }
      const nowMs = this.deps.now();
      metrics.recordScrape(this.cfg.name, outcome, (performance.now() - started) / 1000, parseErrors, nowMs);
      this.transition(outcome, detail, nowMs);
      span.setAttributes({
        [ATTR.upstream]: this.cfg.name,
        [ATTR.flavor]: this.health.flavor,
        [ATTR.series]: series,
        [ATTR.bytes]: bytes,
        [ATTR.outcome]: outcome,
      });
      if (outcome !== 'ok') span.setStatus({ code: SpanStatusCode.ERROR, message: detail ? redactUrl(detail) : outcome });
      span.end();
      return outcome === 'ok';
    });
  }

  private unmappedLogged = false;
  private lastRejected: string | undefined;

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
      this.adapter
        ? 'no canonical series from this upstream (its payload has none of the families the catalogue maps)'
        : 'no adapter recognises this engine: passthrough only, no canonical series',
    );
  }

  private setPassthrough(families: PassthroughFamily[]): void {
    this.passthrough = families;
  }

  /**
   * The model of series whose labels name none, in this order: the one model the payload's other
   * families name, this upstream's configured model, what the engine's info endpoint said, the
   * global --model, unknown. A global model never overrides an engine that names its own.
   */
  private defaultModel(families: readonly Family[]): string {
    return this.adapter?.payloadModel(families) ?? this.cfg.model ?? this.model ?? this.deps.defaultModel ?? 'unknown';
  }

  /**
   * Asks the engine's info endpoints for its version and (when nothing else names it) its model:
   * until both are known or three tries have failed, at most once a minute.
   */
  private async resolveInfo(adapter: FlavorAdapter, families: readonly Family[], signal: AbortSignal): Promise<void> {
    const payloadVersion = adapter.payloadVersion?.(families);
    if (payloadVersion && payloadVersion !== this.version) this.setVersion(adapter, payloadVersion);
    const needModel = !this.model && !this.cfg.model && !adapter.payloadModel(families);
    if ((!needModel && this.version) || this.infoLookups >= 3 || this.deps.now() < this.infoLookupAt) return;
    this.infoLookupAt = this.deps.now() + INFO_LOOKUP_RETRY_MS;
    this.infoLookups++;
    try {
      const info = await adapter.info(this.cfg.url, signal);
      if (info.version && !this.version) this.setVersion(adapter, info.version);
      if (needModel && info.model) {
        this.model = info.model;
        this.deps.log.info({ upstream: this.cfg.name, model: this.model }, 'model learned from the engine');
      }
    } catch (err) {
      this.deps.metrics.errors.report('engine_info_failed', err, { upstream: this.cfg.name });
    }
  }

  private setVersion(adapter: FlavorAdapter, version: string): void {
    this.version = version;
    this.deps.metrics.setFlavor(this.cfg.name, adapter.name, version);
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
