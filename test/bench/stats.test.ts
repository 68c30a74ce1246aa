// The bench's wording of infertel's added time against a gateway's: a multiple only where both are above the noise.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addedMultiple, pct } from '../../bench/stats.js';

describe('bench stats', () => {
  it('words a multiple only where both added times are above zero', () => {
    const cases: [number, number, string][] = [
      [0.8, 0.4, '2.00x'],
      [0.1, 0.4, '0.25x'],
      [0.8, 0, 'no multiple (nginx added nothing measurable)'],
      [0.8, -0.6, 'no multiple (nginx added nothing measurable)'],
      [-1.88, 3.23, 'no multiple (infertel added nothing measurable)'],
      [0, 3.23, 'no multiple (infertel added nothing measurable)'],
      [-0.2, -0.6, 'no multiple (nginx added nothing measurable)'],
    ];
    for (const [ours, theirs, said] of cases) assert.equal(addedMultiple(ours, theirs, 'nginx'), said, `${ours} against ${theirs}`);
  });

  it('takes the nearest-rank percentile', () => {
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.equal(pct(hundred, 50), 51);
    assert.equal(pct(hundred, 99), 100);
    assert.ok(Number.isNaN(pct([], 50)));
  });
});
