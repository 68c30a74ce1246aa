// What both data paths of the inline proxy share: the proxy's options and dependencies, one
// request's record as it is measured (an Exchange), how it starts (tenant, request id, SLO class,
// trace) and how it is recorded once at its end: metrics always, the request log when sampled,
// and its trace. The Node proxy (proxy.ts) and the native data path's JS side (native-proxy.ts)
// differ only in how the bytes move and where the times come from.

import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Tracer } from '@opentelemetry/api';
import type { GpuSummary } from '../export/summary.js';
import type { Logger } from '../logger.js';
import { type Admission, type Limiter, rateLimitHeaders, remainingRatios, type TenantLimits } from './limits.js';
import type { ProxyMetrics, StreamEnd } from './metrics.js';
import type { ServedModels } from './models.js';
import { gpuField, type RequestLog } from './request-log.js';
import { promptMaterial, type RequestFacts, type Route } from './routes.js';
import type { BodyReading } from './stream.js';
import type { Tenant, TenantResolver } from './tenants.js';
import { contextBucket, type ProxyTrace, RequestTrace, type Timeline, UntracedRequest } from './trace.js';
import type { StreamFindings } from './validator.js';

export interface ProxyOptions {
  listen: string;
  target: string;
  maxBodyBytes: number;
  upstreamTimeoutMs: number;
  traceTokenEvery: number;
  maxConcurrent: number;
  /** streamValidator.stallAfter: a gap between stream events longer than this is a stall. */
  stallAfterMs: number;
}

/** What the proxy counts about itself (infertel_proxy_events_total{event}). */
export type ProxyEvent =
  | 'malformed_body'
  | 'body_too_large'
  | 'upstream_refused'
  | 'upstream_timeout'
  | 'engine_reset'
  | 'client_abort'
  | 'overloaded'
  | 'usage_injected'
  | 'rate_limited'
  | 'policy_timeout'
  | 'choices_untracked'
  | 'internal_error';

export interface ProxyDeps {
  tenants: TenantResolver;
  models: ServedModels;
  metrics: ProxyMetrics;
  requestLog: RequestLog;
  /** Undefined when tracing is off: no spans are made, the incoming trace context is passed on. */
  tracer: Tracer | undefined;
  gpu: () => GpuSummary;
  /** Called after each request is recorded (the exposition's data changed). */
  onRecord: () => void;
  workerId: string;
  /** Where stream violations are logged (once per request, never with content). */
  log?: Logger;
  /** Rate limits; undefined when none is configured. */
  limits?: { limiter: Limiter; of(tenant: string): TenantLimits };
}

/** What the agent asks of an inline proxy, whichever data path carries the bytes. */
export interface RequestProxy {
  readonly events: Partial<Record<ProxyEvent, number>>;
  readonly openRequests: number;
  /** `node` or `native`: which data path carries the bytes. */
  readonly dataPath: 'node' | 'native';
  start(): Promise<void>;
  stop(): Promise<void>;
  address(): string;
  engineAnswering(): boolean;
  listening(): boolean;
  /**
   * Resolves once every request whose answer a client has had is recorded (the native loop counts
   * each end it tells this side before the answer's last bytes go out); within `timeoutMs` at most.
   */
  settled(timeoutMs?: number): Promise<void>;
}

export const VIA = '1.1 infertel';
/** gen_ai.operation.name of each measured route (OTel GenAI semantic conventions). */
const OPERATION: Partial<Record<Route, string>> = {
  '/v1/chat/completions': 'chat',
  '/v1/responses': 'chat',
  '/v1/completions': 'text_completion',
  '/generate': 'text_completion',
  '/generate_stream': 'text_completion',
  '/v1/embeddings': 'embeddings',
};
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const SLO_CLASS = /^[a-z0-9_-]{1,32}$/i;

