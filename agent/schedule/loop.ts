// Runs a task every interval. After a failure it retries sooner and backs off with jitter, but
// never waits longer than one interval, so a source that comes back is seen within an interval.

export interface LoopOptions {
  intervalMs: number;
  /** Returns true on success. Must not throw; a throw counts as a failure. */
  run(signal: AbortSignal): Promise<boolean>;
  random?: () => number;
}

export interface Loop {
  stop(): Promise<void>;
}

/** Delay before the next attempt after `failures` consecutive failures (0 = success). */
export function nextDelay(intervalMs: number, failures: number, random: () => number = Math.random): number {
  if (failures === 0) return intervalMs;
  const base = Math.min(intervalMs, (intervalMs / 8) * 2 ** (failures - 1));
  return Math.max(50, base * (0.8 + 0.2 * random()));
}

export function startLoop(opts: LoopOptions): Loop {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let failures = 0;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = (async () => {
      let ok = false;
      try {
        ok = await opts.run(ac.signal);
      } catch {
        ok = false;
      }
      failures = ok ? 0 : failures + 1;
      if (!ac.signal.aborted) timer = setTimeout(tick, nextDelay(opts.intervalMs, failures, opts.random));
    })();
  };
  tick();
  return {
    async stop() {
      ac.abort();
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
