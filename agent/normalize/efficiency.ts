// Efficiency joins: series that need the GPU and the engine at once, which a per-pod sidecar holds
// and no exporter does (dcgm-exporter has no engine data, the engines no NVML). They are derived
// from canonical series after each engine cycle, like the normaliser's rates (over the time between
// two readings of the engine's counters, not between the agent's cycles): energy per generated
// token, model FLOP utilisation and memory bandwidth utilisation against the GPU model's peak, and
// KV cache bytes on each GPU.

import type { CanonicalMetric, Catalogue } from '../catalogue/catalogue.js';
import type { CanonicalFamily, CanonicalSeries } from './normalizer.js';

/** Peak dense (no sparsity) BF16 tensor throughput and HBM bandwidth of one GPU. */
export interface GpuPeak {
  name: string;
  bf16Tflops: number;
  memoryGBs: number;
}

/**
 * The GPU models infertel knows, matched against NVML's (or AMD SMI's) device name, most specific
 * first. Vendor datasheets, dense figures (NVIDIA lists BF16 "with sparsity", twice these).
 * A name that matches none gives no utilisation series, never a guess; gpu.peakTflops and
 * gpu.peakMemoryBandwidthGBs set them for any other GPU.
 */
export const GPU_PEAKS: ReadonlyArray<GpuPeak & { match: RegExp }> = [
  { match: /\bB200\b/, name: 'B200', bf16Tflops: 2250, memoryGBs: 8000 },
  { match: /(^|[^G])H200\b/, name: 'H200', bf16Tflops: 989, memoryGBs: 4800 },
  { match: /\bH100 NVL\b/, name: 'H100 NVL', bf16Tflops: 835, memoryGBs: 3900 },
  { match: /\bH100\b.*PCIe/i, name: 'H100 PCIe', bf16Tflops: 756, memoryGBs: 2000 },
  { match: /\bH100\b.*HBM3|H100 SXM/, name: 'H100 SXM', bf16Tflops: 989, memoryGBs: 3350 },
  { match: /\bA100-SXM4-80GB\b/, name: 'A100 SXM 80GB', bf16Tflops: 312, memoryGBs: 2039 },
  { match: /\bA100 80GB PCIe\b/, name: 'A100 PCIe 80GB', bf16Tflops: 312, memoryGBs: 1935 },
  { match: /\bA100-(SXM4|PCIE)-40GB\b/i, name: 'A100 40GB', bf16Tflops: 312, memoryGBs: 1555 },
  { match: /\bL40S\b/, name: 'L40S', bf16Tflops: 362, memoryGBs: 864 },
  { match: /\bL4\b/, name: 'L4', bf16Tflops: 121, memoryGBs: 300 },
  { match: /\bMI325X\b/, name: 'MI325X', bf16Tflops: 1307.4, memoryGBs: 6000 },
  { match: /\bMI300X\b/, name: 'MI300X', bf16Tflops: 1307.4, memoryGBs: 5300 },
];

export function peakOf(deviceName: string): GpuPeak | undefined {
  const p = GPU_PEAKS.find((g) => g.match.test(deviceName));
  return p && { name: p.name, bf16Tflops: p.bf16Tflops, memoryGBs: p.memoryGBs };
}

export interface PeakOverride {
  peakTflops: number | undefined;
  peakMemoryBandwidthGBs: number | undefined;
}

/** The pod's GPUs' peaks: the override, else the table's entry shared by every device; undefined when unknown or mixed. */
export function podPeak(deviceNames: readonly string[], override: PeakOverride): { tflops: number | undefined; gbs: number | undefined } {
  // A MIG slice has a fraction of the GPU's peak that its name does not give: only the override counts.
  if (deviceNames.some((n) => n.includes(' MIG '))) return { tflops: override.peakTflops, gbs: override.peakMemoryBandwidthGBs };
  const peaks = deviceNames.map(peakOf);
  const first = peaks[0];
  const same = first !== undefined && peaks.every((p) => p?.name === first.name);
  return {
    tflops: override.peakTflops ?? (same ? first.bf16Tflops : undefined),
    gbs: override.peakMemoryBandwidthGBs ?? (same ? first.memoryGBs : undefined),
  };
}

const label = (s: CanonicalSeries, name: string) => s.labels.find(([k]) => k === name)?.[1];

function sumBy(fam: CanonicalFamily | undefined, key: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of fam?.series ?? []) {
    const k = label(s, key);
    if (k !== undefined) out.set(k, (out.get(k) ?? 0) + s.value);
  }
  return out;
}

interface Totals {
  atMs: number;
  energy: number | undefined;
  /** Energy per device, for splitting it between models that share the GPUs. */
  energyByDevice: Map<string, number>;
  tokens: Map<string, number>;
  flops: Map<string, number>;
  bytes: Map<string, number>;
  /** Per model: the engine ranks whose per-GPU counters add up in flops and bytes. */
  ranks: Map<string, number>;
}

