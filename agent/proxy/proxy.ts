// The inline proxy (request-level mode): forwards every request to the engine unchanged except
// for hop-by-hop headers, a request id, trace context and, on streams that did not ask for one,
// a usage chunk it takes back out. It measures each request at the edge and records it once in
// the metrics, the request log and a trace. Streams are never buffered beyond one SSE event.

import { randomUUID } from 'node:crypto';
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Tracer } from '@opentelemetry/api';
import type { GpuSummary } from '../export/summary.js';
import type { ProxyMetrics, StreamEnd } from './metrics.js';
import type { ServedModels } from './models.js';
import { gpuField, type RequestLog } from './request-log.js';
import { inspectBody, routeOf, type RequestFacts, type Route } from './routes.js';
import { bodyKind, StreamObserver } from './stream.js';
import { contextBucket, type ProxyTrace, RequestTrace, type Timeline, UntracedRequest } from './trace.js';
import { rateLimitHeaders, remainingRatios, type Admission, type Limiter, type TenantLimits } from './limits.js';
import type { Tenant, TenantResolver } from './tenants.js';
import { StreamValidator } from './validator.js';
import type { Logger } from '../logger.js';

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
  | 'rate_limited';

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

/** RFC 9110 §7.6.1: connection-specific fields, never forwarded (plus those the Connection field names). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
const VIA = '1.1 infertel';
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

/** The fixed hop-by-hop set, plus what the Connection header names (a copy only then: most requests name none beyond it). */
function hopByHop(headers: IncomingHttpHeaders): ReadonlySet<string> {
  let named: Set<string> | undefined;
  const conn = headers.connection;
  for (const v of Array.isArray(conn) ? conn : conn ? [conn] : [])
    for (const raw of v.split(',')) {
      const t = raw.trim().toLowerCase();
      if (t && !HOP_BY_HOP.has(t)) (named ??= new Set(HOP_BY_HOP)).add(t);
    }
  return named ?? HOP_BY_HOP;
}

function endToEnd(headers: IncomingHttpHeaders, drop: readonly string[]): OutgoingHttpHeaders {
  const skip = hopByHop(headers);
  const out: OutgoingHttpHeaders = {};
  for (const k in headers) {
    const v = headers[k];
    if (v !== undefined && !skip.has(k) && !drop.includes(k)) out[k] = v;
  }
  out.via = headers.via ? `${headers.via}, ${VIA}` : VIA;
  return out;
}

/** The incoming request id when it is a plain token, else a new one (a crafted id never reaches a header or log). */
export function requestIdOf(headers: IncomingHttpHeaders): string {
  const v = headers['x-request-id'];
  const s = Array.isArray(v) ? v[0] : v;
  return s && REQUEST_ID.test(s) ? s : randomUUID();
}

type BodyRead = { ok: true; body: Buffer } | { ok: false; reason: 'too_large' | 'aborted' };

function readBody(req: IncomingMessage, max: number): Promise<BodyRead> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let n = 0;
    let settled = false;
    const settle = (r: BodyRead) => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    req.on('data', (c: Buffer) => {
      if (settled) return;
      n += c.length;
      if (n > max) {
        parts.length = 0;
        settle({ ok: false, reason: 'too_large' });
        // Keep reading into nothing, so the client can read the 413 before the socket closes.
        return;
      }
      parts.push(c);
    });
    req.on('end', () => settle({ ok: true, body: parts.length === 1 && parts[0] ? parts[0] : Buffer.concat(parts) }));
    req.on('error', () => settle({ ok: false, reason: 'aborted' }));
    req.on('close', () => settle(req.complete ? { ok: true, body: Buffer.concat(parts) } : { ok: false, reason: 'aborted' }));
  });
}

/** Everything known about one request by the time it ends. */
interface Exchange {
  requestId: string;
  route: Route;
  tenant: Tenant;
  facts: RequestFacts | undefined;
  model: string;
  received: number;
  admitted: number;
  sent: number | undefined;
  upstreamEnded: number | undefined;
  observer: StreamObserver | undefined;
  validator: StreamValidator | undefined;
  status: number | undefined;
  error: string | undefined;
  streamEnd: StreamEnd | undefined;
  trace: ProxyTrace;
  sloClass: string | undefined;
  recorded: boolean;
  admission: Admission | undefined;
  upstream: http.ClientRequest | undefined;
}

export class InlineProxy {
  readonly events: Partial<Record<ProxyEvent, number>> = {};
  private server: Server | undefined;
  private open = 0;
  /** The target's parts, read once: URL getters cost a few µs each, on every request. */
  private readonly to: { protocol: string; hostname: string; port: string; host: string; basePath: string; mod: typeof http | typeof https };
  private readonly agent: http.Agent;
  private readonly gapBounds: number[];

