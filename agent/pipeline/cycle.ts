// One collection cycle of one engine: scrape, detect the engine, learn its model and version,
// guard the passthrough, normalise. It returns what happened and imports nothing from export/:
// recording health and rendering are the loop's and the exporter's.

import { setImmediate as nextTurn } from 'node:timers/promises';
import type { UpstreamConfig } from '../config/schema.js';
import type { ErrorReporter } from '../errors.js';
import type { PassthroughGuard } from '../guard/passthrough.js';
import type { Logger } from '../logger.js';
import { redactUrl } from '../net/http-client.js';
import type { Normalizer } from '../normalize/normalizer.js';
import type { Family, RejectReason } from '../parse/exposition.js';
import { canonicalInput, passthroughInput } from '../sources/adapter.js';
import { detectFlavor, FLAVOR_TABLE, normaliserView, type FlavorAdapter } from '../sources/flavor.js';
import type { ScrapeOutcome, Source } from '../sources/source.js';

export interface CycleDeps {
  normalizer: Normalizer;
  passthroughGuard: PassthroughGuard;
  errors: ErrorReporter;
  log: Logger;
  /** Model for engines that name none, from --model. */
  defaultModel: string | undefined;
  /** Whether infertel reads the GPUs itself (an engine's own GPU families are then not re-exported). */
  gpuTelemetry: () => boolean;
  now: () => number;
  /** Catalogue metrics the inline proxy measures for this engine (it sits in front of it): not read from the scrape. */
  proxied?: ReadonlySet<string>;
}

export interface CycleResult {
  outcome: ScrapeOutcome;
  detail: string | undefined;
  bytes: number;
  /** Rejected lines and histograms too incomplete to normalise. */
  parseErrors: number;
  rejected: Partial<Record<RejectReason, number>>;
  /** Canonical source series this scrape fed (0: nothing mapped). */
  canonicalSeries: number;
  /** Guarded passthrough families; undefined when the scrape failed (the previous ones stand). */
  passthrough: Family[] | undefined;
}

/** How long a failed info lookup (model, version) waits before it is tried again. */
const INFO_LOOKUP_RETRY_MS = 60_000;

export class EngineCycle {
  private adapter: FlavorAdapter | undefined;
  private model: string | undefined;
  /** The engine's version, once the payload or an info endpoint said it. */
  version: string | undefined;
  private infoLookupAt = 0;
  private infoLookups = 0;

  constructor(
    readonly cfg: UpstreamConfig,
    private readonly source: Source,
    private readonly deps: CycleDeps,
  ) {
    this.adapter = cfg.flavor === 'auto' ? undefined : FLAVOR_TABLE[cfg.flavor];
  }

  /** The engine's adapter, configured or detected (undefined until detected). */
  get engine(): FlavorAdapter | undefined {
    return this.adapter;
  }

  /** One cycle. Never throws: failures are in the result. */
  async run(signal: AbortSignal): Promise<CycleResult> {
    const { normalizer } = this.deps;
    const result: CycleResult = { outcome: 'error', detail: undefined, bytes: 0, parseErrors: 0, rejected: {}, canonicalSeries: 0, passthrough: undefined };
    try {
      const askedAt = this.deps.now();
      const res = await this.source.scrape(signal);
      Object.assign(result, { outcome: res.outcome, detail: res.detail, bytes: res.bytes, parseErrors: res.parseErrors, rejected: res.rejected });
      if (res.outcome !== 'ok') {
        normalizer.markFailed(this.cfg.name);
        return result;
      }
      if (!this.adapter) {
        this.adapter = detectFlavor(res.families);
        if (this.adapter) this.deps.log.info({ upstream: this.cfg.name, flavor: this.adapter.name }, 'detected engine flavor');
      }
      const adapter = this.adapter;
      // One scan of the payload for the model it names, used twice below.
      const payloadModel = adapter?.payloadModel(res.families);
      if (adapter) await this.resolveInfo(adapter, res.families, payloadModel, signal);
      await nextTurn();
      result.passthrough = this.cfg.passthrough ? this.deps.passthroughGuard.apply(passthroughInput(adapter, res.families, this.deps.gpuTelemetry())) : [];
      await nextTurn();
      // The normaliser is written last, with no turn after it: the loop records this scrape's
      // passthrough and moves the data version in the same turn, so no /metrics rendered in
      // between pairs this scrape's canonical series with the previous scrape's passthrough.
      if (adapter) {
        const view = { ...normaliserView(adapter, this.cfg.name, this.defaultModel(payloadModel)), skip: this.deps.proxied, readAtMs: askedAt };
        const stats = normalizer.ingest(view, canonicalInput(adapter, res.families));
        result.canonicalSeries = stats.series;
        result.parseErrors += stats.incompleteHistograms;
      }
    } catch (err) {
      result.outcome = 'error';
      result.detail = redactUrl((err as Error).message);
      result.passthrough = undefined;
      normalizer.markFailed(this.cfg.name);
    }
    return result;
  }

  /**
   * The model of series whose labels name none, in this order: the one model the payload's other
   * families name, this upstream's configured model, what the engine's info endpoint said, the
   * global --model, unknown. A global model never overrides an engine that names its own.
   */
  private defaultModel(payloadModel: string | undefined): string {
    return payloadModel ?? this.cfg.model ?? this.model ?? this.deps.defaultModel ?? 'unknown';
  }

  /**
   * Asks the engine's info endpoints for its version and (when nothing else names it) its model:
   * until both are known or three tries have failed, at most once a minute.
   */
  private async resolveInfo(adapter: FlavorAdapter, families: readonly Family[], payloadModel: string | undefined, signal: AbortSignal): Promise<void> {
    const payloadVersion = adapter.payloadVersion?.(families);
    if (payloadVersion) this.version = payloadVersion;
    const needModel = !this.model && !this.cfg.model && !payloadModel;
    if ((!needModel && this.version) || this.infoLookups >= 3 || this.deps.now() < this.infoLookupAt) return;
    this.infoLookupAt = this.deps.now() + INFO_LOOKUP_RETRY_MS;
    this.infoLookups++;
    try {
      const info = await adapter.info(this.cfg.url, signal);
      if (info.version && !this.version) this.version = info.version;
      if (needModel && info.model) {
        this.model = info.model;
        this.deps.log.info({ upstream: this.cfg.name, model: this.model }, 'model learned from the engine');
      }
    } catch (err) {
      this.deps.errors.report('engine_info_failed', err, { upstream: this.cfg.name });
    }
  }
}
