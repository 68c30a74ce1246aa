// The streaming validator (003 §18.11): checks each SSE stream it is shown, canaries always and
// proxied traffic when the proxy is on, against the contract clients rely on. It reads events the
// stream observer has already split and decoded, so it costs no second parse.

import type { Route } from './routes.js';

/** What can be wrong with a stream (`kind` of inference_stream_violations_total). */
export const VIOLATION_KINDS = ['stall', 'invalid_json', 'out_of_order', 'after_done'] as const;
export type ViolationKind = (typeof VIOLATION_KINDS)[number];

/**
 * Choice indices one stream's order checks follow, far above the `n` a client asks for. An index
 * first seen past this many is not checked, and the stream is counted once (choices_untracked):
 * an engine cannot grow a stream's state without bound.
 */
export const MAX_TRACKED_CHOICES = 256;

interface ChoiceState {
  role: boolean;
  finished: boolean;
}

/** What the recorder reads of a stream's checks, however they were made: here (StreamValidator) or in the native loop. */
export interface StreamFindings {
  readonly found: ReadonlySet<ViolationKind>;
  /** Whether the stream opened more choice indices than MAX_TRACKED_CHOICES (the rest went unchecked). */
  readonly choicesUntracked: boolean;
  /** The stream ended at t (a stall up to then counts); later calls change nothing. */
  end(t: number): void;
}

/**
 * One stream's checks. Each kind is reported at most once per stream: the metric counts streams
 * that broke a rule, not events, so one broken stream of ten thousand chunks is one violation.
 */
export class StreamValidator implements StreamFindings {
  readonly found = new Set<ViolationKind>();
  choicesUntracked = false;
  private lastEventAt: number | undefined;
  private done = false;
  private usageSeen = false;
  private readonly choices = new Map<number, ChoiceState>();

  private ended = false;

  /** Gaps are timed from the first event: the wait for it is time to first token, not a stall. */
  constructor(
    private readonly route: Route,
    private readonly stallAfterMs: number,
  ) {}

  private gapTo(t: number): void {
    if (this.lastEventAt !== undefined && t - this.lastEventAt > this.stallAfterMs) this.found.add('stall');
    this.lastEventAt = t;
  }

  /** An SSE event's data, with its JSON when it parsed (undefined: not JSON) - `[DONE]` aside. */
  onData(data: string, doc: unknown, parsed: boolean, t: number): void {
    this.gapTo(t);
    if (this.done) {
      this.found.add('after_done');
      return;
    }
    if (data.trim() === '[DONE]') {
      this.done = true;
      for (const c of this.choices.values()) if (!c.finished) this.found.add('out_of_order');
      return;
    }
    if (!parsed) {
      this.found.add('invalid_json');
      return;
    }
    this.checkOrder(doc);
  }

  /** Bytes that are no complete event when the stream ends (after `[DONE]` they break the contract). */
  onTrailingBytes(t: number): void {
    this.gapTo(t);
    if (this.done) this.found.add('after_done');
  }

  /** The stream ended (completed, reset, timed out or left by the client) at t; later calls change nothing. */
  end(t: number): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.done) this.gapTo(t);
  }

  private checkOrder(doc: unknown): void {
    if (!doc || typeof doc !== 'object') return;
    // biome-ignore lint/suspicious/noExplicitAny: engine JSON, each field checked before use
    const d = doc as Record<string, any>;
    if (this.route === '/generate_stream') {
      // TGI: the event with `details` (or generated_text) is the last one.
      if (d.details || typeof d.generated_text === 'string') this.done = true;
      return;
    }
    if (this.route === '/v1/responses') {
      if (d.type === 'response.completed' || d.type === 'response.failed' || d.type === 'response.incomplete') this.done = true;
      return;
    }
    if (this.route !== '/v1/chat/completions' && this.route !== '/v1/completions') return;
    if (d.error) return;
    const choices: unknown[] = Array.isArray(d.choices) ? d.choices : [];
    if (choices.length === 0 && d.usage) {
      this.usageSeen = true;
      return;
    }
    for (const raw of choices) {
      if (!raw || typeof raw !== 'object') continue;
      // biome-ignore lint/suspicious/noExplicitAny: as above
      const c = raw as Record<string, any>;
      const index = typeof c.index === 'number' ? c.index : 0;
      let st = this.choices.get(index);
      if (!st) {
        if (this.choices.size >= MAX_TRACKED_CHOICES) {
          this.choicesUntracked = true;
          continue;
        }
        st = { role: false, finished: false };
        this.choices.set(index, st);
        // Chat streams open each choice with the assistant's role (OpenAI's wire contract).
        if (this.route === '/v1/chat/completions' && !c.delta?.role) this.found.add('out_of_order');
      }
      const hasContent = typeof c.text === 'string' ? c.text.length > 0 : !!(c.delta?.content || c.delta?.tool_calls || c.delta?.reasoning_content);
      if ((st.finished || this.usageSeen) && hasContent) this.found.add('out_of_order');
      if (c.finish_reason) st.finished = true;
    }
  }
}
