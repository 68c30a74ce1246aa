// The efficiency joins on hand-built canonical series: each expected value is worked out here
// from the numbers written, and the GPU table is checked name by name.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildCatalogue } from '../../agent/catalogue/catalogue.js';
import { EfficiencyJoin, peakOf, podPeak } from '../../agent/normalize/efficiency.js';
import type { CanonicalFamily } from '../../agent/normalize/normalizer.js';

const cat = buildCatalogue('ms');
const family = (name: string, series: Array<[Record<string, string>, number]>): CanonicalFamily => ({
  metric: cat.byName.get(name)!,
  series: series.map(([labels, value]) => ({ labels: Object.entries(labels), value, hist: undefined })),
});

interface State {
  energy: number[];
  tokens: Record<string, number>;
  flops?: number;
  read?: number;
  write?: number;
  gpus?: string[];
  /** gpu_process_mem_bytes: [device index, process label, bytes]. */
  processes?: Array<[number, string, number]>;
}

function families(s: State): CanonicalFamily[] {
  const gpus = s.gpus ?? ['NVIDIA H100 80GB HBM3', 'NVIDIA H100 80GB HBM3'];
  return [
    family(
      'gpu_energy_joules_total',
      s.energy.map((e, i) => [{ device: `nvidia${i}` }, e]),
    ),
    family(
      'gpu_info',
      gpus.map((name, i) => [{ device: `nvidia${i}`, uuid: `GPU-${i}`, name, pci_bus_id: '', driver: '' }, 1]),
    ),
    family(
      'tokens_generated_total',
      Object.entries(s.tokens).map(([model, v]) => [{ model, phase: 'decode' }, v]),
    ),
    ...(s.flops !== undefined ? [family('inference_estimated_flops_per_gpu_total', [[{ model: 'm' }, s.flops]])] : []),
    ...(s.read !== undefined ? [family('inference_estimated_read_bytes_per_gpu_total', [[{ model: 'm' }, s.read]])] : []),
    ...(s.write !== undefined ? [family('inference_estimated_write_bytes_per_gpu_total', [[{ model: 'm' }, s.write]])] : []),
    ...(s.processes
      ? [
          family(
            'gpu_process_mem_bytes',
            s.processes.map(([i, process, bytes]) => [{ device: `nvidia${i}`, process }, bytes]),
          ),
        ]
      : []),
  ];
}

const value = (j: EfficiencyJoin, metric: string, model = 'm') =>
  j
    .families()
    .find((f) => f.metric.name === metric)
    ?.series.find((s) => s.labels.some(([k, v]) => k === 'model' && v === model))?.value;

const NO_OVERRIDE = { peakTflops: undefined, peakMemoryBandwidthGBs: undefined };

