// Synthetic canaries (003 §18.11): infertel sends its own short streams straight to the engine,
// never through the proxy, so they stay out of tenant traffic and tenant metrics. Each run is
// judged against its canary's limits; the engine's /health and /v1/models are pinged beside them.

import type { AgentConfig } from '../config/schema.js';
import type { Logger } from '../logger.js';
import type { ProxyMetrics } from '../proxy/metrics.js';
import { StreamObserver } from '../proxy/stream.js';
import { StreamValidator, type ViolationKind } from '../proxy/validator.js';
import { VERSION } from '../version.js';

export type CanaryConfig = AgentConfig['canaries'][number];

export const CANARY_RESULTS = ['ok', 'timeout', 'ttft_exceeded', 'too_slow', 'content_mismatch', 'error'] as const;
export type CanaryResult = (typeof CANARY_RESULTS)[number];

/** The answer text kept for the content checks; a canary's answer is short, a runaway one is cut. */
const MAX_ANSWER_CHARS = 64 * 1024;
const PING_TIMEOUT_MS = 5000;

/** A path under the engine's base URL (which may or may not end in a slash). */
const under = (base: string, path: string) => new URL(path, base.endsWith('/') ? base : `${base}/`);

export interface StreamRequest {
  model: string;
  prompt: string;
  maxTokens: number;
}

/** What one stream to the engine gave. Times in ms from the moment the request was sent. */
export interface StreamRun {
  status: number | undefined;
  ttftMs: number | undefined;
  totalMs: number;
  /** Output tokens: the usage chunk's, else the content chunks seen. */
  completionTokens: number;
  /** Output tokens after the first over the time after the first; undefined below two tokens. */
  tokensPerSecond: number | undefined;
  answer: string;
  timedOut: boolean;
  /** Why the stream failed as a request (no answer, a status, a reset), if it did. */
  failure: string | undefined;
  violations: ViolationKind[];
}

function answerText(doc: unknown): string {
  if (!doc || typeof doc !== 'object') return '';
  const choices = (doc as { choices?: unknown }).choices;
  if (!Array.isArray(choices)) return '';
  let out = '';
  for (const c of choices) {
    const content = (c as { delta?: { content?: unknown } } | null)?.delta?.content;
    if (typeof content === 'string') out += content;
  }
  return out;
}

/** Sends one chat completion stream to the engine and reads it to the end (or the deadline). */
export async function streamOnce(target: string, req: StreamRequest, timeoutMs: number, stallAfterMs: number, stop?: AbortSignal): Promise<StreamRun> {
  const started = performance.now();
  const validator = new StreamValidator('/v1/chat/completions', stallAfterMs);
  let answer = '';
  const observer = new StreamObserver('/v1/chat/completions', 'sse', false, [], Number.MAX_SAFE_INTEGER, validator, (doc) => {
    if (answer.length < MAX_ANSWER_CHARS) answer += answerText(doc);
  });
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), timeoutMs);
  const onStop = () => deadline.abort();
  stop?.addEventListener('abort', onStop, { once: true });
  let status: number | undefined;
  let failure: string | undefined;
  let timedOut = false;
  try {
    const res = await fetch(under(target, 'v1/chat/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': `infertel-canary/${VERSION}`, 'x-infertel-canary': '1' },
      body: JSON.stringify({
        model: req.model,
        messages: [{ role: 'user', content: req.prompt }],
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: req.maxTokens,
        temperature: 0,
      }),
      signal: deadline.signal,
    });
    status = res.status;
    if (!res.ok || !res.body) {
      failure = `status ${res.status}`;
      await res.body?.cancel();
    } else {
      for await (const chunk of res.body) observer.push(Buffer.from(chunk as Uint8Array), performance.now());
    }
  } catch (err) {
    if (deadline.signal.aborted) timedOut = true;
    else failure = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
  } finally {
    clearTimeout(timer);
    stop?.removeEventListener('abort', onStop);
  }
  const ended = performance.now();
  observer.finish(ended);
  if (!failure && !timedOut && !observer.sawEnd) failure = 'stream ended before [DONE]';
  if (!failure && !timedOut && observer.firstContentAt === undefined) failure = 'no content';
  const tokens = observer.usage?.completionTokens ?? observer.contentChunks;
  const decodeMs = observer.firstContentAt !== undefined && observer.lastContentAt !== undefined ? observer.lastContentAt - observer.firstContentAt : 0;
  return {
    status,
    ttftMs: observer.firstContentAt !== undefined ? observer.firstContentAt - started : undefined,
    totalMs: ended - started,
    completionTokens: tokens,
    tokensPerSecond: tokens >= 2 && decodeMs > 0 ? (tokens - 1) / (decodeMs / 1000) : undefined,
    answer,
    timedOut,
    failure,
    violations: [...validator.found],
  };
}

