// Composition root: builds the pipeline (sources -> normaliser -> exporters) from a validated
// config. Dependencies are injectable so tests can drive it without a process.

import { setImmediate as nextTurn } from 'node:timers/promises';
import { ErrorReporter } from './errors.js';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { buildCatalogue, proxySourced, type Catalogue } from './catalogue/catalogue.js';
import type { AgentConfig, UpstreamConfig } from './config/schema.js';
import { ExpositionCache } from './export/cache.js';
import { Assembly } from './export/assembly.js';
import { StatusHistory } from './export/status.js';
import type { ExpositionFormat } from './export/render.js';
import { SelfMetrics } from './export/self-metrics.js';
import { createApp, listen, type Readiness } from './export/server.js';
import { buildSummary, type GpuSummary } from './export/summary.js';
import { GPU_IDENTITY_LABELS, GPU_VIEW, type GpuTelemetry } from './gpu/telemetry.js';
import { SeriesLimiter } from './guard/cardinality.js';
import { makeLabelPolicy, newGuardCounts } from './guard/labels.js';
import { newPassthroughCounts, PassthroughGuard } from './guard/passthrough.js';
import type { Logger } from './logger.js';
import { Normalizer, type CanonicalFamily, type HistData, type SampleRejection } from './normalize/normalizer.js';
import type { Loop } from './schedule/loop.js';
import { startSources } from './pipeline/runner.js';
import { createEngineSource } from './sources/engine.js';
import type { Source } from './sources/source.js';
import { ConfigError } from './config/load.js';
import { agentTracer, startTracing, type Tracing } from './tracing/otel.js';
import { Upstream } from './upstream.js';
import { boundAddress } from './net/bound.js';
import { VERSION } from './version.js';
import type { ProxyDeps, RequestProxy } from './proxy/exchange.js';
import { NativeProxy, nativeUnfit } from './proxy/native-proxy.js';
import { InlineProxy } from './proxy/proxy.js';
import { type GpuAddon, loadAddon } from './gpu/addon.js';
import { ProxyMetrics } from './proxy/metrics.js';
import { ServedModels } from './proxy/models.js';
import { RequestLog } from './proxy/request-log.js';
import { TenantResolver } from './proxy/tenants.js';
import { effectiveLimits, MemoryLimiter, type Limiter, type TenantLimits } from './proxy/limits.js';
import { RedisLimiter } from './proxy/redis-limits.js';
import { CanaryRunner } from './canary/canary.js';
import { EfficiencyJoin } from './normalize/efficiency.js';
import { LoadProbe } from './canary/probe.js';