/** One model's FLOP and byte counters at the start of its utilisation window, and when they were read. */
interface Reading {
  atMs: number;
  flops: number | undefined;
  bytes: number | undefined;
}

export class EfficiencyJoin {
  /** The totals at the last new GPU energy reading, and what that window gave. */
  private energyPoint: Totals | undefined;
  private lastEnergyPerToken: Array<{ model: string; value: number }> = [];
  /** Per model: where its current utilisation window starts, and the ratios of its last window long enough to measure. */
  private readonly windows = new Map<string, Reading>();
  private readonly rates = new Map<string, Array<[string, number]>>();
  private current: CanonicalFamily[] = [];
  private readonly metrics: Map<string, CanonicalMetric>;

  constructor(
    catalogue: Catalogue,
    private readonly override: PeakOverride,
  ) {
    this.metrics = new Map(catalogue.metrics.filter((m) => m.sources?.some((s) => s.flavor === 'join')).map((m) => [m.name, m]));
  }

  /**
   * Moves the windows with `families` (the canonical series now): each model's utilisation ratios
   * over the time since its last reading at least `minSeconds` older, energy per token at each new
   * GPU energy reading. `readAt` says when a model's engine counters were read (`nowMs` stands in
   * where it says nothing): the counters moved between readings, not between the agent's cycles. A
   * counter that went down in between (a reset the normaliser could not bridge) skips that window.
   */
  advance(nowMs: number, families: readonly CanonicalFamily[], minSeconds: number, readAt: (model: string) => number | undefined = () => undefined): void {
    const fam = (name: string) => families.find((f) => f.metric.name === name);
    const energyFam = fam('gpu_energy_joules_total');
    const bytes = sumBy(fam('inference_estimated_read_bytes_per_gpu_total'), 'model');
    for (const [m, v] of sumBy(fam('inference_estimated_write_bytes_per_gpu_total'), 'model')) bytes.set(m, (bytes.get(m) ?? 0) + v);
    const now: Totals = {
      atMs: nowMs,
      energy: energyFam?.series.length ? energyFam.series.reduce((a, s) => a + s.value, 0) : undefined,
      energyByDevice: sumBy(energyFam, 'device'),
      tokens: sumBy(fam('tokens_generated_total'), 'model'),
      flops: sumBy(fam('inference_estimated_flops_per_gpu_total'), 'model'),
      bytes,
      ranks: ranksBy(fam('inference_estimated_flops_per_gpu_total'), fam('inference_estimated_read_bytes_per_gpu_total')),
    };
    const out = new Map<string, CanonicalSeries[]>();
    const put = (metric: string, model: string, value: number) => {
      if (!Number.isFinite(value) || value < 0) return;
      let list = out.get(metric);
      if (!list) out.set(metric, (list = []));
      list.push({ labels: [['model', model]], value, hist: undefined });
    };
    this.energyWindow(nowMs, now, memoryByModel(fam('gpu_process_mem_bytes')));
    for (const e of this.lastEnergyPerToken) put('energy_per_token_joules', e.model, e.value);
    const names = (fam('gpu_info')?.series ?? []).map((s) => label(s, 'name') ?? '');
    this.utilisation(now, podPeak(names, this.override), minSeconds, readAt);
    for (const [model, ratios] of this.rates) for (const [metric, value] of ratios) put(metric, model, value);
    const kv = kvBytes(fam);
    if (kv.length) out.set('kv_cache_bytes', kv);
    this.current = [...out].flatMap(([name, series]) => {
      const metric = this.metrics.get(name);
      return metric ? [{ metric, series }] : [];
    });
  }

  /** Each model's FLOP and bandwidth utilisation, over the time between two readings of its counters. */
  private utilisation(
    now: Totals,
    peak: { tflops: number | undefined; gbs: number | undefined },
    minSeconds: number,
    readAt: (model: string) => number | undefined,
  ): void {
    const models = new Set([...now.flops.keys(), ...now.bytes.keys()]);
    for (const model of this.windows.keys()) {
      if (models.has(model)) continue;
      this.windows.delete(model);
      this.rates.delete(model);
    }
    for (const model of models) {
      const reading: Reading = { atMs: readAt(model) ?? now.atMs, flops: now.flops.get(model), bytes: now.bytes.get(model) };
      const start = this.windows.get(model);
      if (!start) {
        this.windows.set(model, reading);
        continue;
      }
      const seconds = (reading.atMs - start.atMs) / 1000;
      if (seconds < minSeconds || seconds <= 0) continue;
      this.windows.set(model, reading);
      const ratios: Array<[string, number]> = [];
      // Each rank counts its own GPUs' work: the pod's per-GPU rate is their mean.
      const ranks = Math.max(1, now.ranks.get(model) ?? 1);
      const rate = (after: number | undefined, before: number | undefined) =>
        after !== undefined && before !== undefined && after >= before ? (after - before) / seconds / ranks : undefined;
      const flops = rate(reading.flops, start.flops);
      if (peak.tflops !== undefined && flops !== undefined) ratios.push(['model_flops_utilization_ratio', flops / (peak.tflops * 1e12)]);
      const bandwidth = rate(reading.bytes, start.bytes);
      if (peak.gbs !== undefined && bandwidth !== undefined) ratios.push(['memory_bandwidth_utilization_ratio', bandwidth / (peak.gbs * 1e9)]);
      this.rates.set(model, ratios);
    }
  }

