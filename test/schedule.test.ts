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
    const loop = startLoop({ intervalMs: 30, run: async () => { runs++; return true; } });
    await new Promise((r) => setTimeout(r, 100));
    await loop.stop();
    const after = runs;
    await new Promise((r) => setTimeout(r, 60));
    assert.ok(after >= 3, String(after));
    assert.equal(runs, after, 'no run after stop');
  });

  it('a run that throws counts as a failure and the loop goes on', async () => {
    let runs = 0;
    const loop = startLoop({ intervalMs: 40, run: async () => { runs++; throw new Error('boom'); } });
    await new Promise((r) => setTimeout(r, 60));
    await loop.stop();
    assert.ok(runs >= 2, 'retried sooner than the interval after a failure');
  });
});