describe('efficiency joins', () => {
  it('the GPU table: each device name to its peak, unknown names to none', () => {
    const rows: Array<[string, string | undefined]> = [
      ['NVIDIA H100 80GB HBM3', 'H100 SXM'],
      ['NVIDIA H100 PCIe', 'H100 PCIe'],
      ['NVIDIA H100 NVL', 'H100 NVL'],
      ['NVIDIA H200', 'H200'],
      ['NVIDIA H200 NVL', 'H200'],
      ['NVIDIA GH200 480GB', undefined],
      ['NVIDIA B200', 'B200'],
      ['NVIDIA A100-SXM4-80GB', 'A100 SXM 80GB'],
      ['NVIDIA A100 80GB PCIe', 'A100 PCIe 80GB'],
      ['NVIDIA A100-SXM4-40GB', 'A100 40GB'],
      ['NVIDIA L40S', 'L40S'],
      ['NVIDIA L4', 'L4'],
      ['NVIDIA L40', undefined],
      ['AMD Instinct MI300X', 'MI300X'],
      ['AMD Instinct MI325X', 'MI325X'],
      ['Tesla T4', undefined],
    ];
    for (const [name, want] of rows) assert.equal(peakOf(name)?.name, want, name);
    assert.deepEqual(podPeak(['NVIDIA H100 80GB HBM3', 'NVIDIA L4'], NO_OVERRIDE), { tflops: undefined, gbs: undefined }, 'mixed GPUs: no peak');
    assert.deepEqual(podPeak(['Tesla T4'], { peakTflops: 65, peakMemoryBandwidthGBs: 320 }), { tflops: 65, gbs: 320 }, 'config wins');
    assert.deepEqual(podPeak([], NO_OVERRIDE), { tflops: undefined, gbs: undefined });
  });

  it('energy per token, MFU and bandwidth over one interval', () => {
    const j = new EfficiencyJoin(cat, NO_OVERRIDE);
    j.advance(0, families({ energy: [1000, 2000], tokens: { m: 10_000 }, flops: 0, read: 0, write: 0 }), 5);
    assert.equal(j.families().length, 0, 'one point is no interval');
    // 10 s later: +600 J over both GPUs, +300 tokens: 2 J a token. 9.89e14 FLOP in 10 s on an
    // H100 (989 TFLOP/s): 0.1. 3.35e10 bytes in 10 s against 3,350 GB/s: 0.001.
    j.advance(10_000, families({ energy: [1400, 2200], tokens: { m: 10_300 }, flops: 9.89e14, read: 1.675e10, write: 1.675e10 }), 5);
    assert.equal(value(j, 'energy_per_token_joules'), 2);
    assert.ok(Math.abs(value(j, 'model_flops_utilization_ratio')! - 0.1) < 1e-12);
    assert.ok(Math.abs(value(j, 'memory_bandwidth_utilization_ratio')! - 0.001) < 1e-12);
  });

  it("two models generating on shared GPUs: each GPU's energy split by the memory their processes hold", () => {
    const j = new EfficiencyJoin(cat, NO_OVERRIDE);
    // GPU 0: m holds 30 GiB, n 10 GiB, an unnamed process 40 GiB (not counted). GPU 1: only n.
    const processes: Array<[number, string, number]> = [
      [0, 'm', 30],
      [0, 'n', 10],
      [0, 'python3', 40],
      [1, 'n', 50],
    ];
    j.advance(0, families({ energy: [0, 0], tokens: { m: 0, n: 0 }, processes }), 5);
    j.advance(10_000, families({ energy: [400, 100], tokens: { m: 100, n: 50 }, processes }), 5);
    // m: 3/4 of GPU 0's 400 J = 300 J over 100 tokens. n: 1/4 of 400 + all of GPU 1's 100 = 200 J
    // over 50. (An even split would give 250 J each: 2.5 and 5.)
    assert.equal(value(j, 'energy_per_token_joules', 'm'), 3);
    assert.equal(value(j, 'energy_per_token_joules', 'n'), 4);

    const unattributable = new EfficiencyJoin(cat, NO_OVERRIDE);
    const onlyGpu0: Array<[number, string, number]> = [
      [0, 'm', 30],
      [0, 'n', 10],
      [1, 'python3', 50],
    ];
    unattributable.advance(0, families({ energy: [0, 0], tokens: { m: 0, n: 0 }, processes: onlyGpu0 }), 5);
    unattributable.advance(10_000, families({ energy: [400, 200], tokens: { m: 100, n: 50 }, processes: onlyGpu0 }), 5);
    assert.equal(value(unattributable, 'energy_per_token_joules', 'm'), undefined, "GPU 1 holds no served model's memory: nobody gets a value");
    assert.equal(value(unattributable, 'energy_per_token_joules', 'n'), undefined);
  });

  it('no series where it cannot be honest: two models generating, no tokens, a counter that went down, an unknown GPU, too short a window', () => {
    const twoModels = new EfficiencyJoin(cat, NO_OVERRIDE);
    twoModels.advance(0, families({ energy: [0, 0], tokens: { m: 0, n: 0 } }), 5);
    twoModels.advance(10_000, families({ energy: [10, 10], tokens: { m: 5, n: 5 } }), 5);
    assert.equal(value(twoModels, 'energy_per_token_joules'), undefined, 'no process memory names a model: the energy cannot be split');

    const idle = new EfficiencyJoin(cat, NO_OVERRIDE);
    idle.advance(0, families({ energy: [0, 0], tokens: { m: 7, n: 3 } }), 5);
    idle.advance(10_000, families({ energy: [10, 10], tokens: { m: 17, n: 3 } }), 5);
    assert.equal(value(idle, 'energy_per_token_joules', 'm'), 2, 'one model generating while another idles: all energy is its');
    idle.advance(20_000, families({ energy: [20, 20], tokens: { m: 17, n: 3 } }), 5);
    assert.equal(value(idle, 'energy_per_token_joules', 'm'), undefined, 'no tokens in the window: no series, not infinity');

    const reset = new EfficiencyJoin(cat, NO_OVERRIDE);
    reset.advance(0, families({ energy: [100, 100], tokens: { m: 0 }, flops: 1e15 }), 5);
    reset.advance(10_000, families({ energy: [50, 50], tokens: { m: 10 }, flops: 1e14 }), 5);
    assert.equal(reset.families().length, 0);

    const unknown = new EfficiencyJoin(cat, NO_OVERRIDE);
    unknown.advance(0, families({ energy: [0], tokens: { m: 0 }, flops: 0, gpus: ['Tesla T4'] }), 5);
    unknown.advance(10_000, families({ energy: [1], tokens: { m: 1 }, flops: 1e12, gpus: ['Tesla T4'] }), 5);
    assert.equal(value(unknown, 'model_flops_utilization_ratio'), undefined, 'no guess for a GPU not in the table');
    assert.equal(value(unknown, 'energy_per_token_joules'), 1, 'energy needs no peak');

    const short = new EfficiencyJoin(cat, NO_OVERRIDE);
    short.advance(0, families({ energy: [0, 0], tokens: { m: 0 }, flops: 0 }), 5);
    short.advance(2_000, families({ energy: [0, 0], tokens: { m: 4 }, flops: 2e14 }), 5);
    assert.equal(short.families().length, 0, 'under minSeconds no rate, and no new GPU reading no energy window');
    short.advance(6_000, families({ energy: [12, 12], tokens: { m: 8 }, flops: 6e14 }), 5);
    assert.equal(value(short, 'energy_per_token_joules'), 3, 'from the last energy reading: 24 J / 8 tokens');
    // 6e14 FLOP over the 6 s since the first point, on an H100: 1e14 / 9.89e14.
    assert.ok(Math.abs(value(short, 'model_flops_utilization_ratio')! - 1e14 / 9.89e14) < 1e-12);
  });

  it("MFU and bandwidth run between the readings of the engine, not between the agent's cycles", () => {
    const j = new EfficiencyJoin(cat, NO_OVERRIDE);
    const readAt = new Map([['m', 0]]);
    // The first answer was read 1.5 s after the engine was asked, the next at once.
    j.advance(1_500, families({ energy: [0, 0], tokens: { m: 0 }, flops: 0, read: 0, write: 0 }), 5, (model) => readAt.get(model));
    readAt.set('m', 10_000);
    j.advance(10_000, families({ energy: [0, 0], tokens: { m: 0 }, flops: 9.89e15, read: 1.675e11, write: 1.675e11 }), 5, (model) => readAt.get(model));
    // 9.89e15 FLOP over the 10 s between the readings on an H100 (989 TFLOP/s) is 1.0 exactly;
    // over the agent's 8.5 s it would be 1.18, above what the GPU can do.
    assert.ok(Math.abs(value(j, 'model_flops_utilization_ratio')! - 1) < 1e-12, String(value(j, 'model_flops_utilization_ratio')));
    assert.ok(Math.abs(value(j, 'memory_bandwidth_utilization_ratio')! - 0.01) < 1e-12);
    j.advance(12_000, families({ energy: [0, 0], tokens: { m: 0 }, flops: 9.99e15, read: 1.7e11, write: 1.7e11 }), 5, (model) => readAt.get(model));
    assert.ok(Math.abs(value(j, 'model_flops_utilization_ratio')! - 1) < 1e-12, 'no new reading: the last window stands');

    // Two models read at different times each get their own window.
    const two = new EfficiencyJoin(cat, NO_OVERRIDE);
    const flops = (m: number, n: number): CanonicalFamily[] => [
      ...families({ energy: [0, 0], tokens: { m: 0, n: 0 } }),
      family('inference_estimated_flops_per_gpu_total', [
        [{ model: 'm' }, m],
        [{ model: 'n' }, n],
      ]),
    ];
    const times = new Map([
      ['m', 0],
      ['n', 3_000],
    ]);
    two.advance(3_000, flops(0, 0), 5, (model) => times.get(model));
    times.set('m', 10_000);
    times.set('n', 8_000);
    two.advance(10_000, flops(9.89e14, 9.89e14), 5, (model) => times.get(model));
    assert.ok(Math.abs(value(two, 'model_flops_utilization_ratio', 'm')! - 0.1) < 1e-12, 'm: 10 s');
    assert.ok(Math.abs(value(two, 'model_flops_utilization_ratio', 'n')! - 0.2) < 1e-12, 'n: 5 s');
  });

  it("per-GPU counters summed over an engine's data-parallel ranks give one GPU's share: their mean", () => {
    const j = new EfficiencyJoin(cat, NO_OVERRIDE);
    const ranked = (flops: number, bytes: number, sources: number): CanonicalFamily[] => [
      ...families({ energy: [0, 0], tokens: { m: 0 } }),
      { metric: cat.byName.get('inference_estimated_flops_per_gpu_total')!, series: [{ labels: [['model', 'm']], value: flops, hist: undefined, sources }] },
      {
        metric: cat.byName.get('inference_estimated_read_bytes_per_gpu_total')!,
        series: [{ labels: [['model', 'm']], value: bytes, hist: undefined, sources }],
      },
    ];
    j.advance(0, ranked(0, 0, 2), 5);
    // Two ranks, each 9.89e14 FLOP and 3.35e10 bytes on its own H100 in 10 s: 0.1 and 0.001 each.
    j.advance(10_000, ranked(2 * 9.89e14, 2 * 3.35e10, 2), 5);
    assert.ok(Math.abs(value(j, 'model_flops_utilization_ratio')! - 0.1) < 1e-12, String(value(j, 'model_flops_utilization_ratio')));
    assert.ok(Math.abs(value(j, 'memory_bandwidth_utilization_ratio')! - 0.001) < 1e-12);
  });
});