export interface AgentDeps {
  log: Logger;
  now?: () => number;
  /** Builds each upstream's source (default: HTTP scrapes); tests give fakes. */
  source?: (cfg: UpstreamConfig) => Source;
  /** `onChange` is called after every poll that changed what families() returns. */
  gpu?: (catalogue: Catalogue, metrics: SelfMetrics, onChange: () => void, energyJoules: (device: string) => number | undefined) => GpuTelemetry;
  /** Where request logs go instead of stdout or requestLog.path (tests). */
  requestLogDestination?: NodeJS.WritableStream;
  /** Sampling's random source (tests). */
  random?: () => number;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/**
 * How long a scrape waits for the native proxy's records of answers already given. They follow by up
 * to 20 ms (edge.rs's HAND_EVERY), but JS runs under SCHED_IDLE by default and on busy CPUs can take
 * far longer to get to them; the wait ends as soon as they are in.
 */
const SCRAPE_SETTLE_MS = 500;

/** The addon to carry the proxy's bytes, or why the Node data path carries them (proxy.dataPath). */
export function dataPathOf(choice: 'auto' | 'native' | 'node', target: string): { addon?: GpuAddon; reason?: string } {
  if (choice === 'node') return {};
  const unfit = nativeUnfit(target);
  if (unfit) return { reason: unfit };
  const loaded = loadAddon();
  if (!loaded.ok) return { reason: loaded.reason };
  if (typeof loaded.addon.edgeStart !== 'function') return { reason: 'the addon predates the native data path (rebuild it)' };
  return { addon: loaded.addon };
}

/** Whether a scraped URL is the engine the proxy forwards to (same port on the same or a loopback host). */
export function sameEngine(scrapeUrl: string, proxyTarget: string): boolean {
  try {
    const a = new URL(scrapeUrl);
    const b = new URL(proxyTarget);
    const port = (u: URL) => u.port || (u.protocol === 'https:' ? '443' : '80');
    return port(a) === port(b) && (a.hostname === b.hostname || (LOOPBACK.has(a.hostname) && LOOPBACK.has(b.hostname)));
  } catch {
    return false;
  }
}

/** The rate limiter and each tenant's effective limits, or undefined when no limit is configured. */
function rateLimitsOf(
  config: AgentConfig,
  now: () => number,
  log: Logger,
  onBackendError: () => void,
): { limiter: Limiter; of(tenant: string): TenantLimits } | undefined {
  const r = config.rateLimits;
  const dflt = r.default;
  if (!dflt && !config.tenants.some((t) => t.limits)) return undefined;
  const byName = new Map<string, TenantLimits>(config.tenants.map((t) => [t.name, { limits: effectiveLimits(t.limits, dflt), shadow: t.shadow }]));
  const fallback: TenantLimits = { limits: effectiveLimits(undefined, dflt), shadow: false };
  const limiter: Limiter = r.redis
    ? new RedisLimiter({ url: r.redis.url, timeoutMs: r.redis.timeout, failOpen: r.failOpen, streamTtlMs: 600_000, log, onError: onBackendError })
    : new MemoryLimiter(now);
  return { limiter, of: (tenant) => byName.get(tenant) ?? fallback };
}

const NO_GPU: GpuSummary = { source: 'none', nvml_unavailable: true, reason: 'GPU telemetry not configured', devices: [] };

/** An upstream counts as fresh while its last success is younger than this many intervals. */
const FRESH_INTERVALS = 3;

export class Agent {
  readonly catalogue: Catalogue;
  readonly normalizer: Normalizer;
  readonly metrics: SelfMetrics;
  readonly upstreams: Upstream[];
  readonly cache: ExpositionCache;
  private readonly limiter: SeriesLimiter;
  private readonly passthroughCounts = newPassthroughCounts();
  private readonly invalidSamples: Partial<Record<SampleRejection, number>> = {};
  private readonly now: () => number;
  private readonly log: Logger;
  private tracing: Tracing | undefined;
  private readonly gpu: GpuTelemetry | undefined;
  private dataVersion = 0;
  private readonly assembly: Assembly;
  private readonly status: StatusHistory;
  private loops: Loop[] = [];
  private server: Server | undefined;
  private lastRequests = 0;
  private lastRequestAt: number | undefined;
  readonly proxy: RequestProxy | undefined;
  readonly proxyMetrics: ProxyMetrics | undefined;
  private readonly requestLog: RequestLog | undefined;
  private readonly rateLimiter: Limiter | undefined;
  readonly canaries: CanaryRunner | undefined;
  private readonly efficiency: EfficiencyJoin;
  private readonly loadProbe: LoadProbe | undefined;

