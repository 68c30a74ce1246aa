// GPU probe over the native addon and AMD SMI (libamd_smi.so, dlopened at run time).

import { type AmdInitInfo, type GpuAddon, loadAddon } from './addon.js';
import type { GpuPoll, GpuProbe } from './probe.js';

export class AmdSmiProbe implements GpuProbe {
  readonly source = 'amdsmi' as const;
  readonly vendor = 'amd' as const;
  readonly minIntervalMs = 100;
  readonly driverVersion: string;

  private constructor(
    private readonly addon: GpuAddon,
    readonly info: AmdInitInfo,
  ) {
    // AMD SMI's own version stands in for the driver's in gpu_info{driver}.
    this.driverVersion = `amdsmi-${info.libVersion}`;
  }

  /** Throws with `.code` (amdsmi_unavailable, amdsmi_init_failed, amdsmi_abi_unknown) when AMD SMI cannot be used. */
  static open(libPath: string | undefined): AmdSmiProbe {
    const load = loadAddon();
    if (!load.ok) throw Object.assign(new Error(load.reason), { code: 'addon_unavailable' });
    return new AmdSmiProbe(load.addon, load.addon.amdInit(libPath ?? null));
  }

  poll(): Promise<GpuPoll> {
    return this.addon.amdPoll();
  }

  async close(): Promise<void> {
    this.addon.amdShutdown();
  }
}
