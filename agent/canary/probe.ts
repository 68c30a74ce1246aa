// Load probes (003 §18.11): off by default. Once a day at an off-peak time they send a short
// burst at each configured concurrency and report the concurrency-versus-latency curve, so a
// regression in how the engine scales shows up before peak traffic finds it.

import type { AgentConfig } from '../config/schema.js';
import type { Logger } from '../logger.js';
import type { ProxyMetrics } from '../proxy/metrics.js';
import { streamOnce, type StreamRun } from './canary.js';

export type LoadProbeConfig = AgentConfig['loadProbe'];

const DAY_MS = 86_400_000;

/** Milliseconds from now to the next HH:MM (UTC); a time equal to now is a day away. */
export function msUntilNext(nowMs: number, at: string): number {
  const [h, m] = at.split(':').map(Number) as [number, number];
  const todayAt = Math.floor(nowMs / DAY_MS) * DAY_MS + (h * 60 + m) * 60_000;
  return todayAt > nowMs ? todayAt - nowMs : todayAt + DAY_MS - nowMs;
}

/** Nearest-rank quantile of values (not empty). */
export function nearestRank(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

export class LoadProbe {
  private timer: NodeJS.Timeout | undefined;
  private readonly stopping = new AbortController();
  private running: Promise<void> | undefined;

  constructor(
    private readonly target: string,
    private readonly cfg: LoadProbeConfig,
    private readonly model: string,
    private readonly stallAfterMs: number,
    private readonly deps: { metrics: ProxyMetrics; log: Logger; onRecord: () => void; now?: () => number },
  ) {}

  start(): void {
    const wait = msUntilNext((this.deps.now ?? Date.now)(), this.cfg.at);
    this.timer = setTimeout(() => {
      this.running = this.run().finally(() => {
        this.running = undefined;
        if (!this.stopping.signal.aborted) this.start();
      });
    }, wait);
  }

  /** One probe: every concurrency step in order, each step's requests spread over that many workers. */
  async run(): Promise<void> {
    this.deps.log.info({ event: 'load_probe', model: this.model, steps: this.cfg.concurrency }, 'load probe starting');
    for (const concurrency of this.cfg.concurrency) {
      if (this.stopping.signal.aborted) return;
      const total = Math.max(this.cfg.requestsPerStep, concurrency);
      const runs: StreamRun[] = [];
      let next = 0;
      const started = performance.now();
      const worker = async () => {
        while (next < total && !this.stopping.signal.aborted) {
          next++;
          runs.push(
            await streamOnce(
              this.target,
              { model: this.model, prompt: this.cfg.prompt, maxTokens: this.cfg.maxTokens },
              this.cfg.timeout,
              this.stallAfterMs,
              this.stopping.signal,
            ),
          );
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      if (this.stopping.signal.aborted) return;
      const wallSec = (performance.now() - started) / 1000;
      const ok = runs.filter((r) => !r.failure && !r.timedOut);
      const failed = runs.length - ok.length;
      if (failed) this.deps.log.warn({ event: 'load_probe', model: this.model, concurrency, failed, of: runs.length }, 'load probe requests failed');
      if (!ok.length) continue;
      const durations = ok.map((r) => r.totalMs);
      const ttfts = ok.flatMap((r) => (r.ttftMs === undefined ? [] : [r.ttftMs]));
      this.deps.metrics.recordProbeStep(this.model, concurrency, {
        durationMs: [nearestRank(durations, 0.5), nearestRank(durations, 0.95)],
        ttftMs: ttfts.length ? [nearestRank(ttfts, 0.5), nearestRank(ttfts, 0.95)] : undefined,
        tokensPerSecond: ok.reduce((a, r) => a + r.completionTokens, 0) / wallSec,
      });
      this.deps.onRecord();
    }
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    clearTimeout(this.timer);
    await this.running;
  }
}
