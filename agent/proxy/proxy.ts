// The inline proxy (request-level mode): forwards every request to the engine unchanged except
// for hop-by-hop headers, a request id, trace context and, on streams that did not ask for one,
// a usage chunk it takes back out. It measures each request at the edge and records it once in
// the metrics, the request log and a trace. Streams are never buffered beyond one SSE event.

import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import https from 'node:https';
import {
  type Exchange,
  ExchangeRecorder,
  guarded,
  askLimiter,
  noteAdmission,
  noteFacts,
  type OwnAnswer,
  openExchange,
  type ProxyDeps,
  type ProxyEvent,
  type ProxyOptions,
  rateLimited,
  refusal,
  type RequestProxy,
  startedListening,
  VIA,
} from './exchange.js';
import { boundAddress } from '../net/bound.js';
import { rateLimitHeaders, type Admission } from './limits.js';
import { inspectBody, routeOf, type RequestFacts } from './routes.js';
import { bodyKind, StreamObserver } from './stream.js';
import { StreamValidator } from './validator.js';

/**
 * Connections the kernel queues before the proxy accepts them, as the native loop asks
 * (native/src/edge.rs): Node's default of 511 has a burst of more connects than that, arriving
 * while the event loop is busy, dropped and retried by the clients' SYN timer a second later. The
 * kernel caps it at somaxconn.
 */
const LISTEN_BACKLOG = 4096;

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

/** An exchange of the Node data path: with its request to the engine, to cancel when the client leaves. */
interface NodeExchange extends Exchange {
  upstream?: http.ClientRequest;
}

export class InlineProxy implements RequestProxy {
  readonly dataPath = 'node' as const;
  readonly events: Partial<Record<ProxyEvent, number>> = {};
  private server: Server | undefined;
  private open = 0;
  /** The target's parts, read once: URL getters cost a few µs each, on every request. */
  private readonly to: { protocol: string; hostname: string; port: string; host: string; basePath: string; mod: typeof http | typeof https };
  private readonly agent: http.Agent;
  private readonly gapBounds: number[];
  private readonly recorder: ExchangeRecorder;

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
    this.recorder = new ExchangeRecorder(deps, opts.traceTokenEvery, this.events);
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
      server.listen({ port: Number(this.opts.listen.slice(idx + 1)), host: host || undefined, backlog: LISTEN_BACKLOG }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await startedListening(this.deps, this.address(), this.dataPath);
  }

  address(): string {
    return boundAddress(this.server);
  }

  engineAnswering(): boolean {
    return this.deps.models.engineAnswering();
  }

  listening(): boolean {
    return this.server?.listening ?? false;
  }

  /** Each request is recorded when its response closes, before the client can act on it. */
  settled(): Promise<void> {
    return Promise.resolve();
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

  private answer(res: ServerResponse, a: OwnAnswer, close = false): void {
    if (res.headersSent) return;
    res.writeHead(a.status, close ? { ...a.headers, connection: 'close' } : a.headers);
    res.end(a.body);
  }

  private refuse(res: ServerResponse, ex: Exchange, status: number, message: string, close = false): void {
    this.answer(res, refusal(ex, status, message), close);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const ex: NodeExchange = openExchange(this.deps, req.headers, req.method ?? 'GET', routeOf(req.url), performance.now());
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
      guarded(this.events, this.deps.log, () => this.recorder.finish(ex, performance.now()));
    });
    const pending = askLimiter(this.deps, ex);
    if (!(pending instanceof Promise)) {
      this.admitted(req, res, ex, pending);
      return;
    }
    void pending.then((a) => this.admitted(req, res, ex, a));
  }

  /** After the rate limiter: refuse (429, or 503 when its backend is down and it fails closed), or read and forward. */
  private admitted(req: IncomingMessage, res: ServerResponse, ex: NodeExchange, a: Admission | undefined): void {
    noteAdmission(this.deps, ex, a, performance.now());
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
      ex.model = this.deps.models.resolve(undefined);
      this.answer(res, rateLimited(ex, a));
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
      const { facts, body } = inspectBody(ex.route, read.body, req.method);
      noteFacts(this.deps, ex, facts);
      if (facts.malformed) this.count('malformed_body');
      if (facts.usageInjected) this.count('usage_injected');
      ex.model = this.deps.models.resolve(facts.requestedModel);
      if (res.destroyed) return;
      ex.upstream = this.forward(req, res, ex, facts, body);
    });
  }

  private tooLarge(req: IncomingMessage, res: ServerResponse, ex: NodeExchange): void {
    this.count('body_too_large');
    ex.error = 'request body too large';
    ex.model = this.deps.models.resolve(undefined);
    req.resume();
    this.refuse(res, ex, 413, `request body over ${this.opts.maxBodyBytes} bytes`, true);
  }

  private forward(req: IncomingMessage, res: ServerResponse, ex: NodeExchange, facts: RequestFacts, body: Buffer): http.ClientRequest {
    const headers = endToEnd(req.headers, ['host', 'content-length', 'x-request-id', 'traceparent', 'tracestate']);
    const to = this.to;
    headers.host = to.host;
    headers['x-request-id'] = ex.requestId;
    if (body.length || req.headers['content-length'] !== undefined) headers['content-length'] = body.length;
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
    up.end(body);
    return up;
  }

  private relay(ures: IncomingMessage, res: ServerResponse, ex: Exchange, facts: RequestFacts): void {
    const status = ures.statusCode ?? 502;
    // An error body is no first token: only 2xx responses are read for content and usage.
    const kind = status >= 200 && status < 300 ? bodyKind(ex.route, ures.headers['content-type']) : 'opaque';
    const strip = facts.usageInjected && kind === 'sse';
    const validator = kind === 'sse' ? new StreamValidator(ex.route, this.opts.stallAfterMs) : undefined;
    ex.validator = validator;
    const obs = new StreamObserver(ex.route, kind, strip, this.gapBounds, this.opts.traceTokenEvery, validator);
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
}