  constructor(
    readonly config: AgentConfig,
    deps: AgentDeps,
  ) {
    this.now = deps.now ?? Date.now;
    this.log = deps.log;
    const proxyOn = config.proxy.listen !== undefined && config.proxy.target !== undefined;
    this.catalogue = buildCatalogue(config.units, config.buckets);
    // One series per concept: the engine behind the proxy no longer feeds what the proxy measures
    // (its own families stay in passthrough), so no sum counts a request twice.
    const proxied = new Set(this.catalogue.metrics.filter(proxySourced).map((m) => m.name));
    const guardCounts = newGuardCounts();
    const policy = makeLabelPolicy(config.labels.forbidden, config.limits.labelValueLength, config.labels.unboundedAllowed);
    this.limiter = new SeriesLimiter({ perMetric: config.limits.seriesPerMetric, total: config.limits.seriesTotal });
    this.normalizer = new Normalizer(this.catalogue, {
      histograms: config.histograms,
      staleAfterScrapes: config.limits.staleAfterScrapes,
      seriesPerMetric: config.limits.seriesPerMetric,
      // Canonical labels are the catalogue's allowlist: a GPU's UUID and PCI address are its
      // identity on gpu_info, bounded by the devices, where elsewhere such a value means an id leak.
      labelPolicy: makeLabelPolicy(config.labels.forbidden, config.limits.labelValueLength, [...config.labels.unboundedAllowed, ...GPU_IDENTITY_LABELS]),
      limiter: this.limiter,
      guardCounts,
      invalid: this.invalidSamples,
    });
    this.metrics = new SelfMetrics(
      VERSION,
      () => this.limiter.overflowed,
      () => ({
        truncated: guardCounts.truncated,
        redacted: guardCounts.redacted,
        forbidden_dropped: guardCounts.forbiddenDropped,
      }),
      () => ({
        duplicate: this.passthroughCounts.duplicateSamples,
        merged: this.passthroughCounts.mergedSamples,
        over_bucket_cap: this.passthroughCounts.seriesOverBucketCap,
      }),
      () => this.invalidSamples,
      new ErrorReporter(deps.log),
    );
    this.upstreams = config.upstreams.map(
      (u) =>
        new Upstream(u, this.addSource((deps.source ?? createEngineSource)(u)), {
          normalizer: this.normalizer,
          metrics: this.metrics,
          tracer: agentTracer(VERSION),
          log: deps.log,
          passthroughGuard: new PassthroughGuard(
            policy,
            { seriesPerFamily: config.limits.seriesPerMetric, seriesTotal: config.limits.seriesTotal, bucketsPerSeries: config.limits.bucketsPerSeries },
            (family, n) => this.limiter.overflowed.set(family, (this.limiter.overflowed.get(family) ?? 0) + n),
            guardCounts,
            this.passthroughCounts,
          ),
          defaultModel: config.model,
          staleAfterScrapes: config.limits.staleAfterScrapes,
          now: this.now,
          gpuTelemetry: () => this.gpu?.reading() ?? false,
          proxied: proxyOn && sameEngine(u.url, config.proxy.target!) ? proxied : undefined,
        }),
    );
    this.gpu = deps.gpu?.(
      this.catalogue,
      this.metrics,
      () => this.dataVersion++,
      (device) =>
        this.normalizer
          .snapshot()
          .find((f) => f.metric.name === 'gpu_energy_joules_total')
          ?.series.find((s) => s.labels.some(([k, v]) => k === 'device' && v === device))?.value,
    );
    this.efficiency = new EfficiencyJoin(this.catalogue, { peakTflops: config.gpu.peakTflops, peakMemoryBandwidthGBs: config.gpu.peakMemoryBandwidthGBs });
    const canaryTarget = config.canaryTarget ?? config.proxy.target;
    const canariesOn = canaryTarget !== undefined && config.canaries.length > 0;
    // Config validation requires a probe model or a canary to take it from.
    const probeModel = config.loadProbe.model ?? config.canaries[0]?.model;
    const probeOn = canaryTarget !== undefined && probeModel !== undefined && config.loadProbe.enabled;
    if (proxyOn || canariesOn || probeOn)
      this.proxyMetrics = new ProxyMetrics(this.catalogue, { policy, counts: guardCounts, limiter: this.limiter }, config.tracing.endpoint !== undefined);
    const onCanaryRecord = () => this.dataVersion++;
    if (canariesOn)
      this.canaries = new CanaryRunner(canaryTarget, config.canaries, config.streamValidator.stallAfter, {
        metrics: this.proxyMetrics!,
        log: deps.log.child({ component: 'canary' }),
        onRecord: onCanaryRecord,
      });
    if (probeOn)
      this.loadProbe = new LoadProbe(canaryTarget, config.loadProbe, probeModel, config.streamValidator.stallAfter, {
        metrics: this.proxyMetrics!,
        log: deps.log.child({ component: 'load-probe' }),
        onRecord: onCanaryRecord,
      });
    if (proxyOn && this.proxyMetrics) {
      const p = config.proxy;
      try {
        this.requestLog = new RequestLog(config.requestLog, deps.random, deps.requestLogDestination);
      } catch (err) {
        throw new ConfigError([(err as Error).message]);
      }
      const tenants = new TenantResolver(config.tenants, p.maxTenants);
      const proxyMetrics = this.proxyMetrics;
      const limits = rateLimitsOf(config, this.now, deps.log, () => proxyMetrics.recordBackendError('redis'));
      this.rateLimiter = limits?.limiter;
      const pod = process.env.POD_NAME ?? hostname();
      const path = dataPathOf(p.dataPath, p.target!);
      if (!path.addon) {
        if (p.dataPath === 'native') throw new ConfigError([`proxy.dataPath: native is not available here (${path.reason})`]);
        if (path.reason) deps.log.info({ component: 'proxy', data_path: 'node', reason: path.reason }, 'proxy: on the Node data path');
      }
      const proxyOptions = {
        listen: p.listen!,
        target: p.target!,
        maxBodyBytes: p.maxBodyBytes,
        upstreamTimeoutMs: p.upstreamTimeout,
        traceTokenEvery: p.traceTokenEvery,
        maxConcurrent: p.maxConcurrent,
        stallAfterMs: config.streamValidator.stallAfter,
      };
      const proxyDeps: ProxyDeps = {
        tenants,
        models: new ServedModels(p.target!, () => config.upstreams.find((u) => u.model)?.model ?? config.model ?? 'unknown', this.now),
        metrics: this.proxyMetrics,
        requestLog: this.requestLog,
        tracer: config.tracing.endpoint !== undefined ? agentTracer(VERSION) : undefined,
        gpu: () => this.gpu?.summary() ?? NO_GPU,
        onRecord: () => {
          this.dataVersion++;
          this.lastRequestAt = this.now();
        },
        workerId: pod,
        log: deps.log.child({ component: 'proxy' }),
        limits,
      };
      this.proxy = path.addon ? new NativeProxy(proxyOptions, proxyDeps, path.addon) : new InlineProxy(proxyOptions, proxyDeps);
      const proxy = this.proxy;
      const requestLog = this.requestLog;
      this.metrics.addCounts(
        'infertel_proxy_events_total',
        'Inline proxy events by kind: malformed_body, body_too_large, upstream_refused, upstream_timeout, engine_reset, client_abort, overloaded, usage_injected, rate_limited, policy_timeout, choices_untracked, internal_error.',
        'event',
        () => proxy.events,
      );
      this.metrics.addCounts(
        'infertel_request_logs_total',
        'Request log lines by outcome: written, or sampled_out (the request is still in the metrics).',
        'outcome',
        () => requestLog.counts,
      );
      this.metrics.addCounts(
        'infertel_proxy_tenants_folded_total',
        'Requests carried as tenant="other" because proxy.maxTenants tenants already have a label value.',
        'reason',
        () => ({ max_tenants: tenants.folded }),
      );
      this.metrics.addGauge('infertel_proxy_open_requests', 'Requests the inline proxy holds open now (streams included).', () => proxy.openRequests);
    }
    this.assembly = new Assembly(this.metrics);
    this.status = new StatusHistory(config.units === 'ms' ? 1 : 1000, Math.min(...config.upstreams.map((u) => u.intervalMs), 60_000) * 0.5);
    this.cache = new ExpositionCache(
      {
        version: () => this.dataVersion,
        renderData: (format) => this.renderData(format),
        renderSelf: (format) => (format === 'openmetrics' ? this.metrics.openmetrics.metrics() : this.metrics.text.metrics()),
      },
      this.now,
    );
  }

