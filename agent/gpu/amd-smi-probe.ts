// GPU probe over the `amd-smi` CLI, the last resort before none when the addon or libamd_smi.so
// cannot be used. Each poll is a child process (so the event loop never waits on it) and costs
// hundreds of milliseconds, so it runs at most every 30 s. Identity (bus id, UUID, name) is read
// once; `amd-smi metric --json` each poll. Output shapes differ by release: a bare array (ROCm 6.x)
// or {"gpu_data": [...]} (ROCm 7), values as {"value", "unit"} objects, bare numbers or "N/A".

import { execFile } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { emptyDevice, type GpuDevice, type GpuPoll, type GpuProbe } from './probe.js';

type Json = Record<string, unknown>;

const CALL_TIMEOUT_MS = 20_000;
const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;

function run(cli: string, args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    execFile(cli, [...args, '--json'], { timeout: CALL_TIMEOUT_MS, maxBuffer: MAX_OUTPUT_BYTES }, (err, stdout) => {
      if (err) return reject(new Error(`amd-smi ${args.join(' ')}: ${err.message.split('\n')[0]}`));
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`amd-smi ${args.join(' ')}: output is not JSON`));
      }
    });
  });
}

/** The per-GPU records of any release's output. */
export function gpuRecords(out: unknown): Json[] {
  const list = Array.isArray(out) ? out : ((out as Json | null)?.gpu_data ?? []);
  return Array.isArray(list) ? list.filter((r): r is Json => typeof r === 'object' && r !== null) : [];
}

const SCALE: Record<string, number> = {
  '%': 1,
  W: 1,
  mW: 1e-3,
  uW: 1e-6,
  C: 1,
  MHz: 1,
  GHz: 1e3,
  B: 1,
  KB: 1024,
  MB: 1024 ** 2,
  GB: 1024 ** 3,
  J: 1,
  mJ: 1e-3,
  uJ: 1e-6,
};

/**
 * A number in the unit wanted from {"value", "unit"}, a bare number, or a "42 W" string; null for
 * "N/A" or a unit it cannot convert. amd-smi's MB are MiB (an MI300X reports 196592 MB of VRAM).
 */
export function quantity(v: unknown, want: string): number | null {
  let value: unknown = v;
  let unit: string | undefined;
  if (typeof v === 'object' && v !== null && 'value' in v) {
    value = (v as Json).value;
    unit = typeof (v as Json).unit === 'string' ? ((v as Json).unit as string) : undefined;
  } else if (typeof v === 'string') {
    const m = /^\s*(-?[\d.]+)\s*([A-Za-z%]*)\s*$/.exec(v);
    if (!m) return null;
    value = Number(m[1]);
    unit = m[2] || undefined;
  }
  if (typeof value === 'string') value = Number(value);
  if (typeof value !== 'number' || !Number.isFinite(value)) return null;
  if (unit === undefined || unit === want) return value;
  const from = SCALE[unit];
  const to = SCALE[want];
  return from === undefined || to === undefined ? null : (value * from) / to;
}

function at(r: Json, ...path: string[]): unknown {
  let v: unknown = r;
  for (const k of path) v = typeof v === 'object' && v !== null ? (v as Json)[k] : undefined;
  return v;
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== 'N/A' && v !== '' ? v : null;
}

export interface Identity {
  bdf: string | null;
  uuid: string | null;
  name: string | null;
}

/** One device from a `metric` record and what `list`/`static` said about that GPU. */
export function metricToDevice(r: Json, index: number, id: Identity | undefined): GpuDevice {
  const total = quantity(at(r, 'mem_usage', 'total_vram'), 'B');
  const used = quantity(at(r, 'mem_usage', 'used_vram'), 'B');
  const free = quantity(at(r, 'mem_usage', 'free_vram'), 'B');
  const energy = quantity(at(r, 'energy', 'total_energy_consumption'), 'J');
  const ecc = (k: string) => quantity(at(r, 'ecc', k), '');
  return {
    ...emptyDevice(index),
    uuid: id?.uuid ?? null,
    name: id?.name ?? null,
    pciBusId: id?.bdf ?? null,
    utilizationGpu: quantity(at(r, 'usage', 'gfx_activity'), '%'),
    utilizationMemory: quantity(at(r, 'usage', 'umc_activity'), '%'),
    memoryTotalBytes: total,
    memoryUsedBytes: used,
    memoryFreeBytes: free ?? (total !== null && used !== null ? total - used : null),
    temperatureC: quantity(at(r, 'temperature', 'edge'), 'C'),
    temperatureHotspotC: quantity(at(r, 'temperature', 'hotspot'), 'C'),
    powerW: quantity(at(r, 'power', 'socket_power'), 'W'),
    smClockMhz: quantity(at(r, 'clock', 'gfx_0', 'clk'), 'MHz'),
    memClockMhz: quantity(at(r, 'clock', 'mem_0', 'clk'), 'MHz'),
    eccCorrected: ecc('total_correctable_count'),
    eccUncorrected: ecc('total_uncorrectable_count'),
    energyJoules: energy,
  };
}

export function amdSmiUnavailable(cli = 'amd-smi'): string | undefined {
  return spawnSync('sh', ['-c', `command -v ${cli}`], { stdio: 'ignore' }).status === 0 ? undefined : 'amd-smi: not on PATH';
}

export class AmdSmiCliProbe implements GpuProbe {
  readonly source = 'amd-smi' as const;
  readonly vendor = 'amd' as const;
  readonly minIntervalMs = 30_000;
  driverVersion: string | null = null;
  private identity: Map<number, Identity> | undefined;

  constructor(private readonly cli = 'amd-smi') {}

  private async identify(): Promise<Map<number, Identity>> {
    const out = new Map<number, Identity>();
    const [list, asic] = await Promise.all([run(this.cli, ['list']), run(this.cli, ['static', '--asic']).catch(() => null)]);
    for (const r of gpuRecords(list)) {
      const gpu = Number(r.gpu);
      if (Number.isInteger(gpu)) out.set(gpu, { bdf: str(r.bdf), uuid: str(r.uuid), name: null });
    }
    for (const r of gpuRecords(asic)) {
      const entry = out.get(Number(r.gpu));
      if (entry) entry.name = str(at(r, 'asic', 'market_name'));
    }
    return out;
  }

  async poll(): Promise<GpuPoll> {
    const t0 = performance.now();
    this.identity ??= await this.identify();
    const records = gpuRecords(await run(this.cli, ['metric']));
    const devices = records.map((r, i) => {
      const gpu = Number.isInteger(Number(r.gpu)) ? Number(r.gpu) : i;
      return metricToDevice(r, gpu, this.identity?.get(gpu));
    });
    return { devices, xids: [], elapsedUs: (performance.now() - t0) * 1000 };
  }

  async close(): Promise<void> {}
}