/** The incoming request id when it is a plain token, else a new one (a crafted id never reaches a header or log). */
export function requestIdOf(headers: IncomingHttpHeaders): string {
  const v = headers['x-request-id'];
  const s = Array.isArray(v) ? v[0] : v;
  return s && REQUEST_ID.test(s) ? s : randomUUID();
}

/** Everything known about one request by the time it ends (times in performance.now() ms). */
export interface Exchange {
  requestId: string;
  route: Route;
  tenant: Tenant;
  facts: RequestFacts | undefined;
  /** The keyed hash of the prompt, taken when the body was read (undefined without a secret or a prompt). */
  promptHash: string | undefined;
  model: string;
  received: number;
  admitted: number;
  sent: number | undefined;
  upstreamEnded: number | undefined;
  observer: BodyReading | undefined;
  validator: StreamFindings | undefined;
  status: number | undefined;
  error: string | undefined;
  streamEnd: StreamEnd | undefined;
  trace: ProxyTrace;
  sloClass: string | undefined;
  recorded: boolean;
  admission: Admission | undefined;
}

/** A request as it arrives: its tenant, request id, SLO class and trace. */
export function openExchange(
  deps: ProxyDeps,
  headers: IncomingHttpHeaders,
  method: string,
  route: Route,
  received: number,
  requestId = requestIdOf(headers),
): Exchange {
  const tenant = deps.tenants.resolve(headers);
  const sloHeader = headers['x-slo-class'];
  return {
    requestId,
    route,
    tenant,
    facts: undefined,
    promptHash: undefined,
    model: '',
    received,
    admitted: received,
    sent: undefined,
    upstreamEnded: undefined,
    observer: undefined,
    validator: undefined,
    status: undefined,
    error: undefined,
    streamEnd: undefined,
    trace: deps.tracer
      ? new RequestTrace(deps.tracer, headers, received, {
          'http.request.method': method,
          'http.route': route,
          route,
          tenant: tenant.label,
          worker_id: deps.workerId,
          'infertel.request_id': requestId,
        })
      : new UntracedRequest(headers),
    sloClass: typeof sloHeader === 'string' && SLO_CLASS.test(sloHeader) ? sloHeader : tenant.sloClass,
    recorded: false,
    admission: undefined,
  };
}

/**
 * What the request body says, noted on the exchange. The prompt is hashed now, when there is a
 * secret to hash it under, and then let go: a long prompt kept parsed until the stream ends would
 * hold heap for every open request, where its hash is 76 characters.
 */
export function noteFacts(deps: ProxyDeps, ex: Exchange, facts: RequestFacts): void {
  ex.facts = facts;
  if (deps.requestLog.hashesPrompts) ex.promptHash = deps.requestLog.hash(promptMaterial(facts));
  facts.prompt = undefined;
}

/**
 * Once a proxy takes requests: says so, then waits for the first model list. Said before the list
 * comes, since requests are taken from now on and recorded once it is known.
 */
export async function startedListening(deps: ProxyDeps, address: string, dataPath: string): Promise<void> {
  deps.log?.info({ listen: address, data_path: dataPath }, 'proxy listening');
  await deps.models.start();
}

/**
 * Runs `work` (recording a request); an exception is counted as internal_error and logged by its
 * name only (a message built from request data must not reach the log). Thrown out of an event
 * handler or the native loop's callback, it would end the agent.
 */
export function guarded(events: Partial<Record<ProxyEvent, number>>, log: Logger | undefined, work: () => void): void {
  try {
    work();
  } catch (err) {
    const n = (events.internal_error ?? 0) + 1;
    events.internal_error = n;
    if (n <= 10) log?.error({ event: 'proxy_internal_error', error: (err as Error).name }, 'proxy: a request could not be recorded');
  }
}

/** The rate limiter's answer for the exchange's tenant: undefined without limits, and when its backend failed. */
export function askLimiter(deps: ProxyDeps, ex: Exchange): Admission | undefined | Promise<Admission | undefined> {
  const limits = deps.limits;
  if (!limits) return undefined;
  const pending = limits.limiter.admit(ex.tenant.name, limits.of(ex.tenant.name));
  return pending instanceof Promise ? pending.catch(() => undefined) : pending;
}