/** The canary's verdict on one run: ok, or the first check that failed, in a fixed order. */
export function judge(c: CanaryConfig, run: StreamRun): CanaryResult {
  if (run.timedOut) return 'timeout';
  if (run.failure) return 'error';
  if (run.ttftMs !== undefined && run.ttftMs > c.maxTtftMs) return 'ttft_exceeded';
  if (run.tokensPerSecond !== undefined && run.tokensPerSecond < c.minTokensPerSecond) return 'too_slow';
  if (c.mustMatch !== undefined && !new RegExp(c.mustMatch).test(run.answer)) return 'content_mismatch';
  if (c.mustNotMatch !== undefined && new RegExp(c.mustNotMatch).test(run.answer)) return 'content_mismatch';
  return 'ok';
}

export interface CanaryDeps {
  metrics: ProxyMetrics;
  log: Logger;
  /** Called after each recorded run or ping (the exposition's data changed). */
  onRecord: () => void;
}

interface Lane {
  canary: CanaryConfig;
  failures: number;
  running: boolean;
  timer: NodeJS.Timeout | undefined;
  done: Promise<unknown> | undefined;
}

/**
 * Runs every canary on its own interval. A run that outlasts its interval delays the next one
 * instead of overlapping it, so a hung engine never piles up canary streams.
 */
export class CanaryRunner {
  private readonly lanes: Lane[];
  private stopped = false;
  /** Aborts runs in flight at stop, so shutdown never waits out a canary's maxTotalMs. */
  private readonly stopping = new AbortController();
  private pingTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly target: string,
    canaries: readonly CanaryConfig[],
    private readonly stallAfterMs: number,
    private readonly deps: CanaryDeps,
  ) {
    this.lanes = canaries.map((canary) => ({ canary, failures: 0, running: false, timer: undefined, done: undefined }));
  }

  start(): void {
    for (const lane of this.lanes) this.schedule(lane, 0);
    if (this.lanes.length) {
      const every = Math.min(...this.lanes.map((l) => l.canary.interval));
      const ping = () => {
        void this.ping().finally(() => {
          if (!this.stopped) this.pingTimer = setTimeout(ping, every);
        });
      };
      ping();
    }
  }

  private schedule(lane: Lane, delayMs: number): void {
    if (this.stopped) return;
    lane.timer = setTimeout(() => {
      const begun = performance.now();
      lane.done = this.runOnce(lane).finally(() => {
        lane.done = undefined;
        this.schedule(lane, Math.max(0, lane.canary.interval - (performance.now() - begun)));
      });
    }, delayMs);
  }

  /** One run of one canary, recorded; never overlaps the lane's previous run. */
  private async runOnce(lane: Lane): Promise<CanaryResult | undefined> {
    if (lane.running) return undefined;
    lane.running = true;
    try {
      const c = lane.canary;
      const run = await streamOnce(
        this.target,
        { model: c.model, prompt: c.prompt, maxTokens: c.maxTokens },
        c.maxTotalMs,
        this.stallAfterMs,
        this.stopping.signal,
      );
      if (this.stopped) return undefined;
      const result = judge(c, run);
      const before = lane.failures;
      lane.failures = result === 'ok' ? 0 : lane.failures + 1;
      this.deps.metrics.recordCanary({
        model: c.model,
        sloClass: c.sloClass,
        result,
        ttftMs: run.ttftMs,
        tokensPerSecond: run.tokensPerSecond,
        consecutiveFailures: lane.failures,
      });
      if (run.violations.length) this.deps.metrics.recordViolations(c.model, run.violations);
      // Logged on a change of state only: a canary failing every 30 s says so once.
      if (before === 0 && lane.failures === 1)
        this.deps.log.warn(
          { event: 'canary_failing', model: c.model, slo_class: c.sloClass, result, status: run.status, detail: run.failure },
          'canary failing',
        );
      if (before > 0 && lane.failures === 0)
        this.deps.log.info({ event: 'canary_recovered', model: c.model, slo_class: c.sloClass, failed_runs: before }, 'canary passing again');
      if (run.violations.length)
        this.deps.log.warn(
          { event: 'stream_violation', model: c.model, route: '/v1/chat/completions', tenant: 'canary', kinds: run.violations },
          'stream broke the SSE contract',
        );
      this.deps.onRecord();
      return result;
    } finally {
      lane.running = false;
    }
  }

  private async ping(): Promise<void> {
    await Promise.all(
      [
        ['health', 'health'],
        ['models', 'v1/models'],
      ].map(async ([endpoint, path]) => {
        const started = performance.now();
        let up = false;
        try {
          const res = await fetch(under(this.target, path!), {
            headers: { 'user-agent': `infertel-canary/${VERSION}` },
            signal: AbortSignal.timeout(PING_TIMEOUT_MS),
          });
          await res.body?.cancel();
          up = res.ok;
        } catch {
          up = false;
        }
        this.deps.metrics.recordPing(endpoint!, up, performance.now() - started);
      }),
    );
    this.deps.onRecord();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    clearTimeout(this.pingTimer);
    for (const lane of this.lanes) clearTimeout(lane.timer);
    await Promise.all(this.lanes.map((l) => l.done));
  }
}
