// The simulated vLLM's --enable-mfu-metrics counters: work is counted as a GPU could do it, so no
// window of the demo shows an H100 doing more than it can, and over a long run every request's
// work is counted.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VllmSim } from '../../agent/demo/sim-vllm.js';

/** H100 SXM datasheet: 989 TFLOP/s dense BF16, 3.35 TB/s HBM3. */
const H100_FLOPS = 989e12;
const H100_BYTES = 3.35e12;

/** Sum over the engines of one counter family in the rendered text. */
function total(text: string, family: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`\\n${family}\\{[^}]*\\} (\\S+)`, 'g'))) sum += Number(m[1]);
  return sum;
}

describe('simulated vLLM: FLOP and byte counters', () => {
  it('no 100 ms window over ten simulated minutes exceeds an H100, and the work of every token is counted', () => {
    const engines = 2;
    const sim = new VllmSim({ model: 'm', engines, maxModelLen: 32768, rate: 4, seed: 7 }, 0);
    let before = { flops: 0, bytes: 0 };
    let busiest = 0;
    const stepMs = 100;
    for (let t = stepMs; t <= 600_000; t += stepMs) {
      sim.advance(t);
      const text = `\n${sim.render()}`;
      const now = {
        flops: total(text, 'vllm:estimated_flops_per_gpu_total'),
        bytes: total(text, 'vllm:estimated_read_bytes_per_gpu_total') + total(text, 'vllm:estimated_write_bytes_per_gpu_total'),
      };
      // One GPU per engine: the counters of both engines together against two GPUs' peak.
      const mfu = (now.flops - before.flops) / (stepMs / 1000) / (engines * H100_FLOPS);
      const bandwidth = (now.bytes - before.bytes) / (stepMs / 1000) / (engines * H100_BYTES);
      busiest = Math.max(busiest, mfu);
      assert.ok(mfu < 1 && bandwidth < 1, `at ${t} ms: MFU ${mfu}, bandwidth ${bandwidth}`);
      before = now;
    }
    assert.ok(busiest > 0.3, `the load reaches the bound at times (busiest window ${busiest})`);
    // The work waiting to be done stays small: nearly all of the tokens' 2 x 8e9 FLOPs each are counted.
    const text = `\n${sim.render()}`;
    const tokens = total(text, 'vllm:prompt_tokens_total') + total(text, 'vllm:generation_tokens_total');
    const flops = total(text, 'vllm:estimated_flops_per_gpu_total');
    assert.ok(flops <= 2 * 8e9 * tokens * (1 + 1e-12), 'never more than the tokens did');
    assert.ok(flops >= 0.99 * 2 * 8e9 * tokens, `nearly all of it done: ${flops / (2 * 8e9 * tokens)}`);
  });
});
