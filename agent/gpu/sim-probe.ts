// Simulated GPUs for `infertel demo`: plausible, moving values with no hardware and no library.
// NVIDIA H100s by default, or AMD MI300Xs (`demo --gpus amd`) with AMD's extra hotspot sensor.

import { emptyDevice, type GpuDevice, type GpuPoll, type GpuProbe, type GpuVendor } from './probe.js';

interface Model {
  name: string;
  memoryMib: number;
  idleW: number;
  peakW: number;
  limitW: number;
  smClockMhz: number;
  memClockMhz: number;
  driverVersion: string;
}

const MODELS: Record<GpuVendor, Model> = {
  nvidia: {
    name: 'NVIDIA H100 80GB HBM3 (simulated)',
    memoryMib: 81559,
    idleW: 90,
    peakW: 650,
    limitW: 700,
    smClockMhz: 1980,
    memClockMhz: 2619,
    driverVersion: '550.54.15-simulated',
  },
  amd: {
    name: 'AMD Instinct MI300X (simulated)',
    memoryMib: 196592,
    idleW: 140,
    peakW: 720,
    limitW: 750,
    smClockMhz: 2100,
    memClockMhz: 1300,
    driverVersion: 'amdsmi-26.1.0-simulated',
  },
};

export class SimulatedProbe implements GpuProbe {
  readonly source = 'simulated' as const;
  readonly minIntervalMs = 100;
  readonly driverVersion: string;
  private readonly model: Model;
  private tick = 0;
  /** Joules per device: the simulated power integrated over real time, as NVML's counter is. */
  private readonly energy: number[];
  private lastPollAt: number | undefined;

  /**
   * `processes`: names of simulated engine processes sharing every GPU (the demo passes the names
   * its gpu.processRoles maps to models). Each GPU's memory goes 70% to one of them in turn and the
   * rest evenly to the others. None: the agent's own process holds it all.
   */
  constructor(
    private readonly count: number,
    readonly vendor: GpuVendor = 'nvidia',
    private readonly processes: readonly string[] = [],
  ) {
    this.energy = new Array<number>(count).fill(0);
    this.model = MODELS[vendor];
    this.driverVersion = this.model.driverVersion;
  }

  async poll(): Promise<GpuPoll> {
    this.tick++;
    const now = performance.now();
    const dtSec = this.lastPollAt === undefined ? 0 : (now - this.lastPollAt) / 1000;
    this.lastPollAt = now;
    const devices = Array.from({ length: this.count }, (_, i) => {
      const wave = 0.5 + 0.45 * Math.sin((this.tick + i * 7) / 6);
      const m = this.model;
      const amd = this.vendor === 'amd';
      const total = m.memoryMib * 1024 * 1024;
      const used = Math.round(total * (0.55 + 0.35 * wave));
      const powerW = Math.round(m.idleW + (m.peakW - m.idleW) * wave);
      const energyJoules = (this.energy[i] ?? 0) + powerW * dtSec;
      this.energy[i] = energyJoules;
      const temperatureC = Math.round(38 + 40 * wave);
      return {
        ...emptyDevice(i),
        minor: amd ? null : i,
        uuid: amd ? `${(0x10 + i).toString(16)}ff74a1-0000-1000-80e9-sim00000000${i}` : `GPU-00000000-sim0-4000-8000-${String(i).padStart(12, '0')}`,
        name: m.name,
        pciBusId: amd ? `0000:${(0x0c + 0x10 * i).toString(16).padStart(2, '0')}:00.0` : `00000000:${(0x18 + i).toString(16).toUpperCase()}:00.0`,
        utilizationGpu: Math.round(100 * wave),
        utilizationMemory: Math.round(60 * wave),
        memoryTotalBytes: total,
        memoryUsedBytes: used,
        memoryFreeBytes: total - used,
        temperatureC,
        temperatureHotspotC: amd ? temperatureC + 14 : null,
        powerW,
        powerLimitW: m.limitW,
        smClockMhz: wave > 0.2 ? m.smClockMhz : 345,
        memClockMhz: m.memClockMhz,
        eccCorrected: 0,
        eccUncorrected: 0,
        // AMD SMI has no NVML-style clock-event reasons.
        throttleReasons: amd ? null : wave > 0.2 ? 0 : 1,
        energyJoules: Math.round(energyJoules * 1000) / 1000,
        processes: this.processesOn(i, used),
      };
    });
    const xids = this.vendor === 'nvidia' && this.tick % 40 === 0 ? [{ index: 0, xid: 79 }] : [];
    return { devices, xids, elapsedUs: 1 };
  }

  private processesOn(device: number, used: number): NonNullable<GpuDevice['processes']> {
    const n = this.processes.length;
    const [only] = this.processes;
    if (n < 2) return [{ pid: process.pid, usedMemoryBytes: used, ...(only !== undefined ? { name: only } : {}) }];
    return this.processes.map((name, k) => ({ pid: 0, name, usedMemoryBytes: Math.round(used * (k === device % n ? 0.7 : 0.3 / (n - 1))) }));
  }

  async close(): Promise<void> {}
}
