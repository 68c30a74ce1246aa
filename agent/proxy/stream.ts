// What the proxy reads from a response on its way to the client: when the first content
// arrived, the gaps between content chunks, and the token usage. SSE events are forwarded as soon
// as each is complete (only a partial event is held back); the one event the proxy itself asked
// for (the usage chunk of an injected include_usage) is taken out.

import { bucketIndex } from './metrics.js';
import type { Route } from './routes.js';
import { type StreamFindings, type StreamValidator, VIOLATION_KINDS, type ViolationKind } from './validator.js';

export interface Usage {
  promptTokens: number | undefined;
  completionTokens: number | undefined;
}

/** The largest non-streamed body kept (as a copy) to read its usage; larger ones are forwarded unread. */
export const MAX_JSON_COPY = 4 * 1024 * 1024;
/** A partial SSE event held back longer than this is forwarded as it is (no event is that large). */
const MAX_PARTIAL_EVENT = 1024 * 1024;

const DOUBLE_LF = Buffer.from('\n\n');
const DOUBLE_CRLF = Buffer.from('\r\n\r\n');

/** What onEvent found, as bits: content, and the usage chunk the proxy asked for (to strip). */
const CONTENT = 1;
const STRIP = 2;

/** End of the first complete event in buf (index after its blank line), or -1. */
function eventEnd(buf: Buffer): number {
  const a = buf.indexOf(DOUBLE_LF);
  const b = buf.indexOf(DOUBLE_CRLF);
  if (a < 0) return b < 0 ? -1 : b + 4;
  if (b < 0 || a < b) return a + 2;
  return b + 4;
}

/** The data of an SSE event (its `data:` lines joined), or undefined. */
export function sseData(event: string): string | undefined {
  // Line by line without splitting: nearly every event is one `data:` line, read as one slice.
  let out: string | undefined;
  let start = 0;
  while (start < event.length) {
    let end = event.indexOf('\n', start);
    if (end < 0) end = event.length;
    const stop = end > start && event.charCodeAt(end - 1) === 13 ? end - 1 : end;
    if (event.startsWith('data:', start)) {
      const v = event.slice(start + (event.charCodeAt(start + 5) === 32 ? 6 : 5), Math.max(stop, start + 5));
      out = out === undefined ? v : `${out}\n${v}`;
    }
    start = end + 1;
  }
  return out;
}

const nonEmpty = (v: unknown): boolean => (typeof v === 'string' ? v.length > 0 : Array.isArray(v) ? v.length > 0 : false);

interface EventFacts {
  content: boolean;
  usage: Usage | undefined;
  /** The usage-only chunk of OpenAI streams (`choices: []` with `usage`). */
  usageOnly: boolean;
  /** TGI token events: one token each. */
  tgiToken: boolean;
}

/** What one decoded JSON event or body says, for each route's schema. */
export function readEvent(route: Route, doc: unknown): EventFacts {
  const f: EventFacts = { content: false, usage: undefined, usageOnly: false, tgiToken: false };
  if (!doc || typeof doc !== 'object') return f;
  // biome-ignore lint/suspicious/noExplicitAny: engine JSON of several schemas, each field checked before use
  const d = doc as Record<string, any>;
  if (route === '/generate' || route === '/generate_stream') {
    if (d.token && typeof d.token === 'object') {
      f.tgiToken = true;
      f.content = d.token.special !== true;
    }
    if (typeof d.generated_text === 'string' && route === '/generate') f.content = true;
    const generated = d.details?.generated_tokens;
    if (typeof generated === 'number') f.usage = { promptTokens: undefined, completionTokens: generated };
    return f;
  }
  if (route === '/v1/responses') {
    if (d.type === 'response.output_text.delta' || d.type === 'response.reasoning_text.delta') f.content = nonEmpty(d.delta);
    const u = (d.type === 'response.completed' ? d.response?.usage : d.object === 'response' ? d.usage : undefined) as Record<string, unknown> | undefined;
    if (u && typeof u === 'object') f.usage = { promptTokens: numberOf(u.input_tokens), completionTokens: numberOf(u.output_tokens) };
    if (d.object === 'response' && Array.isArray(d.output) && d.output.length) f.content = true;
    return f;
  }
  const choices = Array.isArray(d.choices) ? d.choices : [];
  for (const c of choices) {
    if (!c || typeof c !== 'object') continue;
    const delta = c.delta ?? c.message;
    if (nonEmpty(c.text) || (delta && (nonEmpty(delta.content) || nonEmpty(delta.reasoning_content) || nonEmpty(delta.tool_calls)))) f.content = true;
  }
  if (Array.isArray(d.data) && d.object === 'list') f.content = true;
  if (d.usage && typeof d.usage === 'object') {
    f.usage = { promptTokens: numberOf(d.usage.prompt_tokens), completionTokens: numberOf(d.usage.completion_tokens) };
    f.usageOnly = Array.isArray(d.choices) && d.choices.length === 0;
  }
  return f;
}

