import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bucketizeCounts, cumulativeAt, quantileAcross, quantileFromBuckets, rebucket } from '../../agent/normalize/rebucket.js';

describe('rebucket', () => {
  const bounds = [300, 500, 800, 1000, 1500, 2000];
  const cum = [10, 20, 50, 60, 90, 100];
  const cases: Array<[string, number, number]> = [
    ['exact where bounds coincide', 500, 20],
    ['exact despite float artefacts (0.3 s * 1000)', 0.3 * 1000, 10],
    ['linear between bounds', 650, 35],
    ['below the first bound from zero', 150, 5],
    ['beyond the last finite bound stays at the last count (rest is +Inf)', 12800, 100],
  ];
  for (const [name, t, want] of cases) it(name, () => assert.equal(cumulativeAt(bounds, cum, t), want));

  it('is monotonic in le and compares le as numbers', () => {
    const out = rebucket(bounds, cum, [5, 10, 20, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800]);
    for (let i = 1; i < out.length; i++) assert.ok(out[i]! >= out[i - 1]!, `le ${i}`);
    assert.equal(out[7], 50);
  });

  it('is monotonic in time when every source bucket grows', () => {
    const later = cum.map((c, i) => c + i * 3 + 1);
    const target = [250, 700, 1200, 1999];
    const a = rebucket(bounds, cum, target);
    const b = rebucket(bounds, later, target);
    a.forEach((v, i) => {
      assert.ok(b[i]! >= v);
    });
  });

  it('bucketizes prompt lengths into context ranges', () => {
    const tokenBounds = [1000, 2000, 5000, 10000, 20000];
    const tokenCum = [40, 60, 90, 95, 100];
    // c(1000)=40; c(4000)=60+30*(2/3)=80; c(16000)=95+5*0.6=98; total 100.
    assert.deepEqual(
      bucketizeCounts(tokenBounds, tokenCum, 100, [1000, 4000, 16000]).map((v) => Math.round(v * 1e9) / 1e9),
      [40, 40, 18, 2],
    );
  });

  it('quantiles interpolate like histogram_quantile', () => {
    assert.equal(quantileFromBuckets(0.5, bounds, cum, 100), 800);
    assert.equal(quantileFromBuckets(0.95, bounds, cum, 100), 1750);
    assert.equal(quantileFromBuckets(0.5, bounds, cum, 0), undefined);
  });
});

describe('quantileAcross (the summary quantiles, from the engines own buckets)', () => {
  const cases: Array<[string, number, Array<{ bounds: number[]; cum: number[]; count: number }>, number]> = [
    // histogram_quantile by hand: rank 38 of 40 falls in (2,4] holding 10 above 30: 2 + 2 x 8/10.
    ['one layout, inside a bucket', 0.95, [{ bounds: [1, 2, 4], cum: [10, 30, 40], count: 40 }], 3.6],
    // Rank 45 of 50 lies among the +Inf observations: the highest finite bound, as Prometheus answers.
    ['one layout, rank in +Inf', 0.9, [{ bounds: [1, 2, 4], cum: [10, 30, 40], count: 50 }], 4],
    // Two layouts: on [0,1] the first adds 5x and the second 10x/1.5; 10 = 35x/3 at x = 6/7.
    [
      'two layouts',
      0.5,
      [
        { bounds: [1, 2], cum: [5, 10], count: 10 },
        { bounds: [1.5], cum: [10], count: 10 },
      ],
      6 / 7,
    ],
    ['nothing observed', 0.5, [{ bounds: [1, 2], cum: [0, 0], count: 0 }], Number.NaN],
  ];
  for (const [name, q, hists, want] of cases) {
    it(name, () => {
      const got = quantileAcross(q, hists);
      if (Number.isNaN(want)) assert.equal(got, undefined);
      else assert.ok(Math.abs(got! - want) < 1e-12, `${got} != ${want}`);
    });
  }

  it('agrees with quantileFromBuckets on one layout', () => {
    const bounds = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10];
    const cum = [1, 4, 9, 20, 33, 40, 41, 47, 50];
    for (const q of [0.1, 0.5, 0.9, 0.95, 0.99]) {
      assert.ok(Math.abs(quantileAcross(q, [{ bounds, cum, count: 52 }])! - quantileFromBuckets(q, bounds, cum, 52)!) < 1e-12, String(q));
    }
  });
});