  /**
   * Energy per token. With one model generating, the energy of every GPU the pod sees is that
   * model's. With several, each GPU's energy is split between the models by the GPU memory their
   * engines' processes hold on it (gpu_process_mem_bytes, whose `process` is a model's name when
   * gpu.processRoles maps the engine's process to it); a GPU on which no served model's process
   * holds memory cannot be attributed, and then no model gets a value. The GPU is polled on its own interval,
   * so a window runs from one new energy reading to the next.
   */
  private energyWindow(nowMs: number, now: Totals, memory: Map<string, Map<string, number>>): void {
    const e0 = this.energyPoint;
    if (now.energy === undefined) {
      this.energyPoint = undefined;
      this.lastEnergyPerToken = [];
      return;
    }
    if (e0 && now.energy === e0.energy) return;
    this.energyPoint = { ...now, atMs: nowMs };
    this.lastEnergyPerToken = [];
    if (e0?.energy === undefined || now.energy < e0.energy) return;
    const tokens = new Map([...now.tokens].map(([m, t]) => [m, t - (e0.tokens.get(m) ?? t)]));
    const generating = [...tokens].filter(([, t]) => t > 0);
    const [only] = generating;
    if (only && generating.length === 1) {
      const [model, generated] = only;
      this.lastEnergyPerToken = [{ model, value: (now.energy - e0.energy) / generated }];
      return;
    }
    if (generating.length === 0) return;
    const joules = new Map<string, number>();
    for (const [device, e] of now.energyByDevice) {
      const before = e0.energyByDevice.get(device);
      // Only memory of models the engines serve counts: an unnamed process's share is nobody's.
      const held = [...(memory.get(device) ?? [])].filter(([model]) => now.tokens.has(model));
      const total = held.reduce((a, [, b]) => a + b, 0);
      if (before === undefined || e < before || total <= 0) return;
      for (const [model, bytes] of held) joules.set(model, (joules.get(model) ?? 0) + ((e - before) * bytes) / total);
    }
    this.lastEnergyPerToken = generating.flatMap(([model, generated]) => {
      const j = joules.get(model);
      return j === undefined ? [] : [{ model, value: j / generated }];
    });
  }

  families(): CanonicalFamily[] {
    return this.current;
  }
}

/** Per model, the engine series (data-parallel ranks) behind its per-GPU counters: the most any of them has. */
function ranksBy(...families: Array<CanonicalFamily | undefined>): Map<string, number> {
  const out = new Map<string, number>();
  for (const fam of families)
    for (const s of fam?.series ?? []) {
      const model = label(s, 'model');
      if (model !== undefined && s.sources !== undefined) out.set(model, Math.max(out.get(model) ?? 0, s.sources));
    }
  return out;
}

/** GPU memory per device and model, from processes whose `process` label names a model. */
function memoryByModel(processes: CanonicalFamily | undefined): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  for (const s of processes?.series ?? []) {
    const device = label(s, 'device');
    const process = label(s, 'process');
    if (device === undefined || process === undefined) continue;
    let byModel = out.get(device);
    if (!byModel) out.set(device, (byModel = new Map()));
    byModel.set(process, (byModel.get(process) ?? 0) + s.value);
  }
  return out;
}

/**
 * KV cache bytes on each GPU the pod sees: the model's usage ratio times its pool on one GPU. The
 * engine's ranks and replicas size their pools alike, so every GPU holds that much; with MIG
 * devices in the pod the engine runs on those, not on their parents. Several models in the pod
 * share the GPUs in a way the series cannot say: then there is none.
 */
function kvBytes(fam: (name: string) => CanonicalFamily | undefined): CanonicalSeries[] {
  const [capacity, ...others] = fam('inference_kv_cache_capacity_bytes')?.series ?? [];
  if (!capacity || others.length) return [];
  const model = label(capacity, 'model');
  const usage = fam('kv_cache_usage_ratio')?.series.find((s) => label(s, 'model') === model);
  if (model === undefined || !usage) return [];
  const mig = (fam('gpu_mig_info')?.series ?? []).map((s) => label(s, 'device'));
  const devices = mig.length ? mig : (fam('gpu_mem_total_bytes')?.series ?? []).map((s) => label(s, 'device'));
  const bytes = Math.round(usage.value * capacity.value);
  return devices.flatMap((device) =>
    device === undefined
      ? []
      : [
          {
            labels: [
              ['model', model],
              ['device', device],
            ],
            value: bytes,
            hist: undefined,
          },
        ],
  );
}