function numberOf(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

/** What the recorder reads of an answer's body, however it was read: here (StreamObserver) or in the native loop (LoopReading). */
export interface BodyReading {
  readonly firstContentAt: number | undefined;
  readonly lastContentAt: number | undefined;
  /** Gaps between content reads, counted per bucket of the inter-token histogram (+Inf last). */
  readonly gapCounts: readonly number[];
  readonly gapSumMs: number;
  readonly usage: Usage | undefined;
  /** Times of every markEvery-th content read, for span events. */
  readonly marks: readonly number[];
  completionTokens(): number | undefined;
}

/** Output tokens: the usage's, else TGI's token events on a completed stream. */
function completionTokensOf(route: Route, usage: Usage | undefined, sawEnd: boolean, tgiTokens: number): number | undefined {
  if (usage?.completionTokens !== undefined) return usage.completionTokens;
  if (route === '/generate_stream' && sawEnd) return tgiTokens;
  return undefined;
}

/** The findings of a stream without violations (shared: nothing adds to a LoopReading's findings). */
const NONE_FOUND: ReadonlySet<ViolationKind> = new Set();

/**
 * Where each figure sits in the numbers the loop reads of a stream (native/src/sse.rs's `slot`,
 * given by the addon's readingLayout(); a test holds the two equal).
 */
export const READING_LAYOUT = {
  firstContentAt: 0,
  lastContentAt: 1,
  contentChunks: 2,
  gapSumMs: 3,
  usageRead: 4,
  promptTokens: 5,
  completionTokens: 6,
  tgiTokens: 7,
  sawEnd: 8,
  found: 9,
  foundKinds: 4,
  choicesUntracked: 13,
  gapCounts: 14,
} as const;
const AT = READING_LAYOUT;

/**
 * A 2xx event stream the native loop read itself (native/src/sse.rs, StreamObserver's and the
 * validator's rules over the same events), from the numbers it tells with the exchange's end, at
 * the places READING_LAYOUT names: first and last content time (NaN: none), content reads, the gap
 * sum, whether a usage was read, its prompt and completion tokens (NaN: absent), TGI token events,
 * whether the stream completed, four violation kinds in the order found (-1: none), whether
 * choice indices went untracked, the gap histogram's counts, then the marks. Times are the loop's
 * CLOCK_MONOTONIC ms; `clockOffset` places them on performance.now()'s clock.
 */
export class LoopReading implements BodyReading, StreamFindings {
  readonly firstContentAt: number | undefined;
  readonly lastContentAt: number | undefined;
  readonly contentChunks: number;
  readonly gapCounts: number[];
  readonly gapSumMs: number;
  readonly usage: Usage | undefined;
  readonly tgiTokens: number;
  readonly sawEnd: boolean;
  readonly marks: number[];
  readonly found: ReadonlySet<ViolationKind>;
  readonly choicesUntracked: boolean;

  constructor(
    private readonly route: Route,
    n: Float64Array,
    buckets: number,
    clockOffset: number,
  ) {
    // Plain loops and no closures: one of these is made for every stream, on the thread the loop hands its batches to.
    const first = n[AT.firstContentAt] as number;
    const last = n[AT.lastContentAt] as number;
    this.firstContentAt = Number.isNaN(first) ? undefined : first - clockOffset;
    this.lastContentAt = Number.isNaN(last) ? undefined : last - clockOffset;
    this.contentChunks = n[AT.contentChunks] as number;
    this.gapSumMs = n[AT.gapSumMs] as number;
    const prompt = n[AT.promptTokens] as number;
    const completion = n[AT.completionTokens] as number;
    this.usage =
      n[AT.usageRead] === 1
        ? { promptTokens: Number.isNaN(prompt) ? undefined : prompt, completionTokens: Number.isNaN(completion) ? undefined : completion }
        : undefined;
    this.tgiTokens = n[AT.tgiTokens] as number;
    this.sawEnd = n[AT.sawEnd] === 1;
    let found: Set<ViolationKind> | undefined;
    for (let k = AT.found; k < AT.found + AT.foundKinds; k++) {
      const kind = VIOLATION_KINDS[n[k] as number];
      if (kind) (found ??= new Set()).add(kind);
    }
    this.found = found ?? NONE_FOUND;
    this.choicesUntracked = n[AT.choicesUntracked] === 1;
    const gapCounts = new Array<number>(buckets);
    for (let i = 0; i < buckets; i++) gapCounts[i] = n[AT.gapCounts + i] as number;
    this.gapCounts = gapCounts;
    const marks = new Array<number>(Math.max(0, n.length - AT.gapCounts - buckets));
    for (let i = 0; i < marks.length; i++) marks[i] = (n[AT.gapCounts + buckets + i] as number) - clockOffset;
    this.marks = marks;
  }

  completionTokens(): number | undefined {
    return completionTokensOf(this.route, this.usage, this.sawEnd, this.tgiTokens);
  }

  /** The loop ended the stream's checks when it ended the exchange. */
  end(): void {}
}

export type BodyKind = 'sse' | 'json' | 'opaque';

export function bodyKind(route: Route, contentType: string | undefined): BodyKind {
  if (route === 'other') return 'opaque';
  const ct = (contentType ?? '').toLowerCase();
  if (ct.startsWith('text/event-stream')) return 'sse';
  if (ct.includes('json')) return 'json';
  return 'opaque';
}

/**
 * Observes one response. push() returns the bytes to send to the client now; finish() returns
 * whatever is still held (an incomplete last event) and settles the usage.
 */
export class StreamObserver implements BodyReading {
  firstByteAt: number | undefined;
  firstContentAt: number | undefined;
  lastContentAt: number | undefined;
  contentChunks = 0;
  /** Gaps between content chunks, counted per bucket of `gapBounds` (+Inf last). */
  readonly gapCounts: number[];
  gapSumMs = 0;
  usage: Usage | undefined;
  tgiTokens = 0;
  /** A [DONE] (OpenAI), a final usage, or a TGI details event was seen: the stream completed. */
  sawEnd = false;
  /** Times of every `tokenEventEvery`-th content chunk, for span events (bounded by the stream). */
  readonly marks: number[] = [];
  private held: Buffer | undefined;
  private jsonCopy: Buffer[] = [];
  private jsonBytes = 0;

  constructor(
    private readonly route: Route,
    private readonly kind: BodyKind,
    private readonly stripUsage: boolean,
    private readonly gapBoundsMs: readonly number[],
    private readonly markEvery: number,
    private readonly validator?: StreamValidator,
    /** Shown each decoded event (the canary reads its answer from them). */
    private readonly onDoc?: (doc: unknown) => void,
    private readonly maxMarks = 4096,
  ) {
    this.gapCounts = new Array<number>(gapBoundsMs.length + 1).fill(0);
  }

  private contentAt(t: number): void {
    if (this.firstContentAt === undefined) this.firstContentAt = t;
    else {
      const gap = t - this.lastContentAt!;
      const bucket = bucketIndex(this.gapBoundsMs, gap);
      this.gapCounts[bucket] = (this.gapCounts[bucket] ?? 0) + 1;
      this.gapSumMs += gap;
    }
    this.lastContentAt = t;
    this.contentChunks++;
    if (this.contentChunks % this.markEvery === 0 && this.marks.length < this.maxMarks) this.marks.push(t);
  }

  push(chunk: Buffer, t: number): Buffer | undefined {
    this.firstByteAt ??= t;
    if (this.kind === 'opaque') return chunk;
    if (this.kind === 'json') {
      if (this.firstContentAt === undefined) this.contentAt(t);
      // A copy: the chunk may be a view of a larger buffer (the native loop's batch) that it would keep alive.
      if (this.jsonBytes + chunk.length <= MAX_JSON_COPY) this.jsonCopy.push(Buffer.from(chunk));
      this.jsonBytes += chunk.length;
      return chunk;
    }
    let buf = this.held ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = undefined;
    // Most chunks are one whole event, forwarded as they came: no copies and no list of parts.
    if (eventEnd(buf) === buf.length) {
      const seen = this.onEvent(buf.toString('utf8'), t);
      if (seen & CONTENT) this.contentAt(t);
      return seen & STRIP ? undefined : buf;
    }
    const out: Buffer[] = [];
    let content = false;
    let start = 0;
    for (;;) {
      const rest = start === 0 ? buf : buf.subarray(start);
      const end = eventEnd(rest);
      if (end < 0) break;
      const event = rest.subarray(0, end);
      const seen = this.onEvent(event.toString('utf8'), t);
      if (seen & CONTENT) content = true;
      if (!(seen & STRIP)) out.push(event);
      start += end;
    }
    if (start < buf.length) {
      const tail = buf.subarray(start);
      if (tail.length > MAX_PARTIAL_EVENT) out.push(tail);
      else this.held = Buffer.from(tail);
    }
    buf = out.length === 1 && out[0] ? out[0] : Buffer.concat(out);
    if (content) this.contentAt(t);
    return buf.length ? buf : undefined;
  }

  /** What one event is: CONTENT and/or STRIP, as bits. */
  private onEvent(event: string, t: number): number {
    const data = sseData(event);
    if (data === undefined) {
      // Comments (keep-alives) are fine anywhere; other bytes matter only after [DONE].
      if (this.validator && event.trim() && !event.startsWith(':')) this.validator.onTrailingBytes(t);
      return 0;
    }
    if (data.trim() === '[DONE]') {
      this.sawEnd = true;
      this.validator?.onData(data, undefined, false, t);
      return 0;
    }
    let doc: unknown;
    try {
      doc = JSON.parse(data);
    } catch {
      this.validator?.onData(data, undefined, false, t);
      return 0;
    }
    this.validator?.onData(data, doc, true, t);
    this.onDoc?.(doc);
    const f = readEvent(this.route, doc);
    if (f.tgiToken) this.tgiTokens++;
    if (f.usage) {
      this.usage = f.usage;
      if (this.route !== '/v1/chat/completions' && this.route !== '/v1/completions') this.sawEnd = true;
    }
    return (f.content ? CONTENT : 0) | (this.stripUsage && f.usageOnly ? STRIP : 0);
  }

  /** Bytes still held (an event without its blank line) and the usage of a non-streamed body; t: when the response ended. */
  finish(t = performance.now()): Buffer | undefined {
    if (this.kind === 'json' && this.jsonBytes <= MAX_JSON_COPY && this.jsonCopy.length) {
      try {
        const f = readEvent(this.route, JSON.parse(Buffer.concat(this.jsonCopy).toString('utf8')));
        if (f.usage) this.usage = f.usage;
      } catch {
        // A body that is not JSON has no usage to read; the request is still counted.
      }
      this.sawEnd = true;
    }
    this.jsonCopy = [];
    const held = this.held;
    this.held = undefined;
    if (held && this.kind === 'sse') this.onEvent(held.toString('utf8'), t);
    if (this.kind === 'sse') this.validator?.end(t);
    return held;
  }

  /** Output tokens: the usage's, else TGI's token events on a completed stream. */
  completionTokens(): number | undefined {
    return completionTokensOf(this.route, this.usage, this.sawEnd, this.tgiTokens);
  }
}
