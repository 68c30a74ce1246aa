// The JSON summary (spec 000 §2), computed from the canonical snapshot.

import type { CanonicalFamily, HistData } from '../normalize/normalizer.js';
import { quantileAcross, quantileFromBuckets } from '../normalize/rebucket.js';

export interface GpuDeviceSummary {
  device: string;
  /** nvidia or amd. */
  vendor: 'nvidia' | 'amd';
  index: number;
  uuid: string | null;
  name: string | null;
  utilization_gpu_percent: number | null;
  memory_total_bytes: number | null;
  memory_used_bytes: number | null;
  memory_free_bytes: number | null;
  temperature_c: number | null;
  power_w: number | null;
  /** gpu_energy_joules_total of the device (monotonic across driver reloads); null without the counter. */
  energy_joules: number | null;
  error: string | null;
  stale: boolean;
  /** Set on a MIG device: its parent GPU, instance ids and profile (as gpu_mig_info has them). */
  mig?: { parent: string; gpu_instance_id: string; compute_instance_id: string; profile: string };
  nvml_unavailable?: true;
}

export interface GpuSummary {
  /** simulated: the demo's GPUs. */
  source: 'nvml' | 'amdsmi' | 'nvidia-smi' | 'amd-smi' | 'simulated' | 'none';
  /** True unless a vendor library (NVML or AMD SMI) is read: the CLIs, a simulation or nothing. */
  nvml_unavailable: boolean;
  reason?: string;
  devices: GpuDeviceSummary[];
}

/** Counts are null, not 0, when no upstream gives the metric at all (an unsupported engine says nothing). */
export interface Summary {
  requests_total: number | null;
  errors_total: number | null;
  tokens_generated_total: number | null;
  prompt_tokens_total: number | null;
  average_latency_ms: number | null;
  p95_latency_ms: number | null;
  average_tokens_per_second: number | null;
  last_request_at: string | null;
  models: string[];
  gpu: GpuSummary;
}

function family(snapshot: readonly CanonicalFamily[], name: string): CanonicalFamily | undefined {
  return snapshot.find((f) => f.metric.name === name);
}

function total(f: CanonicalFamily | undefined, filter?: (labels: Record<string, string>) => boolean): number | null {
  if (!f) return null;
  let sum = 0;
  for (const s of f?.series ?? []) if (!filter || filter(Object.fromEntries(s.labels))) sum += s.value;
  return sum;
}

function mergedHist(f: CanonicalFamily | undefined): HistData | undefined {
  let out: HistData | undefined;
  for (const s of f?.series ?? []) {
    if (!s.hist) continue;
    if (!out) out = { bounds: s.hist.bounds, cum: [...s.hist.cum], count: s.hist.count, sum: s.hist.sum };
    else if (out.bounds.length === s.hist.bounds.length) {
      for (let i = 0; i < s.hist.cum.length; i++) out.cum[i] = (out.cum[i] ?? 0) + (s.hist.cum[i] ?? 0);
      out.count += s.hist.count;
      out.sum += s.hist.sum;
    }
  }
  return out;
}

/**
 * `nativeDurations` are the request-duration histograms in the engines' own bounds: p95 is taken
 * from them, so it never exceeds a bound the engine itself drew and is not capped at the last
 * bound of the documented layout.
 */
export function buildSummary(
  snapshot: readonly CanonicalFamily[],
  profileToMs: number,
  lastRequestAt: number | undefined,
  gpu: GpuSummary,
  nativeDurations: readonly HistData[] = [],
): Summary {
  const requests = family(snapshot, 'inference_requests_total');
  const duration = mergedHist(family(snapshot, 'inference_request_duration_ms'));
  const tps = family(snapshot, 'tokens_per_second');
  const decodeRates = (tps?.series ?? []).filter((s) => s.labels.some(([k, v]) => k === 'phase' && v === 'decode'));
  const models = new Set<string>();
  for (const f of snapshot) for (const s of f.series) for (const [k, v] of s.labels) if (k === 'model') models.add(v);
  const p95 = nativeDurations.length
    ? quantileAcross(0.95, nativeDurations)
    : duration
      ? quantileFromBuckets(0.95, duration.bounds, duration.cum, duration.count)
      : undefined;
  return {
    requests_total: total(requests),
    errors_total: total(requests, (l) => l.code === '4xx' || l.code === '5xx'),
    tokens_generated_total: total(family(snapshot, 'tokens_generated_total')),
    prompt_tokens_total: total(family(snapshot, 'tokens_input_total')),
    average_latency_ms: duration && duration.count > 0 ? round((duration.sum / duration.count) * profileToMs) : null,
    p95_latency_ms: p95 === undefined ? null : round(p95 * profileToMs),
    average_tokens_per_second: decodeRates.length ? round(decodeRates.reduce((a, s) => a + s.value, 0)) : null,
    last_request_at: lastRequestAt === undefined ? null : new Date(lastRequestAt).toISOString(),
    models: [...models].sort(),
    gpu,
  };
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}