  private minInterval(): number {
    return Math.min(...this.upstreams.map((u) => u.cfg.intervalMs), 60_000) / 1000;
  }

  private readonly sources: Source[] = [];

  private addSource(s: Source): Source {
    this.sources.push(s);
    return s;
  }

  canonical(): CanonicalFamily[] {
    const joined = this.efficiency.families();
    const base = this.measured();
    return joined.length ? [...base, ...joined] : base;
  }

  /** Every canonical family but the efficiency joins (which are computed from these): the engines' and the GPU's, and the proxy's. */
  private measured(): CanonicalFamily[] {
    const data = this.normalizer.snapshot();
    const proxy = this.proxyMetrics?.families() ?? [];
    if (!proxy.length) return data;
    // Engines not behind the proxy still feed request metrics: one family each, series of both.
    const merged = [...data];
    for (const f of proxy) {
      const i = merged.findIndex((m) => m.metric.name === f.metric.name);
      const engines = merged[i];
      if (engines) merged[i] = { metric: f.metric, series: [...engines.series, ...f.series] };
      else merged.push(f);
    }
    return merged;
  }

  /** Canonical and passthrough series in one exposition, rendered once per data version. */
  renderData(format: ExpositionFormat): string {
    return this.assembly.render(format, this.dataVersion, () => this.canonical(), this.upstreams);
  }

  summary(): unknown {
    const toMs = this.config.units === 'ms' ? 1 : 1000;
    return buildSummary(this.canonical(), toMs, this.lastRequestAt, this.gpu?.summary() ?? NO_GPU, this.requestHistograms());
  }

  /** The request-duration histograms in their own bounds: the engines' and, when it is on, the proxy's. */
  private requestHistograms(): HistData[] {
    const engines = this.normalizer.nativeHistograms('inference_request_duration_ms');
    if (!this.proxyMetrics) return engines;
    const fam = this.proxyMetrics.families().find((f) => f.metric.name === 'inference_request_duration_ms');
    return [...engines, ...(fam?.series ?? []).flatMap((s) => (s.hist ? [s.hist] : []))];
  }

