import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nextDelay, startLoop } from '../agent/schedule/loop.js';

describe('scrape loop', () => {
  const cases: Array<[number, number, number, number]> = [
    // failures, random, expected min, expected max (interval 10 s)
    [0, 0.5, 10_000, 10_000],
    [1, 0, 1000, 1000],
    [1, 1, 1250, 1250],
    [2, 0.5, 2250, 2250],
    [4, 1, 10_000, 10_000],
    [20, 0, 8000, 8000],
  ];
  for (const [failures, r, min, max] of cases) {
    it(`after ${failures} failures the delay is within [${min}, ${max}] ms and never over one interval`, () => {
      const d = nextDelay(10_000, failures, () => r);
      assert.ok(d >= min && d <= max, String(d));
      assert.ok(d <= 10_000);
    });
  }

  it('runs at once, again after the interval, and stops', async () => {
    let runs = 0;
    const loop = startLoop({
      intervalMs: 30,
      run: async () => {
        runs++;
        return true;
      },
    });
    await new Promise((r) => setTimeout(r, 100));
    await loop.stop();
    const after = runs;
    await new Promise((r) => setTimeout(r, 60));
    assert.ok(after >= 3, String(after));
    assert.equal(runs, after, 'no run after stop');
  });

  /** A fake clock: timers fire only when the test advances it, and every delay asked for is kept. */
  function fakeClock() {
    const delays: number[] = [];
    let pending: (() => void) | undefined;
    return {
      delays,
      setTimer: (fn: () => void, ms: number) => {
        delays.push(ms);
        pending = fn;
        return delays.length;
      },
      clearTimer: () => {
        pending = undefined;
      },
      async fire() {
        const fn = pending;
        pending = undefined;
        fn?.();
        await new Promise((r) => setImmediate(r));
      },
    };
  }

  it('backs off after failures (1/8, 1/4, 1/2 of the interval, then the interval) and returns to it on success', async () => {
    const clock = fakeClock();
    const outcomes = [false, false, false, false, false, true, false];
    const errors: unknown[] = [];
    const loop = startLoop({
      intervalMs: 8000,
      random: () => 1, // the jitter's top: delays are exactly base x 1.0
      setTimer: clock.setTimer,
      clearTimer: clock.clearTimer,
      onError: (e) => errors.push(e),
      run: async () => {
        const ok = outcomes.shift();
        if (ok === false && outcomes.length === 0) throw new Error('boom');
        return ok ?? true;
      },
    });
    await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 6; i++) await clock.fire();
    await loop.stop();
    // Failures 1-5: 8000/8 x 2^(n-1), capped at the interval; then a success (8000); then a throw (1000).
    assert.deepEqual(clock.delays, [1000, 2000, 4000, 8000, 8000, 8000, 1000]);
    assert.equal(errors.length, 1, 'the run that threw was reported');
  });
});