/** The rate limiter's answer is in: its metrics, recorded for the exchange. */
export function noteAdmission(deps: ProxyDeps, ex: Exchange, a: Admission | undefined, at: number): void {
  ex.admitted = at;
  if (!a) return;
  ex.admission = a;
  if (a.refusedBy) deps.metrics.recordRateLimited(ex.tenant.label, a.refusedBy);
  deps.metrics.recordRemaining(ex.tenant.label, remainingRatios(a));
}

/** A whole answer of the proxy's own: status, fields (framing included) and body. */
export interface OwnAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A short JSON error of the proxy's own; it names no address and carries no request content. */
export function refusal(ex: Exchange, status: number, message: string): OwnAnswer {
  ex.status = status;
  const body = JSON.stringify({ error: { message, type: 'infertel_proxy', request_id: ex.requestId } });
  return {
    status,
    headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'x-request-id': ex.requestId, via: VIA },
    body,
  };
}

/** 429 in OpenAI's shape, with Retry-After and the x-ratelimit-* headers. */
export function rateLimited(ex: Exchange, a: Admission): OwnAnswer {
  ex.status = 429;
  const body = JSON.stringify({
    error: {
      message: `Rate limit reached for ${a.refusedBy} (tenant ${ex.tenant.label}); retry after ${a.retryAfterSeconds}s.`,
      type: a.refusedBy,
      param: null,
      code: 'rate_limit_exceeded',
    },
  });
  return {
    status: 429,
    headers: {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'retry-after': String(a.retryAfterSeconds),
      'x-request-id': ex.requestId,
      via: VIA,
      ...rateLimitHeaders(a),
    },
    body,
  };
}

/** Records each finished request once: metrics (always), request log (sampled), trace. */
export class ExchangeRecorder {
  constructor(
    private readonly deps: ProxyDeps,
    private readonly traceTokenEvery: number,
    /** The proxy's event counts, where the recording counts its own (internal_error, choices_untracked). */
    private readonly events: Partial<Record<ProxyEvent, number>>,
  ) {}

  /** Counts a stream's violations by kind and logs them once for the request; undefined when there are none. */
  private validated(ex: Exchange, validator: StreamFindings, ended: number, model: string): string[] | undefined {
    validator.end(ended);
    if (validator.choicesUntracked) this.events.choices_untracked = (this.events.choices_untracked ?? 0) + 1;
    if (!validator.found.size) return undefined;
    const kinds = [...validator.found];
    this.deps.metrics.recordViolations(model, kinds);
    this.deps.log?.warn(
      { event: 'stream_violation', request_id: ex.requestId, model, route: ex.route, tenant: ex.tenant.label, kinds },
      'stream broke the SSE contract',
    );
    return kinds;
  }

