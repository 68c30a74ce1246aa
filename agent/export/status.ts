// The status page's data (GET /api/v1/status): the current state of what the sidecar sees and a
// short history, one frame per collection cycle, kept in a ring buffer with a hard bound:
// HISTORY_FRAMES frames of at most HISTORY_SERIES values (8 bytes each, NaN where absent).
// Rates and latency quantiles are computed here from the canonical series, the quantiles with
// histogram_quantile's interpolation, over the increase between two frames.

import type { HistData } from '../normalize/histograms.js';
import type { CanonicalFamily } from '../normalize/normalizer.js';
import { quantileAcross } from '../normalize/rebucket.js';
import type { GpuSummary } from './summary.js';

export const HISTORY_FRAMES = 180;
/** Rates and latency quantiles are taken over this window (or the longest history there is). */
export const WINDOW_MS = 30_000;
export const HISTORY_SERIES = 256;
/** The history's memory bound in bytes (values only; series names are kept once). */
export const HISTORY_BYTES = HISTORY_FRAMES * HISTORY_SERIES * 8;

export interface UpstreamStatus {
  name: string;
  url: string;
  flavor: string;
  version: string | undefined;
  up: boolean;
  lastOutcome: string;
  lastDetail: string | undefined;
  lastSuccessMs: number | undefined;
  intervalMs: number;
}

export interface AgentHealth {
  seriesAdmitted: number;
  seriesCap: number;
  overflowTotal: number;
  parseErrorsTotal: number;
  rssBytes: number;
  scrapeSeconds: Record<string, number>;
}

export interface StatusInputs {
  nowMs: number;
  canonical: readonly CanonicalFamily[];
  upstreams: readonly UpstreamStatus[];
  gpu: GpuSummary;
  ready: boolean;
  health: AgentHealth;
  /**
   * Latency histograms in the engines' own bounds (Normalizer.nativeHistograms), so quantiles
   * are not capped at the documented layout's last bound; the canonical series otherwise.
   */
  native?: Partial<Record<keyof typeof LATENCIES, HistData[]>>;
}

type Labels = ReadonlyArray<[string, string]>;
const label = (labels: Labels, name: string) => labels.find(([k]) => k === name)?.[1];

function sumOf(f: CanonicalFamily | undefined, keep: (l: Labels) => boolean = () => true): number | undefined {
  if (!f) return undefined;
  let s = 0;
  let any = false;
  for (const x of f.series) {
    if (!keep(x.labels)) continue;
    s += x.value;
    any = true;
  }
  return any ? s : undefined;
}

function maxOf(f: CanonicalFamily | undefined): number | undefined {
  if (!f?.series.length) return undefined;
  return Math.max(...f.series.map((s) => s.value));
}

/** Histograms merged by layout (those with the same bounds add up bucket by bucket). */
function mergedByLayout(hists: readonly HistData[]): HistData[] {
  const byLayout = new Map<string, HistData>();
  for (const x of hists) {
    const key = x.bounds.join(',');
    const h = byLayout.get(key);
    if (!h) byLayout.set(key, { bounds: x.bounds, cum: [...x.cum], count: x.count, sum: x.sum });
    else {
      for (let i = 0; i < h.cum.length; i++) h.cum[i] = (h.cum[i] ?? 0) + (x.cum[i] ?? 0);
      h.count += x.count;
      h.sum += x.sum;
    }
  }
  return [...byLayout.values()];
}

/** What was observed between two snapshots of the same histograms (a counter reset yields the later one whole). */
function increase(later: HistData[], earlier: HistData[] | undefined): HistData[] {
  return later.map((h) => {
    const e = earlier?.find((x) => x.bounds.join(',') === h.bounds.join(','));
    if (!e || e.count > h.count) return h;
    return { bounds: h.bounds, cum: h.cum.map((c, i) => c - (e.cum[i] ?? 0)), count: h.count - e.count, sum: h.sum - e.sum };
  });
}

const QUANTILES = [0.5, 0.95, 0.99] as const;
const LATENCIES = { request: 'inference_request_duration_ms', ttft: 'inference_ttft_ms' } as const;

export class StatusHistory {
  private readonly names: string[] = [];
  private readonly index = new Map<string, number>();
  private readonly frames: Array<{ t: number; values: Float64Array }> = [];
  /** Cumulative inputs of recent frames, oldest first, for rates and quantiles over WINDOW_MS. */
  private readonly recent: Array<{ t: number; counters: Map<string, number>; hists: Map<string, HistData[]> }> = [];
  /** Values that found no place in the history (more than HISTORY_SERIES names), counted. */
  dropped = 0;
  private last: StatusInputs | undefined;
  private lastCurrent: Record<string, number> = {};

  /** `minFrameMs`: frames closer together than this replace the newest instead of adding one. */
  constructor(
    private readonly toMs: number,
    private readonly minFrameMs = 0,
  ) {}