  constructor(
    private readonly opts: ProxyOptions,
    private readonly deps: ProxyDeps,
  ) {
    const t = new URL(opts.target);
    this.to = {
      protocol: t.protocol,
      hostname: t.hostname,
      port: t.port,
      host: t.host,
      basePath: t.pathname.replace(/\/+$/, ''),
      mod: t.protocol === 'https:' ? https : http,
    };
    // noDelay: a chunk of a stream is sent the moment it is written, never held for Nagle.
    this.agent = new this.to.mod.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256, noDelay: true });
    this.gapBounds = deps.metrics.gapBoundsMs();
  }

  get openRequests(): number {
    return this.open;
  }

  private count(e: ProxyEvent): void {
    this.events[e] = (this.events[e] ?? 0) + 1;
  }

  async start(): Promise<void> {
    const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, (req, res) => this.handle(req, res));
    this.server = server;
    const idx = this.opts.listen.lastIndexOf(':');
    const host = this.opts.listen.slice(0, idx).replace(/^\[(.*)\]$/, '$1');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(this.opts.listen.slice(idx + 1)), host || undefined, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // The served models are known before the first request is labelled (or the engine said nothing).
    await this.deps.models.start();
  }

  address(): string {
    const a = this.server?.address();
    if (!a || typeof a === 'string') return String(a);
    return `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  engineAnswering(): boolean {
    return this.deps.models.engineAnswering();
  }

  listening(): boolean {
    return this.server?.listening ?? false;
  }

  async stop(): Promise<void> {
    this.deps.models.stop();
    const server = this.server;
    if (server) {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    }
    this.agent.destroy();
  }

  private refuse(res: ServerResponse, ex: Exchange, status: number, message: string, close = false): void {
    ex.status = status;
    if (res.headersSent) return;
    const body = JSON.stringify({ error: { message, type: 'infertel_proxy', request_id: ex.requestId } });
    const headers: OutgoingHttpHeaders = {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'x-request-id': ex.requestId,
      via: VIA,
    };
    if (close) headers.connection = 'close';
    res.writeHead(status, headers);
    res.end(body);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const received = performance.now();
    const route = routeOf(req.url);
    const tenant = this.deps.tenants.resolve(req.headers);
    const requestId = requestIdOf(req.headers);
    const sloHeader = req.headers['x-slo-class'];
    const sloClass = typeof sloHeader === 'string' && /^[a-z0-9_-]{1,32}$/i.test(sloHeader) ? sloHeader : tenant.sloClass;
    const ex: Exchange = {
      requestId,
      route,
      tenant,
      facts: undefined,
      model: '',
      received,
      admitted: performance.now(),
      sent: undefined,
      upstreamEnded: undefined,
      observer: undefined,
      validator: undefined,
      status: undefined,
      error: undefined,
      streamEnd: undefined,
      trace: this.deps.tracer
        ? new RequestTrace(this.deps.tracer, req.headers, received, {
            'http.request.method': req.method ?? 'GET',
            'http.route': route,
            route,
            tenant: tenant.label,
            worker_id: this.deps.workerId,
            'infertel.request_id': requestId,
          })
        : new UntracedRequest(req.headers),
      sloClass,
      recorded: false,
      admission: undefined,
      upstream: undefined,
    };
    this.open++;
    res.on('close', () => {
      this.open--;
      if (!res.writableFinished) {
        // The client left: cancel the engine's work now, and record what was measured.
        ex.streamEnd ??= 'client_abort';
        ex.error ??= 'client_abort';
        if (ex.status === undefined || !res.headersSent) ex.status = 499;
        this.count('client_abort');
        ex.upstream?.destroy();
      }
      this.finish(ex);
    });
    const limits = this.deps.limits;
    const pending = limits?.limiter.admit(tenant.name, limits.of(tenant.name));
    if (!(pending instanceof Promise)) {
      this.admitted(req, res, ex, pending);
      return;
    }
    pending.then(
      (a) => this.admitted(req, res, ex, a),
      () => this.admitted(req, res, ex, undefined),
    );
  }

  /** After the rate limiter: refuse (429, or 503 when its backend is down and it fails closed), or read and forward. */
  private admitted(req: IncomingMessage, res: ServerResponse, ex: Exchange, a: Admission | undefined): void {
    ex.admitted = performance.now();
    if (a) {
      ex.admission = a;
      if (a.refusedBy) this.deps.metrics.recordRateLimited(ex.tenant.label, a.refusedBy);
      this.deps.metrics.recordRemaining(ex.tenant.label, remainingRatios(a));
    }
    if (ex.recorded || res.destroyed) {
      // The client left while the limiter answered.
      a?.release(undefined);
      return;
    }
    if (a?.unavailable) {
      ex.error = 'rate_limiter_unavailable';
      this.refuse(res, ex, 503, 'rate limiter unavailable');
      return;
    }
    if (a && !a.allowed) {
      ex.error = `rate_limited: ${a.refusedBy}`;
      this.count('rate_limited');
      this.rateLimited(res, ex, a);
      return;
    }
    if (this.open > this.opts.maxConcurrent) {
      this.count('overloaded');
      ex.error = 'proxy overloaded';
      this.refuse(res, ex, 503, 'proxy overloaded');
      return;
    }
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > this.opts.maxBodyBytes) {
      this.tooLarge(req, res, ex);
      return;
    }
    void readBody(req, this.opts.maxBodyBytes).then((read) => {
      if (!read.ok) {
        if (read.reason === 'too_large') this.tooLarge(req, res, ex);
        return;
      }
      const facts = inspectBody(ex.route, read.body, req.method);
      ex.facts = facts;
      if (facts.malformed) this.count('malformed_body');
      if (facts.usageInjected) this.count('usage_injected');
      ex.model = this.deps.models.resolve(facts.requestedModel);
      if (res.destroyed) return;
      ex.upstream = this.forward(req, res, ex, facts);
    });
  }

  /** 429 in OpenAI's shape, with Retry-After and the x-ratelimit-* headers. */
  private rateLimited(res: ServerResponse, ex: Exchange, a: Admission): void {
    ex.status = 429;
    ex.model = this.deps.models.resolve(undefined);
    const body = JSON.stringify({
      error: {
        message: `Rate limit reached for ${a.refusedBy} (tenant ${ex.tenant.label}); retry after ${a.retryAfterSeconds}s.`,
        type: a.refusedBy,
        param: null,
        code: 'rate_limit_exceeded',
      },
    });
    res.writeHead(429, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'retry-after': String(a.retryAfterSeconds),
      'x-request-id': ex.requestId,
      via: VIA,
      ...rateLimitHeaders(a),
    });
    res.end(body);
  }

  private tooLarge(req: IncomingMessage, res: ServerResponse, ex: Exchange): void {
    this.count('body_too_large');
    ex.error = 'request body too large';
    ex.model = this.deps.models.resolve(undefined);
    req.resume();
    this.refuse(res, ex, 413, `request body over ${this.opts.maxBodyBytes} bytes`, true);
  }

  private forward(req: IncomingMessage, res: ServerResponse, ex: Exchange, facts: RequestFacts): http.ClientRequest {
    const headers = endToEnd(req.headers, ['host', 'content-length', 'x-request-id', 'traceparent', 'tracestate']);
    const to = this.to;
    headers.host = to.host;
    headers['x-request-id'] = ex.requestId;
    if (facts.body.length || req.headers['content-length'] !== undefined) headers['content-length'] = facts.body.length;
    ex.sent = performance.now();
    Object.assign(headers, ex.trace.startUpstream(ex.sent, { 'server.address': to.hostname, 'url.path': ex.route }));
    const up = to.mod.request({
      protocol: to.protocol,
      hostname: to.hostname,
      port: to.port,
      method: req.method,
      path: to.basePath + (req.url ?? '/'),
      headers,
      agent: this.agent,
    });
    const headerTimer = setTimeout(() => {
      ex.streamEnd = 'upstream_timeout';
      up.destroy(new Error('upstream_timeout'));
    }, this.opts.upstreamTimeoutMs);
    up.on('response', (ures) => {
      clearTimeout(headerTimer);
      this.deps.models.noteAnswer();
      this.relay(ures, res, ex, facts);
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(headerTimer);
      ex.upstreamEnded ??= performance.now();
      if (!ex.error?.startsWith('client_abort')) this.deps.models.noteFailure();
      if (res.headersSent || res.destroyed) return;
      if (ex.streamEnd === 'upstream_timeout') {
        this.count('upstream_timeout');
        ex.error = 'upstream_timeout';
        this.refuse(res, ex, 504, 'the engine did not answer in time');
      } else {
        this.count('upstream_refused');
        ex.error = `upstream_unavailable: ${err.code ?? 'error'}`;
        this.refuse(res, ex, 502, 'the engine is unavailable');
      }
    });
    up.end(facts.body);
    return up;
  }

  private relay(ures: IncomingMessage, res: ServerResponse, ex: Exchange, facts: RequestFacts): void {
    const status = ures.statusCode ?? 502;
    // An error body is no first token: only 2xx responses are read for content and usage.
    const kind = status >= 200 && status < 300 ? bodyKind(ex.route, ures.headers['content-type']) : 'opaque';
    const strip = facts.usageInjected && kind === 'sse';
    ex.validator = kind === 'sse' ? new StreamValidator(ex.route, this.opts.stallAfterMs) : undefined;
    const obs = new StreamObserver(ex.route, kind, strip, this.gapBounds, this.opts.traceTokenEvery, ex.validator);
    ex.observer = obs;
    ex.status = status;
    const headers = endToEnd(ures.headers, strip ? ['content-length'] : []);
    headers['x-request-id'] = ex.requestId;
    if (ex.admission) Object.assign(headers, rateLimitHeaders(ex.admission));
    if (res.destroyed) {
      ures.destroy();
      return;
    }
    res.writeHead(ex.status, ures.statusMessage, headers);
    // The headers go out with the first chunk when the engine sent both at once (one write
    // instead of two); when it sent the headers alone, they go out alone, right after this read.
    let relayed = false;
    queueMicrotask(() => {
      if (!relayed && !res.destroyed && !res.writableEnded) res.flushHeaders();
    });
    ures.on('data', (chunk: Buffer) => {
      const out = obs.push(chunk, performance.now());
      if (!out) return;
      relayed = true;
      if (!res.write(out)) {
        ures.pause();
        res.once('drain', () => ures.resume());
      }
    });
    ures.on('end', () => {
      ex.upstreamEnded = performance.now();
      const tail = obs.finish();
      res.end(tail && !strip ? tail : undefined);
    });
    ures.on('close', () => {
      if (ures.complete || res.writableEnded) return;
      // The engine went away mid-response: the client gets a clean end of what it had.
      ex.upstreamEnded = performance.now();
      if (!res.destroyed) {
        ex.streamEnd = 'engine_reset';
        ex.error = 'engine_reset';
        this.count('engine_reset');
        obs.finish();
        res.end();
      }
    });
    ures.on('error', () => {
      // Handled by 'close' (an aborted response always closes).
    });
  }

  /** Counts a stream's violations by kind and logs them once for the request; undefined when there are none. */
  private validated(ex: Exchange, validator: StreamValidator, ended: number, model: string): string[] | undefined {
    validator.end(ended);
    if (!validator.found.size) return undefined;
    const kinds = [...validator.found];
    this.deps.metrics.recordViolations(model, kinds);
    this.deps.log?.warn(
      { event: 'stream_violation', request_id: ex.requestId, model, route: ex.route, tenant: ex.tenant.label, kinds },
      'stream broke the SSE contract',
    );
    return kinds;
  }

  /** Records a finished request once: metrics (always), request log (sampled), trace. */
  private finish(ex: Exchange): void {
    if (ex.recorded) return;
    ex.recorded = true;
    const ended = performance.now();
    const obs = ex.observer;
    const e2eMs = ended - ex.received;
    const ttftMs = obs?.firstContentAt !== undefined ? obs.firstContentAt - ex.received : undefined;
    const completion = obs?.completionTokens();
    const prompt = obs?.usage?.promptTokens;
    const status = ex.status;
    const ok2xx = status !== undefined && status >= 200 && status < 300;
    const usageExpected = ex.route !== 'other' && ok2xx;
    const usageUnknown = usageExpected && (ex.route === '/v1/embeddings' ? prompt === undefined : completion === undefined);
    const model = ex.model || this.deps.models.resolve(undefined);
    const traceId = ex.trace.sampledTraceId();
    const violations = ex.validator ? this.validated(ex, ex.validator, ended, model) : undefined;
    ex.admission?.release(prompt !== undefined || completion !== undefined ? (prompt ?? 0) + (completion ?? 0) : undefined);
    this.deps.metrics.record(
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
    this.deps.onRecord();
    const isError = !ok2xx || ex.error !== undefined;
    const tpotMs = completion !== undefined && completion > 1 && ttftMs !== undefined ? (e2eMs - ttftMs) / (completion - 1) : undefined;
    const error = ex.error ?? (ok2xx ? undefined : `upstream status ${status}`);
    const round = (v: number | undefined) => (v === undefined ? null : Math.round(v * 1000) / 1000);
    const facts = ex.facts;
    if (this.deps.requestLog.sampled(isError)) {
      const promptHash = this.deps.requestLog.hash(facts?.promptMaterial);
      this.deps.requestLog.write({
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
        gpu: gpuField(this.deps.gpu()),
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
      markEvery: this.opts.traceTokenEvery,
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
