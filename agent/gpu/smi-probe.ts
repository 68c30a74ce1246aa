// GPU probe over nvidia-smi through systeminformation, in a worker thread. Lower precision than
// NVML (whole percents, MiB) and far more expensive, so it polls at most every 30 s.

import { Worker } from 'node:worker_threads';
import { spawnSync } from 'node:child_process';
import { emptyDevice, type GpuDevice, type GpuPoll, type GpuProbe } from './probe.js';

interface Controller {
  vendor?: string;
  model?: string;
  name?: string;
  pciBus?: string;
  busAddress?: string;
  memoryTotal?: number;
  memoryUsed?: number;
  memoryFree?: number;
  utilizationGpu?: number;
  utilizationMemory?: number;
  temperatureGpu?: number;
  powerDraw?: number;
  powerLimit?: number;
  clockCore?: number;
  clockMemory?: number;
  driverVersion?: string;
}

const MIB = 1024 * 1024;
const num = (v: number | undefined, scale = 1) => (typeof v === 'number' && Number.isFinite(v) ? v * scale : null);

export function controllersToDevices(controllers: Controller[]): GpuDevice[] {
  return controllers
    .filter((c) => /nvidia/i.test(`${c.vendor ?? ''} ${c.model ?? ''} ${c.name ?? ''}`))
    .map((c, index) => ({
      ...emptyDevice(index),
      name: c.name ?? c.model ?? null,
      pciBusId: c.pciBus ?? c.busAddress ?? null,
      utilizationGpu: num(c.utilizationGpu),
      utilizationMemory: num(c.utilizationMemory),
      memoryTotalBytes: num(c.memoryTotal, MIB),
      memoryUsedBytes: num(c.memoryUsed, MIB),
      memoryFreeBytes: num(c.memoryFree, MIB),
      temperatureC: num(c.temperatureGpu),
      powerW: num(c.powerDraw),
      powerLimitW: num(c.powerLimit),
      smClockMhz: num(c.clockCore),
      memClockMhz: num(c.clockMemory),
    }));
}

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Why the nvidia-smi path cannot work here, or undefined when it can. systeminformation asks
 * nvidia-smi only about controllers lspci lists (seen on a real H100 image without pciutils:
 * no GPUs at all), so both must be on PATH.
 */
export function smiUnavailable(): string | undefined {
  if (!onPath('nvidia-smi')) return 'nvidia-smi: not on PATH';
  if (!onPath('lspci')) return 'nvidia-smi: lspci (pciutils) is not on PATH, and systeminformation reads GPUs only through it';
  return undefined;
}

export class SmiProbe implements GpuProbe {
  readonly source = 'nvidia-smi' as const;
  readonly vendor = 'nvidia' as const;
  readonly minIntervalMs = 30_000;
  driverVersion: string | null = null;
  private readonly worker = new Worker(new URL('./smi-worker.js', import.meta.url));
  private pending: Array<(m: { ok: boolean; controllers?: Controller[]; error?: string }) => void> = [];

  constructor() {
    this.worker.unref();
    this.worker.on('message', (m) => this.pending.shift()?.(m));
  }

  async poll(): Promise<GpuPoll> {
    const t0 = performance.now();
    const m = await new Promise<{ ok: boolean; controllers?: Controller[]; error?: string }>((resolve) => {
      this.pending.push(resolve);
      this.worker.postMessage('poll');
    });
    if (!m.ok) throw new Error(m.error ?? 'systeminformation failed');
    this.driverVersion = m.controllers?.find((c) => c.driverVersion)?.driverVersion ?? null;
    return { devices: controllersToDevices(m.controllers ?? []), xids: [], elapsedUs: (performance.now() - t0) * 1000 };
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