  /** Records one frame (after a collection cycle; several upstreams finishing together make one frame). */
  record(inputs: StatusInputs): void {
    this.last = inputs;
    const newest = this.frames[this.frames.length - 1];
    if (newest && inputs.nowMs - newest.t < this.minFrameMs) {
      this.frames.pop();
      this.recent.pop();
    }
    const fam = (name: string) => inputs.canonical.find((f) => f.metric.name === name);
    const values: Record<string, number | undefined> = {};
    const counters = new Map<string, number>();
    const requests = fam('inference_requests_total');
    for (const code of ['2xx', '4xx', '5xx', 'unknown']) {
      const v = sumOf(requests, (l) => label(l, 'code') === code);
      if (v !== undefined) counters.set(`requests_${code}`, v);
    }
    const preempt = sumOf(fam('preemptions_total'));
    if (preempt !== undefined) counters.set('preemptions', preempt);
    const hists = new Map<string, HistData[]>();
    for (const [key, name] of Object.entries(LATENCIES) as Array<[keyof typeof LATENCIES, string]>) {
      const native = inputs.native?.[key];
      hists.set(key, mergedByLayout(native ?? (fam(name)?.series ?? []).flatMap((s) => (s.hist ? [s.hist] : []))));
    }
    for (let next = this.recent[1]; next && inputs.nowMs - next.t >= WINDOW_MS; next = this.recent[1]) this.recent.shift();
    const prev = this.recent[0];
    if (prev && inputs.nowMs > prev.t) {
      const dt = (inputs.nowMs - prev.t) / 1000;
      for (const [k, v] of counters) {
        const p = prev.counters.get(k);
        if (p !== undefined) values[`rate_${k}`] = Math.max(0, v >= p ? (v - p) / dt : v / dt);
      }
      for (const [key, h] of hists) {
        const inc = increase(h, prev.hists.get(key));
        for (const q of QUANTILES) {
          const v = quantileAcross(q, inc);
          if (v !== undefined) values[`${key}_p${Math.round(q * 100)}_ms`] = v * this.toMs;
        }
      }
    }
    this.recent.push({ t: inputs.nowMs, counters, hists });
    values.active_streams = sumOf(fam('inference_active_streams'));
    values.queue_depth = sumOf(fam('inference_queue_depth'));
    const tps = fam('tokens_per_second');
    values.tokens_per_second_prefill = sumOf(tps, (l) => label(l, 'phase') === 'prefill');
    values.tokens_per_second_decode = sumOf(tps, (l) => label(l, 'phase') === 'decode');
    values.kv_cache_usage_ratio = maxOf(fam('kv_cache_usage_ratio'));
    values.kv_cache_hit_ratio = maxOf(fam('kv_cache_hit_ratio'));
    for (const d of inputs.gpu.devices) {
      if (d.utilization_gpu_percent !== null) values[`gpu_${d.device}_utilization_percent`] = d.utilization_gpu_percent;
      if (d.memory_used_bytes !== null) values[`gpu_${d.device}_memory_used_bytes`] = d.memory_used_bytes;
      if (d.power_w !== null) values[`gpu_${d.device}_power_w`] = d.power_w;
      if (d.temperature_c !== null) values[`gpu_${d.device}_temperature_c`] = d.temperature_c;
    }
    for (const s of fam('gpu_sm_clock_hertz')?.series ?? []) {
      const device = label(s.labels, 'device');
      if (device) values[`gpu_${device}_sm_clock_hz`] = s.value;
    }
    values.agent_rss_bytes = inputs.health.rssBytes;
    const row = new Float64Array(HISTORY_SERIES).fill(Number.NaN);
    const current: Record<string, number> = {};
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined || !Number.isFinite(v)) continue;
      current[k] = v;
      let i = this.index.get(k);
      if (i === undefined) {
        if (this.names.length >= HISTORY_SERIES) {
          this.dropped++;
          continue;
        }
        i = this.names.length;
        this.names.push(k);
        this.index.set(k, i);
      }
      row[i] = v;
    }
    this.lastCurrent = current;
    this.frames.push({ t: inputs.nowMs, values: row });
    if (this.frames.length > HISTORY_FRAMES) this.frames.shift();
  }

  /** The document GET /api/v1/status serves. */
  document(pod: string | undefined): unknown {
    const last = this.last;
    const fam = (name: string) => last?.canonical.find((f) => f.metric.name === name);
    const contexts: Record<string, number> = {};
    for (const s of fam('inference_requests_by_context_total')?.series ?? []) {
      const b = label(s.labels, 'context_bucket');
      if (b) contexts[b] = (contexts[b] ?? 0) + s.value;
    }
    const models = new Set<string>();
    for (const f of last?.canonical ?? []) for (const s of f.series) for (const [k, v] of s.labels) if (k === 'model') models.add(v);
    const throttle: Record<string, string[]> = {};
    for (const s of fam('gpu_throttle_reasons')?.series ?? []) {
      const device = label(s.labels, 'device');
      const reason = label(s.labels, 'reason');
      if (device && reason && s.value === 1) (throttle[device] ??= []).push(reason);
    }
    const series: Record<string, Array<number | null>> = {};
    this.names.forEach((name, i) => {
      series[name] = this.frames.map((f) => {
        const v = f.values[i];
        return v === undefined || Number.isNaN(v) ? null : v;
      });
    });
    return {
      pod: pod ?? null,
      ready: last?.ready ?? false,
      models: [...models].sort(),
      upstreams: last?.upstreams ?? [],
      gpu: last?.gpu ?? null,
      health: last ? { ...last.health, historyBytes: HISTORY_BYTES, historyDropped: this.dropped } : null,
      current: this.lastCurrent,
      context_buckets: contexts,
      throttle,
      history: { t: this.frames.map((f) => f.t), series },
    };
  }
}