  /** `ended`: when the exchange was over, in performance.now() ms. */
  finish(ex: Exchange, ended: number): void {
    if (ex.recorded) return;
    const deps = this.deps;
    const requested = ex.facts?.requestedModel;
    const first = requested !== undefined ? deps.models.firstFetch() : undefined;
    if (first) {
      // Arrived before the engine's model list did: its label waits for the list, so a served name is not recorded as the fallback.
      void first.then(() => guarded(this.events, this.deps.log, () => this.finish(ex, ended)));
      return;
    }
    ex.recorded = true;
    const obs = ex.observer;
    const e2eMs = ended - ex.received;
    const ttftMs = obs?.firstContentAt !== undefined ? obs.firstContentAt - ex.received : undefined;
    const completion = obs?.completionTokens();
    const prompt = obs?.usage?.promptTokens;
    const status = ex.status;
    const ok2xx = status !== undefined && status >= 200 && status < 300;
    const usageExpected = ex.route !== 'other' && ok2xx;
    const usageUnknown = usageExpected && (ex.route === '/v1/embeddings' ? prompt === undefined : completion === undefined);
    // Judged again now: the list may have come (or changed) since the request arrived.
    const model = requested !== undefined && deps.models.serves(requested) ? requested : ex.model || deps.models.resolve(undefined);
    const traceId = ex.trace.sampledTraceId();
    const violations = ex.validator ? this.validated(ex, ex.validator, ended, model) : undefined;
    ex.admission?.release(prompt !== undefined || completion !== undefined ? (prompt ?? 0) + (completion ?? 0) : undefined);
    deps.metrics.record(
      {
        model,
        route: ex.route,
        tenant: ex.tenant.label,
        status,
        e2eMs,
        ttftMs,
        gapCounts: obs?.gapCounts,
        gapSumMs: obs?.gapSumMs ?? 0,
        promptTokens: prompt,
        completionTokens: completion,
        usageUnknown,
        streamEnd: ex.streamEnd,
        traceId,
      },
      Date.now(),
    );
    deps.onRecord();
    const isError = !ok2xx || ex.error !== undefined;
    const tpotMs = completion !== undefined && completion > 1 && ttftMs !== undefined ? (e2eMs - ttftMs) / (completion - 1) : undefined;
    const error = ex.error ?? (ok2xx ? undefined : `upstream status ${status}`);
    const round = (v: number | undefined) => (v === undefined ? null : Math.round(v * 1000) / 1000);
    const facts = ex.facts;
    if (deps.requestLog.sampled(isError)) {
      const promptHash = ex.promptHash;
      deps.requestLog.write({
        event: 'inference',
        status: isError ? 'error' : 'success',
        timestamp: new Date(performance.timeOrigin + ex.received).toISOString(),
        request_id: ex.requestId,
        ...(traceId ? { trace_id: traceId } : {}),
        tenant: ex.tenant.label,
        model,
        route: ex.route,
        code: status ?? null,
        stream: facts?.stream ?? false,
        latency_ms: round(e2eMs)!,
        ttft_ms: round(ttftMs),
        tpot_ms: round(tpotMs),
        prompt_tokens: prompt ?? null,
        tokens_generated: completion ?? null,
        tokens_per_second: completion !== undefined && e2eMs > 0 ? round(completion / (e2eMs / 1000)) : null,
        max_new_tokens: facts?.maxNewTokens ?? null,
        temperature: facts?.temperature ?? null,
        ...(ex.sloClass ? { slo_class: ex.sloClass } : {}),
        ...(promptHash ? { prompt_hash: promptHash } : {}),
        gpu: gpuField(deps.gpu()),
        error: error ?? null,
        ...(violations ? { stream_violations: violations } : {}),
      });
    }
    if (!ex.trace.traced) return;
    const timeline: Timeline = {
      received: ex.received,
      admitted: ex.admitted,
      sent: ex.sent,
      firstContent: obs?.firstContentAt,
      lastContent: obs?.lastContentAt,
      upstreamEnded: ex.upstreamEnded,
      ended,
      marks: obs?.marks ?? [],
      markEvery: this.traceTokenEvery,
    };
    ex.trace.finish(
      timeline,
      {
        model,
        'gen_ai.request.model': model,
        ...(OPERATION[ex.route] ? { 'gen_ai.operation.name': OPERATION[ex.route] } : {}),
        ...(prompt !== undefined ? { prefill_len: prompt, 'gen_ai.usage.input_tokens': prompt } : {}),
        ...(completion !== undefined ? { generated_len: completion, 'gen_ai.usage.output_tokens': completion } : {}),
        context_bucket: contextBucket(prompt),
        ...(ex.sloClass ? { slo_class: ex.sloClass } : {}),
        'http.response.status_code': status ?? 0,
        ...(ttftMs !== undefined ? { 'gen_ai.server.time_to_first_token': ttftMs / 1000 } : {}),
      },
      error,
    );
  }
}
