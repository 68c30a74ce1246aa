// GPU probe over the native addon and NVML.

import { type GpuAddon, type InitInfo, loadAddon } from './addon.js';
import type { GpuPoll, GpuProbe } from './probe.js';

export class NvmlProbe implements GpuProbe {
  readonly source = 'nvml' as const;
  readonly vendor = 'nvidia' as const;
  readonly minIntervalMs = 100;
  readonly driverVersion: string | null;

  private constructor(
    private readonly addon: GpuAddon,
    readonly info: InitInfo,
  ) {
    this.driverVersion = info.driverVersion;
  }

  /** Throws with `.code` (nvml_unavailable, nvml_init_failed) when NVML cannot be used. */
  static open(libPath: string | undefined): NvmlProbe {
    const load = loadAddon();
    if (!load.ok) throw Object.assign(new Error(load.reason), { code: 'addon_unavailable' });
    return new NvmlProbe(load.addon, load.addon.init(libPath ?? null));
  }

  poll(): Promise<GpuPoll> {
    return this.addon.poll();
  }

  async close(): Promise<void> {
    this.addon.shutdown();
  }
}