  readiness(): Readiness {
    const now = this.now();
    const upstreams: Readiness['upstreams'] = {};
    let ready = true;
    for (const u of this.upstreams) {
      const h = u.health;
      let reason: string | undefined;
      if (h.lastSuccessMs === undefined)
        reason =
          h.lastOutcome === 'pending' ? 'no scrape yet' : `never scraped successfully (last: ${h.lastOutcome}${h.lastDetail ? `: ${h.lastDetail}` : ''})`;
      else if (now - h.lastSuccessMs > FRESH_INTERVALS * h.intervalMs)
        reason = `last success ${Math.round((now - h.lastSuccessMs) / 1000)}s ago (last: ${h.lastOutcome})`;
      upstreams[u.cfg.name] = reason ? { ready: false, reason } : { ready: true };
      if (reason) ready = false;
    }
    if (this.proxy) {
      const reason = !this.proxy.listening()
        ? 'proxy not listening'
        : !this.proxy.engineAnswering()
          ? `engine at ${this.config.proxy.target} not answering`
          : undefined;
      upstreams.proxy = reason ? { ready: false, reason } : { ready: true };
      if (reason) ready = false;
    }
    return { ready, upstreams };
  }

  /** One collection cycle of one upstream: scrape, normalise, render. Resolves true on success. */
  async collect(u: Upstream, signal: AbortSignal): Promise<boolean> {
    const ok = await u.cycle(signal);
    // No yield before it: a /metrics request between the cycle's record (upstream up) and the new
    // data version would see the upstream up beside its previous data.
    await this.afterCycle();
    return ok;
  }

  /** The GPU source's exposition through the normaliser and its guards, like an engine's scrape. */
  private ingestGpu(): void {
    if (!this.gpu) return;
    this.normalizer.ingest(GPU_VIEW, this.gpu.exposition());
    this.dataVersion++;
  }

  /**
   * After each cycle: a new data version, then the text body rendered ahead of scrapes so they
   * only copy it. The rendering takes two turns of its own (the new passthrough blocks, then the
   * body), so a large engine's cycle never holds the loop for both at once; the loop waits for it
   * before the next cycle. A scrape in between renders what it needs itself (the cache is keyed
   * by the data version).
   */
  private async afterCycle(): Promise<void> {
    this.dataVersion++;
    this.normalizer.advance(this.now(), this.minInterval() * 0.9);
    if (this.gpu) this.efficiency.advance(this.now(), this.measured(), this.minInterval() * 0.9, (model) => this.normalizer.readingTime(model));
    const requests =
      this.normalizer
        .snapshot()
        .find((f) => f.metric.name === 'inference_requests_total')
        ?.series.reduce((a, s) => a + s.value, 0) ?? 0;
    if (requests > this.lastRequests) this.lastRequestAt = this.now();
    this.lastRequests = requests;
    if (this.config.ui.enabled) this.recordStatus();
    const version = this.dataVersion;
    await nextTurn();
    this.assembly.prepare(this.upstreams);
    await nextTurn();
    if (version === this.dataVersion) this.renderData('text');
  }

  private readonly statusListeners = new Set<(json: string) => void>();

  private statusDocument(): unknown {
    return this.status.document(process.env.POD_NAME ?? hostname());
  }

