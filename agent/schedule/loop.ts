// Runs a task every interval. After a failure it retries sooner and backs off with jitter, but
// never waits longer than one interval, so a source that comes back is seen within an interval.

export interface LoopOptions {
  intervalMs: number;
  /** Returns true on success. Must not throw; a throw counts as a failure. */
  run(signal: AbortSignal): Promise<boolean>;
  random?: () => number;
  /** Told of a run that threw (it is counted as a failure either way). */
  onError?: (err: unknown) => void;
  /** Timers, replaceable by a fake clock in tests. */
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (t: unknown) => void;
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
  const setTimer = opts.setTimer ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
  const clearTimer = opts.clearTimer ?? ((t: unknown) => clearTimeout(t as NodeJS.Timeout));
  let timer: unknown;
  let failures = 0;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = (async () => {
      let ok = false;
      try {
        ok = await opts.run(ac.signal);
      } catch (err) {
        ok = false;
        opts.onError?.(err);
      }
      failures = ok ? 0 : failures + 1;
      if (!ac.signal.aborted) timer = setTimer(tick, nextDelay(opts.intervalMs, failures, opts.random));
    })();
  };
  tick();
  return {
    async stop() {
      ac.abort();
      if (timer !== undefined) clearTimer(timer);
      await running;
    },
  };
}
