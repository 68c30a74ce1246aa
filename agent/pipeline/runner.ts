// The one loop. Every source (each engine upstream, and the GPU probe as the source named "gpu")
// runs on its own interval through startLoop, and every cycle is recorded here, the same way for
// all of them: a span, health (up, duration, last success, errors by outcome) and a log line on a
// change of state only. What a source does inside its cycle (scrape and normalise, or poll) is its
// own; how the cycle is recorded is not.

import { SpanStatusCode, type Attributes, type Tracer } from '@opentelemetry/api';
import type { Logger } from '../logger.js';
import { redactUrl } from '../net/http-client.js';
import { startLoop, type Loop } from '../schedule/loop.js';

/** What the loop knows of a source, whatever kind it is. */
export interface SourceHealth {
  name: string;
  up: boolean;
  lastOutcome: string;
  lastDetail: string | undefined;
  lastSuccessMs: number | undefined;
  intervalMs: number;
  /** Duration of the last cycle, seconds. */
  lastSeconds: number | undefined;
  /** Rejected lines and incomplete histograms since start (engines). */
  parseErrorsTotal: number;
}

/** How one cycle went: `ok`, or why not. */
export interface CycleReport {
  outcome: string;
  detail: string | undefined;
  parseErrors: number;
  attributes: Attributes;
}

/** A source the loop runs. */
export interface LoopedSource {
  readonly health: SourceHealth;
  readonly spanName: string;
  /** Fields of its state-change log lines (always `upstream`, the source's name). */
  logContext(): Record<string, unknown>;
  /** One cycle; never throws. Undefined when shutdown cut it short (it then says nothing). */
  collect(signal: AbortSignal): Promise<CycleReport | undefined>;
}

/** Where every source's health goes (the agent's self-metrics). */
export interface CycleSink {
  recordScrape(upstream: string, outcome: string, seconds: number, parseErrors: number, nowMs: number): void;
}

export interface RunnerDeps {
  metrics: CycleSink;
  tracer: Tracer;
  log: Logger;
  now: () => number;
}

/** Runs one cycle of a source and records it. Resolves true on success; a source that throws rejects (the loop counts it). */
export function runCycle(src: LoopedSource, signal: AbortSignal, deps: RunnerDeps): Promise<boolean> {
  return deps.tracer.startActiveSpan(src.spanName, async (span) => {
    try {
      const started = performance.now();
      const r = await src.collect(signal);
      if (!r || signal.aborted) return false;
      const nowMs = deps.now();
      const seconds = (performance.now() - started) / 1000;
      const h = src.health;
      h.lastSeconds = seconds;
      h.parseErrorsTotal += r.parseErrors;
      deps.metrics.recordScrape(h.name, r.outcome, seconds, r.parseErrors, nowMs);
      transition(src, r, nowMs, deps.log);
      span.setAttributes(r.attributes);
      if (r.outcome !== 'ok') span.setStatus({ code: SpanStatusCode.ERROR, message: r.detail ? redactUrl(r.detail) : r.outcome });
      return r.outcome === 'ok';
    } finally {
      span.end();
    }
  });
}

/** Logs a change of state once, not at every interval. */
function transition(src: LoopedSource, r: CycleReport, nowMs: number, log: Logger): void {
  const h = src.health;
  const wasUp = h.up;
  const prevOutcome = h.lastOutcome;
  h.up = r.outcome === 'ok';
  h.lastOutcome = r.outcome;
  h.lastDetail = r.detail;
  if (h.up) h.lastSuccessMs = nowMs;
  if (h.up && !wasUp) log.info(src.logContext(), 'upstream up');
  else if (!h.up && (wasUp || prevOutcome !== r.outcome))
    log.warn({ ...src.logContext(), reason: r.outcome, detail: r.detail && redactUrl(r.detail) }, 'upstream down');
}

/** One loop per source; `after` runs after each recorded cycle (the agent moves its data version there). */
export function startSources(
  sources: ReadonlyArray<{ source: LoopedSource; intervalMs: number; after?: () => void | Promise<void> }>,
  deps: RunnerDeps,
  onThrow: (err: unknown, name: string) => void,
): Loop[] {
  return sources.map(({ source, intervalMs, after }) =>
    startLoop({
      intervalMs,
      run: async (signal) => {
        const ok = await runCycle(source, signal, deps);
        await after?.();
        return ok;
      },
      onError: (err) => onThrow(err, source.health.name),
    }),
  );
}
