// The JSON summary's latency quantiles come from the engines' own buckets, interpolated once.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildSummary, type GpuSummary } from '../../agent/export/summary.js';
import { harness } from '../normalize/harness.js';

const NO_GPU: GpuSummary = { source: 'none', nvml_unavailable: true, devices: [] };

/** vLLM's e2e histogram (REQ_LAT bounds up to 60 s) with `counts` per bucket (the last above 60 s). */
function e2e(counts: number[], sum: number): string {
  const le = ['0.3', '0.5', '0.8', '1.0', '1.5', '2.0', '2.5', '5.0', '10.0', '15.0', '20.0', '30.0', '40.0', '50.0', '60.0'];
  let cum = 0;
  const lines = ['# TYPE vllm:e2e_request_latency_seconds histogram'];
  le.forEach((b, i) => {
    cum += counts[i] ?? 0;
    lines.push(`vllm:e2e_request_latency_seconds_bucket{engine="0",le="${b}",model_name="m"} ${cum}`);
  });
  cum += counts[le.length] ?? 0;
  lines.push(`vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} ${cum}`);
  lines.push(
    `vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} ${cum}`,
    `vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} ${sum}`,
  );
  return `${lines.join('\n')}\n`;
}

describe('summary p95 from native buckets', () => {
  it('requests of 20-30 s give a p95 inside (20 s, 30 s], not the documented layout cap of 12.8 s', () => {
    const h = harness();
    const counts = new Array(16).fill(0);
    counts[11] = 100; // all in (20, 30]
    h.ingest('vllm', e2e(counts, 2500));
    const s = buildSummary(h.snapshot(), 1, undefined, NO_GPU, h.n.nativeHistograms('inference_request_duration_ms'));
    // histogram_quantile by hand: rank 95 of 100 in (20000, 30000] ms holding all 100: 20000 + 10000 x 0.95.
    assert.equal(s.p95_latency_ms, 29500);
    // Without the native buckets the re-bucketed series is all the summary could use: capped.
    const capped = buildSummary(h.snapshot(), 1, undefined, NO_GPU);
    assert.equal(capped.p95_latency_ms, 12800);
  });

  it('never exceeds the engine bound the rank falls under (re-bucketing then interpolating again did)', () => {
    const h = harness();
    const counts = new Array(16).fill(0);
    counts[7] = 50; // (2.5, 5]
    counts[8] = 50; // (5, 10]
    h.ingest('vllm', e2e(counts, 650));
    const s = buildSummary(h.snapshot(), 1, undefined, NO_GPU, h.n.nativeHistograms('inference_request_duration_ms'));
    // Rank 95 in (5000, 10000] ms holding 50 above 50: 5000 + 5000 x 45/50.
    assert.equal(s.p95_latency_ms, 9500);
  });
});
