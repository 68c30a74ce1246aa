// The inline proxy on the native data path (native/src/edge.rs): the addon's loop reads and writes
// every byte on its own thread, and this side is told, in batches, of each request and of what the
// engine answered and when (CLOCK_MONOTONIC times taken in the loop). From those it measures and
// records each request exactly as the Node proxy does (exchange.ts), so the metrics, request log
// and trace do not depend on which path carried the bytes. A 2xx event stream of a measured route
// is read in the loop (native/src/sse.rs, stream.ts's rules) and told once, with its end; other
// bodies come as the engine sent them and are read here.
//
// Without rate limits or tracing nothing needs deciding per request: the loop sends each request at
// once (`tell`), with its request id and include_usage done there, and JS learns of it after. With
// either, each request waits for JS (`wait`): the limiter answers, and the trace context the engine
// joins is made here.

import type { IncomingHttpHeaders } from 'node:http';
import { type EdgeOutcome, type EdgeRequest, type EdgeTaps, type GpuAddon, type IdledThreads, type TapVisitor, walkTaps } from '../gpu/addon.js';
import {
  askLimiter,
  type Exchange,
  ExchangeRecorder,
  guarded,
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
} from './exchange.js';
import { type Admission, rateLimitHeaders } from './limits.js';
import { inspectBody, routeOf } from './routes.js';
import { bodyKind, LoopReading, StreamObserver } from './stream.js';
import { StreamValidator } from './validator.js';

/** Why the native data path cannot carry a target, or undefined when it can. */
export function nativeUnfit(target: string): string | undefined {
  const t = new URL(target);
  if (t.protocol !== 'http:') return 'the target is not plain http (the loop speaks plain TCP to the engine)';
  if (t.pathname.replace(/\/+$/, '') !== '') return 'the target has a base path (the loop forwards the request target as it came)';
  return undefined;
}

interface NativeExchange extends Exchange {
  /** The loop asked the engine for a usage chunk the client did not ask for (and takes it out). */
  stripUsage: boolean;
  /** A body read here, from the data the loop hands over (one the loop reads itself comes with its end). */
  observed: StreamObserver | undefined;
}

/** Reason phrases of the answers this side writes itself. */
const REASON: Record<number, string> = { 429: 'Too Many Requests', 503: 'Service Unavailable' };

/** An HTTP/1.1 response as bytes, for edgeAnswer. */
function wire(a: OwnAnswer): string {
  let head = `HTTP/1.1 ${a.status} ${REASON[a.status] ?? 'Error'}\r\n`;
  for (const k in a.headers) head += `${k}: ${a.headers[k]}\r\n`;
  return `${head}\r\n${a.body}`;
}

/** Header fields for edgeForward: `name: value` lines (the loop refuses any that would smuggle another). */
function fieldLines(fields: Record<string, string>): string {
  let out = '';
  for (const k in fields) out += `${out ? '\r\n' : ''}${k}: ${fields[k]}`;
  return out;
}

/** The loop's [name, value, ...] as Node's IncomingHttpHeaders: names lower-cased, repeats joined. */
function headersOf(flat: string[]): IncomingHttpHeaders {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const k = (flat[i] as string).toLowerCase();
    const v = flat[i + 1] as string;
    headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
  }
  return headers;
}

/** How an exchange the loop ended without a complete answer is recorded. */
const FAILED: Record<string, { status: number; error: string; event?: ProxyEvent }> = {
  upstream_timeout: { status: 504, error: 'upstream_timeout', event: 'upstream_timeout' },
  upstream_refused: { status: 502, error: 'upstream_unavailable: ECONNREFUSED', event: 'upstream_refused' },
  upstream_reset: { status: 502, error: 'upstream_unavailable: ECONNRESET', event: 'upstream_refused' },
  upstream_bad_answer: { status: 502, error: 'upstream_unavailable: bad_response', event: 'upstream_refused' },
  body_too_large: { status: 413, error: 'request body too large', event: 'body_too_large' },
  overloaded: { status: 503, error: 'proxy overloaded', event: 'overloaded' },
  policy_timeout: { status: 503, error: 'policy_timeout', event: 'policy_timeout' },
};