  private subscribeStatus(listener: (json: string) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** One frame of the status page's history, after each cycle, pushed to open streams. */
  private recordStatus(): void {
    const overflowTotal = [...this.limiter.overflowed.values()].reduce((a, b) => a + b, 0);
    const readiness = this.readiness();
    this.status.record({
      nowMs: this.now(),
      canonical: this.canonical(),
      upstreams: this.upstreams.map((u) => ({ ...u.health, version: u.version })),
      gpu: this.gpu?.summary() ?? NO_GPU,
      ready: readiness.ready,
      native: {
        request: this.normalizer.nativeHistograms('inference_request_duration_ms'),
        ttft: this.normalizer.nativeHistograms('inference_ttft_ms'),
      },
      health: {
        seriesAdmitted: this.limiter.admittedTotal,
        seriesCap: this.limiter.budget.total,
        overflowTotal,
        parseErrorsTotal: this.upstreams.reduce((a, u) => a + u.health.parseErrorsTotal, 0),
        rssBytes: process.memoryUsage.rss(),
        scrapeSeconds: Object.fromEntries(this.upstreams.filter((u) => u.health.lastSeconds !== undefined).map((u) => [u.cfg.name, u.health.lastSeconds!])),
      },
    });
    if (this.statusListeners.size) {
      const json = JSON.stringify(this.statusDocument());
      for (const l of this.statusListeners) l(json);
    }
  }

  /** After start the process never ends on a stray rejection: it is counted and logged once. */
  private readonly onUnhandledRejection = (err: unknown) => this.metrics.errors.report('unhandled_rejection', err);

  async start(): Promise<void> {
    process.on('unhandledRejection', this.onUnhandledRejection);
    this.tracing = await startTracing(this.config.tracing.endpoint, this.config.tracing.serviceName, VERSION, this.config.tracing.protocol);
    try {
      this.server = await listen(
        createApp({
          cache: this.cache,
          summary: () => this.summary(),
          readiness: () => this.readiness(),
          status: this.config.ui.enabled ? () => this.statusDocument() : undefined,
          subscribeStatus: this.config.ui.enabled ? (listener) => this.subscribeStatus(listener) : undefined,
          onStreamRefused: () => this.metrics.errors.report('status_streams_full'),
          // Bounded: a scrape waits at most this long for the proxy's records to catch up.
          settled: this.proxy ? () => this.proxy!.settled(SCRAPE_SETTLE_MS) : undefined,
        }),
        this.config.listen,
      );
    } catch (err) {
      // A port in use or an address this machine does not have is a configuration problem.
      throw new ConfigError([`listen: cannot listen on ${this.config.listen} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
    }
    this.log.info({ component: 'http', listen: this.address() }, 'listening');
    if (this.proxy) {
      await this.rateLimiter?.ready?.();
      try {
        await this.proxy.start();
      } catch (err) {
        throw new ConfigError([
          `proxy.listen: cannot listen on ${this.config.proxy.listen} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
        ]);
      }
      this.idleBookkeeping();
    }
    const gpuPolling = this.gpu?.start() ?? false;
    // The GPU source's state (its telemetry source, even "none") is there before its first poll.
    this.ingestGpu();
    this.canaries?.start();
    this.loadProbe?.start();
    // One loop for every source: the engines, and the GPU probe when there is one to poll.
    this.loops = startSources(
      [
        ...this.upstreams.map((u) => ({ source: u, intervalMs: u.cfg.intervalMs, after: () => this.afterCycle() })),
        ...(this.gpu && gpuPolling ? [{ source: this.gpu, intervalMs: this.gpu.intervalMs(), after: () => this.ingestGpu() }] : []),
      ],
      { metrics: this.metrics, tracer: agentTracer(VERSION), log: this.log, now: this.now },
      (err, name) => this.metrics.errors.report('loop_run_threw', err, { upstream: name }),
    );
  }

  /**
   * With the native data path and nothing to decide per request, this process's JS only records
   * what the loop saw. Under SCHED_IDLE it never holds a CPU that the loop, the engine or a client
   * could use, and the kernel places a woken client on its CPU rather than preempting the loop.
   */
  private idleBookkeeping(): void {
    const proxy = this.proxy;
    if (!(proxy instanceof NativeProxy) || proxy.waits || this.config.proxy.agentThreads !== 'idle') return;
    const done = proxy.idleOtherThreads();
    const fields = { component: 'proxy', agent_threads: 'idle', idled: done.idled, kept: done.kept };
    if (done.failed) this.log.warn({ ...fields, failed: done.failed, err: done.error }, 'proxy: could not put every agent thread under SCHED_IDLE');
    else this.log.info(fields, "proxy: the agent's own threads run under SCHED_IDLE (proxy.agentThreads)");
  }

  /** HOST:PORT of /metrics as bound: with port 0 in the config, the port the system chose. */
  address(): string {
    return boundAddress(this.server);
  }

  /** HOST:PORT of the inline proxy as bound, when it runs. */
  proxyAddress(): string | undefined {
    return this.proxy?.address();
  }

  async stop(): Promise<void> {
    const server = this.server;
    const closed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    server?.closeAllConnections();
    await Promise.all([...this.loops.map((l) => l.stop()), closed, this.proxy?.stop(), this.canaries?.stop(), this.loadProbe?.stop()]);
    // The GPU probe closes after its loop: a poll may still be on its worker thread until then.
    await this.gpu?.stop();
    await this.requestLog?.close();
    await this.rateLimiter?.close?.();
    for (const s of this.sources) s.close?.();
    await this.tracing?.shutdown();
    process.off('unhandledRejection', this.onUnhandledRejection);
  }
}
