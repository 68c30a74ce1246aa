// Loads the native NVML addon (native/, built by `npm install` when cargo is there).

import { createRequire } from 'node:module';
import type { GpuPoll } from './probe.js';

export interface InitInfo {
  libPath: string;
  deviceCount: number;
  driverVersion: string | null;
  nvmlVersion: string | null;
  xidEvents: boolean;
  xidError: string | null;
}

/** The addon's API (native/typedefs.jsonl, from which the generated native/index.d.ts is made). */
export interface NvmlAddon {
  init(libPath?: string | null): InitInfo;
  poll(): Promise<GpuPoll>;
  shutdown(): boolean;
}

export type AddonLoad = { ok: true; addon: NvmlAddon } | { ok: false; reason: string };

let cached: AddonLoad | undefined;

export function loadAddon(): AddonLoad {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  try {
    cached = { ok: true, addon: require('../../../native/index.js') as NvmlAddon };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    cached = {
      ok: false,
      reason:
        e.code === 'MODULE_NOT_FOUND' || /Cannot find native binding|Cannot find module/.test(e.message)
          ? 'the NVML addon is not built (npm install builds it when cargo is available)'
          : `the NVML addon failed to load: ${e.message.split('\n')[0]}`,
    };
  }
  return cached;
}