export class NativeProxy implements RequestProxy {
  readonly dataPath = 'native' as const;
  readonly events: Partial<Record<ProxyEvent, number>> = {};
  private edge: { id: number; address: string } | undefined;
  private readonly open = new Map<number, NativeExchange>();
  private readonly recorder: ExchangeRecorder;
  private readonly gapBounds: number[];
  /** CLOCK_MONOTONIC ms minus performance.now(): the loop's times on this side's clock (both read the same clock). */
  private readonly clockOffset: number;
  /** Requests wait for this side (rate limits or tracing): it is on the request path. */
  readonly waits: boolean;
  /** The target, parsed once (URL getters cost a few µs each, and its host name is read on every request). */
  private readonly target: URL;
  private readonly targetHost: string;
  /** Ends the loop told of, as its endsTold counts them. */
  private endsSeen = 0;
  /** Scrapes waiting in settled() for endsSeen to reach the count the loop had told when they asked. */
  private readonly settleWaiters = new Set<{ told: number; wake: () => void }>();

  constructor(
    private readonly opts: ProxyOptions,
    private readonly deps: ProxyDeps,
    private readonly addon: GpuAddon,
  ) {
    this.recorder = new ExchangeRecorder(deps, opts.traceTokenEvery, this.events);
    this.gapBounds = deps.metrics.gapBoundsMs();
    this.clockOffset = Number(process.hrtime.bigint()) / 1e6 - performance.now();
    this.waits = deps.limits !== undefined || deps.tracer !== undefined;
    this.target = new URL(opts.target);
    this.targetHost = this.target.hostname;
  }

  get openRequests(): number {
    return this.open.size;
  }

  private count(e: ProxyEvent): void {
    this.events[e] = (this.events[e] ?? 0) + 1;
  }

  async start(): Promise<void> {
    const target = `${this.targetHost}:${this.target.port || '80'}`;
    // The loop reads 2xx event streams itself: JS is told once per request, not per read. Marks are for span events only.
    const markEvery = this.deps.tracer ? this.opts.traceTokenEvery : 0;
    const read = `read:${this.opts.stallAfterMs}:${markEvery}:${this.gapBounds.join(',')}`;
    // Told after, JS is handed of each body only the members it reads, and the prompt only when it hashes prompts.
    const mode = this.waits ? 'wait' : this.deps.requestLog.hashesPrompts ? 'tell:prompt' : 'tell';
    const rest = [target, this.opts.maxBodyBytes, this.opts.upstreamTimeoutMs, mode, this.opts.maxConcurrent, read].join(' ');
    // An empty host means every address, as Node's listen() takes it: IPv6 and IPv4 where the machine has IPv6.
    const listens = this.opts.listen.startsWith(':') ? [`[::]${this.opts.listen}`, `0.0.0.0${this.opts.listen}`] : [this.opts.listen];
    for (const listen of listens) {
      try {
        this.edge = this.addon.edgeStart(`${listen} ${rest}`, (requests, seen) => this.batch(requests, seen));
        break;
      } catch {
        // The loop says only that it did not start; binding is what fails once the spec is valid.
      }
    }
    if (!this.edge) throw new Error('the address is in use or not on this machine');
    await startedListening(this.deps, this.address(), this.dataPath);
  }

  /** Every thread of the process but the loop under SCHED_IDLE (proxy.agentThreads: idle). */
  idleOtherThreads(): IdledThreads {
    // An addon built before this existed still carries the bytes; the agent then says why nothing was idled.
    if (!this.addon.idleOtherThreads) return { idled: 0, kept: 0, failed: 1, error: 'the addon predates idleOtherThreads (rebuild it)' };
    return this.addon.idleOtherThreads();
  }

  address(): string {
    return this.edge?.address ?? 'null';
  }

  engineAnswering(): boolean {
    return this.deps.models.engineAnswering();
  }

  listening(): boolean {
    return this.edge !== undefined;
  }

