// Simulated GPUs for `infertel demo`: plausible, moving values with no hardware and no library.

import { emptyDevice, type GpuPoll, type GpuProbe } from './probe.js';

export class SimulatedProbe implements GpuProbe {
  readonly source = 'simulated' as const;
  readonly minIntervalMs = 100;
  readonly driverVersion = '550.54.15-simulated';
  private tick = 0;
  /** Joules per device: the simulated power integrated over real time, as NVML's counter is. */
  private readonly energy: number[];
  private lastPollAt: number | undefined;

  constructor(private readonly count: number) {
    this.energy = new Array<number>(count).fill(0);
  }

  async poll(): Promise<GpuPoll> {
    this.tick++;
    const now = performance.now();
    const dtSec = this.lastPollAt === undefined ? 0 : (now - this.lastPollAt) / 1000;
    this.lastPollAt = now;
    const devices = Array.from({ length: this.count }, (_, i) => {
      const wave = 0.5 + 0.45 * Math.sin((this.tick + i * 7) / 6);
      const total = 81559 * 1024 * 1024;
      const used = Math.round(total * (0.55 + 0.35 * wave));
      const powerW = Math.round(90 + 560 * wave);
      this.energy[i]! += powerW * dtSec;
      return {
        ...emptyDevice(i),
        minor: i,
        uuid: `GPU-00000000-sim0-4000-8000-${String(i).padStart(12, '0')}`,
        name: 'NVIDIA H100 80GB HBM3 (simulated)',
        pciBusId: `00000000:${(0x18 + i).toString(16).toUpperCase()}:00.0`,
        utilizationGpu: Math.round(100 * wave),
        utilizationMemory: Math.round(60 * wave),
        memoryTotalBytes: total,
        memoryUsedBytes: used,
        memoryFreeBytes: total - used,
        temperatureC: Math.round(38 + 40 * wave),
        powerW,
        powerLimitW: 700,
        smClockMhz: wave > 0.2 ? 1980 : 345,
        memClockMhz: 2619,
        eccCorrected: 0,
        eccUncorrected: 0,
        throttleReasons: wave > 0.2 ? 0 : 1,
        energyJoules: Math.round(this.energy[i]! * 1000) / 1000,
        processes: [{ pid: process.pid, usedMemoryBytes: used }],
      };
    });
    return { devices, xids: this.tick % 40 === 0 ? [{ index: 0, xid: 79 }] : [], elapsedUs: 1 };
  }

  async close(): Promise<void> {}
}