describe('kv_cache_bytes: usage x the pool on one GPU, on each GPU the pod sees', () => {
  const GIB = 1024 ** 3;
  const kv = (fams: CanonicalFamily[]) => {
    const j = new EfficiencyJoin(cat, NO_OVERRIDE);
    j.advance(0, fams, 0);
    return Object.fromEntries(
      (j.families().find((f) => f.metric.name === 'kv_cache_bytes')?.series ?? []).map((s) => [s.labels.map(([k, v]) => `${k}=${v}`).join(','), s.value]),
    );
  };
  const gpus = (devices: string[]) =>
    family(
      'gpu_mem_total_bytes',
      devices.map((device) => [{ device }, 80 * GIB]),
    );
  const capacity = (rows: Array<[string, number]>) =>
    family(
      'inference_kv_cache_capacity_bytes',
      rows.map(([model, v]) => [{ model }, v]),
    );
  const usage = (rows: Array<[string, number]>) =>
    family(
      'kv_cache_usage_ratio',
      rows.map(([model, v]) => [{ model }, v]),
    );
  const rows: Array<[string, CanonicalFamily[], Record<string, number>]> = [
    [
      'one model on two GPUs: 0.25 of a 40 GiB pool on each',
      [gpus(['nvidia0', 'nvidia1']), capacity([['m', 40 * GIB]]), usage([['m', 0.25]])],
      { 'model=m,device=nvidia0': 10 * GIB, 'model=m,device=nvidia1': 10 * GIB },
    ],
    ['AMD devices the same way', [gpus(['amd0']), capacity([['m', 100 * GIB]]), usage([['m', 0.5]])], { 'model=m,device=amd0': 50 * GIB }],
    [
      'MIG devices in the pod: the engine is on them, not on their parent',
      [
        gpus(['nvidia0', 'nvidia0-gi1-ci0']),
        family('gpu_mig_info', [[{ device: 'nvidia0-gi1-ci0', parent: 'nvidia0', gpu_i_id: '1', gpu_i_profile: '3g.40gb', ci_id: '0' }, 1]]),
        capacity([['m', 20 * GIB]]),
        usage([['m', 0.5]]),
      ],
      { 'model=m,device=nvidia0-gi1-ci0': 10 * GIB },
    ],
    ['an engine that reports no pool size (vLLM): none', [gpus(['nvidia0']), usage([['m', 0.9]])], {}],
    [
      'two models in the pod cannot be told apart on the GPUs: none',
      [
        gpus(['nvidia0']),
        capacity([
          ['a', GIB],
          ['b', GIB],
        ]),
        usage([
          ['a', 0.1],
          ['b', 0.2],
        ]),
      ],
      {},
    ],
    ['no usage ratio for the model: none', [gpus(['nvidia0']), capacity([['m', GIB]]), usage([['other', 0.5]])], {}],
    ['no GPU telemetry: none', [capacity([['m', GIB]]), usage([['m', 0.5]])], {}],
  ];
  for (const [name, fams, want] of rows) it(name, () => assert.deepEqual(kv(fams), want));
});