  /**
   * Waits until JS has the record of every exchange the loop had ended when this was called. Ends
   * told after the call are not waited for: under steady traffic there always are some, and a
   * scrape would wait out its whole timeout each time.
   */
  settled(timeoutMs = 2000): Promise<void> {
    if (!this.edge) return Promise.resolve();
    const told = this.addon.edgeStats(this.edge.id)?.endsTold ?? 0;
    if (this.endsSeen >= told) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = {
        told,
        wake: () => {
          clearTimeout(timer);
          this.settleWaiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.wake, timeoutMs);
      this.settleWaiters.add(waiter);
    });
  }

  /** Wakes the scrapes whose ends have all been recorded; with the loop stopped, every one. */
  private wakeSettled(): void {
    for (const waiter of this.settleWaiters) if (!this.edge || this.endsSeen >= waiter.told) waiter.wake();
  }

  async stop(): Promise<void> {
    this.deps.models.stop();
    if (this.edge) this.addon.edgeStop(this.edge.id);
    this.edge = undefined;
    this.open.clear();
    this.wakeSettled();
  }

  /**
   * What the loop saw since the last batch, in the order it saw it: each request is taken up before
   * anything seen after its head, and before anything of its own. So the end of a request that the
   * loop saw before the next one arrived frees its tenant's concurrency slot before that one is
   * admitted, as on the Node path. Taken up after, a client that keeps to its cap would be refused
   * whenever its next request shared a batch with the end of its last.
   *
   * An error in one item is counted and logged, and the rest go on: an exception thrown out of here
   * would reach Node's uncaughtException and end the agent.
   */
  private batch(requests: EdgeRequest[], seen: EdgeTaps): void {
    let next = 0;
    // Tokens rise in the order the loop hands requests over, so one whose token is at most a tap's came before it.
    const arriveBefore = (token: number, at: number) => {
      for (let r = requests[next]; r !== undefined && (r.at <= at || r.token <= token); r = requests[++next]) {
        const arriving = r;
        guarded(this.events, this.deps.log, () => this.arrived(arriving));
      }
    };
    walkTaps(seen, {
      head: (token, at, status, headers, read) => {
        arriveBefore(token, at);
        this.visitor.head(token, at, status, headers, read);
      },
      data: (token, at, data) => {
        arriveBefore(token, at);
        this.visitor.data(token, at, data);
      },
      end: (token, at, outcome, read) => {
        arriveBefore(token, at);
        this.visitor.end(token, at, outcome, read);
      },
    });
    arriveBefore(Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY);
    if (this.settleWaiters.size > 0) this.wakeSettled();
  }

  /** What each thing the loop saw does, on this side's clock; each is guarded alone. */
  private readonly visitor: TapVisitor = {
    head: (token, _at, status, headers, read) => guarded(this.events, this.deps.log, () => this.sawHead(token, status, headers, read)),
    data: (token, at, data) => guarded(this.events, this.deps.log, () => this.sawData(token, at - this.clockOffset, data)),
    end: (token, at, outcome, read) => guarded(this.events, this.deps.log, () => this.sawEnd(token, at - this.clockOffset, outcome, read)),
  };

  private arrived(r: EdgeRequest): void {
    const headers = headersOf(r.headers);
    const route = routeOf(r.target);
    const received = r.at - this.clockOffset;
    const base = openExchange(this.deps, headers, r.method, route, received, r.requestId ?? undefined);
    const ex: NativeExchange = Object.assign(base, { stripUsage: r.usageInjected, observed: undefined });
    this.open.set(r.token, ex);
    if (r.answered) {
      // Refused by the loop (413, 503), its end follows in this batch: no body was read.
      ex.model = this.deps.models.resolve(undefined);
      return;
    }
    if (!r.waits) {
      // Sent already: learn what it asked, from the members of the body the loop handed over. The loop's own reading of the body decided include_usage.
      ex.sent = received;
      this.inspect(ex, r, false);
      if (ex.stripUsage) this.count('usage_injected');
      return;
    }
    const pending = askLimiter(this.deps, ex);
    if (pending instanceof Promise) void pending.then((a) => guarded(this.events, this.deps.log, () => this.decide(r, ex, a)));
    else this.decide(r, ex, pending);
  }

  /** `forward`: the body still goes to the engine from here (the request waited), so include_usage is added here. */
  private inspect(ex: NativeExchange, r: EdgeRequest, forward: boolean): Buffer {
    const { facts, body } = inspectBody(ex.route, r.body, r.method, forward);
    noteFacts(this.deps, ex, facts);
    if (facts.malformed) this.count('malformed_body');
    ex.model = this.deps.models.resolve(facts.requestedModel);
    return body;
  }

  /** After the rate limiter, for a request that waits: answer it here (429, 503) or send it on. */
  private decide(r: EdgeRequest, ex: NativeExchange, a: Admission | undefined): void {
    noteAdmission(this.deps, ex, a, performance.now());
    const edge = this.edge;
    if (ex.recorded || !edge) {
      // The client left while the limiter answered.
      a?.release(undefined);
      return;
    }
    if (a?.unavailable) {
      ex.error = 'rate_limiter_unavailable';
      ex.model = this.deps.models.resolve(undefined);
      this.answer(r.token, ex, refusal(ex, 503, 'rate limiter unavailable'));
      return;
    }
    if (a && !a.allowed) {
      ex.error = `rate_limited: ${a.refusedBy}`;
      this.count('rate_limited');
      ex.model = this.deps.models.resolve(undefined);
      this.answer(r.token, ex, rateLimited(ex, a));
      return;
    }
    const body = this.inspect(ex, r, true);
    ex.stripUsage = ex.facts?.usageInjected ?? false;
    if (ex.stripUsage) this.count('usage_injected');
    ex.sent = performance.now();
    const upstream = { 'x-request-id': ex.requestId, ...ex.trace.startUpstream(ex.sent, { 'server.address': this.targetHost, 'url.path': ex.route }) };
    const client = { 'x-request-id': ex.requestId, ...(a ? rateLimitHeaders(a) : {}) };
    this.addon.edgeForward(edge.id, r.token, fieldLines(upstream), fieldLines(client), body === r.body ? undefined : body, ex.stripUsage);
  }

  /** Answers a waiting request here; the loop tells no end of it, so it is recorded now. */
  private answer(token: number, ex: NativeExchange, a: OwnAnswer): void {
    if (this.edge) this.addon.edgeAnswer(this.edge.id, token, wire(a));
    this.open.delete(token);
    this.recorder.finish(ex, performance.now());
  }

  /** The engine's head: what its body is, and so how it is read (`read`: the loop reads it). */
  private sawHead(token: number, status: number, flat: string[], read: boolean): void {
    const ex = this.open.get(token);
    if (!ex) return;
    ex.status = status;
    this.deps.models.noteAnswer();
    if (read) return;
    let contentType: string | undefined;
    for (let i = 0; i + 1 < flat.length; i += 2) if ((flat[i] as string).toLowerCase() === 'content-type') contentType = flat[i + 1];
    // An error body is no first token: only 2xx answers are read for content and usage.
    const kind = status >= 200 && status < 300 ? bodyKind(ex.route, contentType) : 'opaque';
    const validator = kind === 'sse' ? new StreamValidator(ex.route, this.opts.stallAfterMs) : undefined;
    ex.validator = validator;
    ex.observed = new StreamObserver(ex.route, kind, ex.stripUsage && kind === 'sse', this.gapBounds, this.opts.traceTokenEvery, validator);
    ex.observer = ex.observed;
  }

  /** Body bytes as the engine sent them, at `at` (this side's clock); the data is a view of the batch's buffer. */
  private sawData(token: number, at: number, data: Buffer): void {
    this.open.get(token)?.observed?.push(data, at);
  }

  private sawEnd(token: number, at: number, outcome: EdgeOutcome, read: Float64Array | null): void {
    this.endsSeen++;
    const ex = this.open.get(token);
    if (!ex) return;
    this.open.delete(token);
    if (read) {
      const reading = new LoopReading(ex.route, read, this.gapBounds.length + 1, this.clockOffset);
      ex.observer = reading;
      ex.validator = reading;
    }
    this.ended(ex, outcome, at);
    this.recorder.finish(ex, at);
  }

  private ended(ex: NativeExchange, outcome: string, at: number): void {
    if (outcome === 'complete') {
      ex.upstreamEnded = at;
      ex.observed?.finish();
      return;
    }
    if (outcome === 'engine_reset') {
      ex.upstreamEnded = at;
      ex.streamEnd = 'engine_reset';
      ex.error = 'engine_reset';
      this.count('engine_reset');
      ex.observed?.finish();
      return;
    }
    if (outcome === 'client_abort') {
      ex.streamEnd ??= 'client_abort';
      ex.error ??= 'client_abort';
      if (ex.status === undefined) ex.status = 499;
      this.count('client_abort');
      return;
    }
    const failed = FAILED[outcome];
    if (!failed) return;
    ex.status = failed.status;
    ex.error = failed.error;
    if (failed.event) this.count(failed.event);
    if (outcome === 'upstream_timeout') ex.streamEnd = 'upstream_timeout';
    if (outcome.startsWith('upstream_')) {
      ex.upstreamEnded = at;
      this.deps.models.noteFailure();
    }
    if (!ex.model) ex.model = this.deps.models.resolve(undefined);
  }
}
