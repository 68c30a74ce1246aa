// The status page's data: latency quantiles checked against promtool's histogram_quantile on the
// same buckets, rates, the history's hard bound, and the routes (CSP, off switch).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { HISTORY_FRAMES, HISTORY_SERIES, StatusHistory, type StatusInputs } from '../../agent/export/status.js';
import { quantileAcross } from '../../agent/normalize/rebucket.js';
import { buildCatalogue } from '../../agent/catalogue/catalogue.js';
import type { CanonicalFamily } from '../../agent/normalize/normalizer.js';
import { promtoolPath, tempDir } from '../helpers.js';
import { rng } from '../../agent/demo/sim-common.js';

const catalogue = buildCatalogue('ms');
const metric = (name: string) => catalogue.byName.get(name)!;

describe('status quantiles against promtool', { skip: !promtoolPath() && 'no promtool' }, () => {
  it('histogram_quantile on the same buckets gives the same p50, p95 and p99 (40 random histograms)', () => {
    const r = rng(42);
    const bounds = catalogue.byName.get('inference_request_duration_ms')!.bounds!;
    const tests: string[] = [];
    const inputs: string[] = [];
    for (let c = 0; c < 40; c++) {
      let cum = 0;
      const cums = bounds.map(() => (cum += r() < 0.4 ? 0 : Math.floor(r() * 50)));
      const count = cum + (r() < 0.3 ? Math.floor(r() * 20) : 0);
      bounds.forEach((b, i) => {
        inputs.push(`      - series: 'h${c}_bucket{le="${b}"}'\n        values: '${cums[i]}'`);
      });
      inputs.push(`      - series: 'h${c}_bucket{le="+Inf"}'\n        values: '${count}'`);
      for (const q of [0.5, 0.95, 0.99]) {
        const ours = quantileAcross(q, [{ bounds, cum: cums, count }]);
        if (ours === undefined) continue;
        tests.push(
          `      - expr: histogram_quantile(${q}, sum by (le) (h${c}_bucket))\n        eval_time: 0m\n        exp_samples:\n          - labels: '{}'\n            value: ${ours}`,
        );
      }
    }
    const dir = tempDir('infertel-quantiles-');
    const file = join(dir, 'quantiles.test.yaml');
    writeFileSync(
      file,
      `evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n${inputs.join('\n')}\n    promql_expr_test:\n${tests.join('\n')}\n`,
    );
    assert.ok(tests.length > 100);
    const res = spawnSync('promtool', ['test', 'rules', file], { encoding: 'utf8' });
    assert.equal(res.status, 0, (res.stdout + res.stderr).slice(0, 3000));
  });
});

function inputsAt(nowMs: number, requests2xx: number, durations: number[], devices = 1): StatusInputs {
  const bounds = metric('inference_request_duration_ms').bounds!;
  const cum = bounds.map((b) => durations.filter((d) => d <= b).length);
  const canonical: CanonicalFamily[] = [
    {
      metric: metric('inference_requests_total'),
      series: [
        {
          labels: [
            ['model', 'm'],
            ['route', 'all'],
            ['code', '2xx'],
          ],
          value: requests2xx,
          hist: undefined,
        },
      ],
    },
    {
      metric: metric('inference_request_duration_ms'),
      series: [
        {
          labels: [
            ['model', 'm'],
            ['route', 'all'],
          ],
          value: durations.length,
          hist: { bounds, cum, count: durations.length, sum: durations.reduce((a, b) => a + b, 0) },
        },
      ],
    },
  ];
  const gpuDevices = Array.from({ length: devices }, (_, i) => ({
    device: `nvidia${i}`,
    vendor: 'nvidia' as const,
    index: i,
    uuid: null,
    name: null,
    utilization_gpu_percent: 50,
    memory_total_bytes: 1,
    memory_used_bytes: 1,
    memory_free_bytes: 0,
    temperature_c: 60,
    power_w: 300,
    energy_joules: null,
    error: null,
    stale: false,
  }));
  return {
    nowMs,
    canonical,
    upstreams: [
      {
        name: 'u',
        url: 'http://127.0.0.1:8000/metrics',
        flavor: 'vllm',
        version: '0.11.0',
        up: true,
        lastOutcome: 'ok',
        lastDetail: undefined,
        lastSuccessMs: nowMs,
        intervalMs: 2000,
      },
    ],
    gpu: { source: 'simulated', nvml_unavailable: true, devices: gpuDevices },
    ready: true,
    health: { seriesAdmitted: 10, seriesCap: 50000, overflowTotal: 0, parseErrorsTotal: 0, rssBytes: 1, scrapeSeconds: {} },
  };
}

describe('status history', () => {
  it('rates and quantiles are over the last interval (increase between frames)', () => {
    const h = new StatusHistory(1);
    h.record(inputsAt(1_000_000, 100, [30, 30, 30]));
    // 10 s later: 60 more requests; the new observations are all in (12800, +Inf) or (800, 1600].
    h.record(inputsAt(1_010_000, 160, [30, 30, 30, 1000, 1000, 1000, 1000]));
    const doc = h.document('pod-a') as { current: Record<string, number>; history: { t: number[] } };
    assert.equal(doc.current.rate_requests_2xx, 6);
    // Rank 0.95 x 4 = 3.8 in (800, 1600] holding all 4 new ones: 800 + 800 x 3.8/4.
    assert.equal(doc.current.request_p95_ms, 1560);
    assert.deepEqual(doc.history.t, [1_000_000, 1_010_000]);
  });

  it('keeps at most HISTORY_FRAMES frames and HISTORY_SERIES series, counting what did not fit', () => {
    const h = new StatusHistory(1);
    for (let i = 0; i < HISTORY_FRAMES + 50; i++) h.record(inputsAt(1_000_000 + i * 1000, i, [], 100));
    const doc = h.document(undefined) as { history: { t: number[]; series: Record<string, unknown[]> }; health: { historyDropped: number } };
    assert.equal(doc.history.t.length, HISTORY_FRAMES);
    assert.equal(Object.keys(doc.history.series).length, HISTORY_SERIES);
    assert.ok(doc.health.historyDropped > 0);
  });
});
