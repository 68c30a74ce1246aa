// One trace per proxied request: a SERVER root `inference.request` and children built from the
// measured timestamps after the fact (router.admission, upstream.request, prefill, decode.loop,
// stream.flush), never a span per token. With tracing off no span is made at all, but an incoming
// traceparent still reaches the engine.

import {
  defaultTextMapGetter,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { IncomingHttpHeaders } from 'node:http';

const propagator = new W3CTraceContextPropagator();

/** Epoch milliseconds (with fractions) of a performance.now() reading. */
export function epochMs(perfNow: number): number {
  return performance.timeOrigin + perfNow;
}

/** The request's timeline, in performance.now() milliseconds. */
export interface Timeline {
  received: number;
  admitted: number;
  sent: number | undefined;
  firstContent: number | undefined;
  lastContent: number | undefined;
  upstreamEnded: number | undefined;
  ended: number;
  /** Every N-th content chunk, for decode.loop events. */
  marks: readonly number[];
  markEvery: number;
}

/** §18.5 context_bucket: the prompt length's power-of-two range. */
export function contextBucket(promptTokens: number | undefined): string {
  if (promptTokens === undefined) return 'unknown';
  for (const b of [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]) if (promptTokens <= b) return `<=${b}`;
  return '>131072';
}

/** What the proxy asks of a request's trace, traced or not. */
export interface ProxyTrace {
  /** False when nothing is recorded: the caller need not build the attributes of finish(). */
  readonly traced: boolean;
  sampledTraceId(): string | undefined;
  startUpstream(sent: number, attributes: Attributes): Record<string, string>;
  finish(t: Timeline, attributes: Attributes, error: string | undefined): void;
}

/**
 * Tracing off: no spans, and the engine gets the incoming trace context as it came (a valid
 * traceparent re-serialised, its tracestate with it), so an engine that traces still joins the
 * caller's trace. A request without a traceparent costs nothing here.
 */
export class UntracedRequest implements ProxyTrace {
  readonly traced = false;
  constructor(private readonly headers: IncomingHttpHeaders) {}

  sampledTraceId(): undefined {
    return undefined;
  }

  startUpstream(): Record<string, string> {
    const carrier: Record<string, string> = {};
    if (this.headers.traceparent === undefined) return carrier;
    propagator.inject(propagator.extract(ROOT_CONTEXT, this.headers, defaultTextMapGetter), carrier, defaultTextMapSetter);
    return carrier;
  }

  finish(): void {}
}

export class RequestTrace implements ProxyTrace {
  readonly traced = true;
  readonly root: Span;
  private readonly rootContext: Context;
  private upstream: Span | undefined;

  constructor(
    private readonly tracer: Tracer,
    headers: IncomingHttpHeaders,
    received: number,
    attributes: Attributes,
  ) {
    const parent = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
    this.root = tracer.startSpan('inference.request', { kind: SpanKind.SERVER, startTime: epochMs(received), attributes }, parent);
    this.rootContext = trace.setSpan(parent, this.root);
  }

  /** The trace id when this request is sampled and recorded (an exemplar may point to it). */
  sampledTraceId(): string | undefined {
    const sc = this.root.spanContext();
    return this.root.isRecording() && sc.traceFlags & TraceFlags.SAMPLED ? sc.traceId : undefined;
  }

  /**
   * Starts upstream.request and returns the traceparent (and tracestate) to send to the engine:
   * the upstream span's when recording, else the incoming one unchanged.
   */
  startUpstream(sent: number, attributes: Attributes): Record<string, string> {
    this.upstream = this.tracer.startSpan('upstream.request', { kind: SpanKind.CLIENT, startTime: epochMs(sent), attributes }, this.rootContext);
    const carrier: Record<string, string> = {};
    propagator.inject(trace.setSpan(this.rootContext, this.upstream), carrier, defaultTextMapSetter);
    return carrier;
  }

  /** Ends every span with the measured times; `error` sets the error status (never a message with content). */
  finish(t: Timeline, attributes: Attributes, error: string | undefined): void {
    const child = (name: string, start: number, end: number, extra?: (s: Span) => void) => {
      const s = this.tracer.startSpan(name, { startTime: epochMs(start) }, this.rootContext);
      extra?.(s);
      s.end(epochMs(Math.max(start, end)));
    };
    child('router.admission', t.received, t.admitted);
    if (t.sent !== undefined && t.firstContent !== undefined) child('prefill', t.sent, t.firstContent);
    if (t.firstContent !== undefined && t.lastContent !== undefined)
      child('decode.loop', t.firstContent, t.lastContent, (s) => {
        t.marks.forEach((m, i) => {
          s.addEvent('tokens_emitted', { tokens_emitted: t.markEvery, chunks_total: (i + 1) * t.markEvery }, epochMs(m));
        });
      });
    if (t.lastContent !== undefined) child('stream.flush', t.lastContent, t.ended);
    if (this.upstream) {
      if (error) this.upstream.setStatus({ code: SpanStatusCode.ERROR, message: error });
      this.upstream.end(epochMs(t.upstreamEnded ?? t.ended));
    }
    this.root.setAttributes(attributes);
    if (error) this.root.setStatus({ code: SpanStatusCode.ERROR, message: error });
    this.root.end(epochMs(t.ended));
  }
}
