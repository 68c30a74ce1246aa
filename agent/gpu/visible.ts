// Which GPUs the pod may report: NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES, by index or
// UUID, and MIG devices by their MIG-<uuid> (the parent GPU of a listed MIG device is visible too:
// its power, temperature and clocks are the slice's as well). For AMD, ROCR_VISIBLE_DEVICES and
// then HIP_VISIBLE_DEVICES, the way the ROCm runtime applies them.

import type { GpuDevice, GpuVendor, MigDevice } from './probe.js';

function parse(value: string | undefined): string[] | 'all' | 'none' {
  if (value === undefined) return 'all';
  const v = value.trim();
  if (v === '' || v === 'all') return 'all';
  if (v === 'none' || v === 'void' || v === 'NoDevFiles') return 'none';
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

const isMigEntry = (entry: string) => entry.startsWith('MIG-');

function matches(entry: string, d: GpuDevice, position: number, byPosition: boolean): boolean {
  if (/^\d+$/.test(entry)) return Number(entry) === (byPosition ? position : d.index);
  if (isMigEntry(entry)) return (d.mig ?? []).some((m) => m.uuid === entry);
  return d.uuid !== null && (d.uuid === entry || d.uuid.startsWith(entry) || `GPU-${entry}` === d.uuid);
}

/** The MIG devices of a visible GPU the pod may report: those listed by MIG-<uuid>, else all. */
export function visibleMig(parent: GpuDevice, env: NodeJS.ProcessEnv): MigDevice[] {
  let out = parent.mig ?? [];
  for (const name of ['NVIDIA_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES']) {
    const spec = parse(env[name]);
    if (spec === 'all' || spec === 'none') continue;
    const listed = spec.filter(isMigEntry);
    if (listed.length) out = out.filter((m) => m.uuid !== null && listed.includes(m.uuid));
  }
  return out;
}

/** Each vendor's variables in the order its runtime applies them, and whether indexes count positions in what the earlier one left. */
const VISIBILITY: Record<GpuVendor, ReadonlyArray<readonly [string, boolean]>> = {
  nvidia: [
    ['NVIDIA_VISIBLE_DEVICES', false],
    ['CUDA_VISIBLE_DEVICES', true],
  ],
  // ROCR_VISIBLE_DEVICES names devices by index or UUID; HIP_VISIBLE_DEVICES counts within what it left.
  amd: [
    ['ROCR_VISIBLE_DEVICES', false],
    ['HIP_VISIBLE_DEVICES', true],
  ],
};

/**
 * Devices the environment lets this pod see. NVIDIA_VISIBLE_DEVICES indexes name NVML indexes;
 * CUDA_VISIBLE_DEVICES indexes count within what NVIDIA_VISIBLE_DEVICES left, as CUDA does; the
 * AMD pair works the same way.
 */
export function visibleDevices(devices: GpuDevice[], env: NodeJS.ProcessEnv, vendor: GpuVendor = 'nvidia'): GpuDevice[] {
  let out = devices;
  for (const [name, byPosition] of VISIBILITY[vendor]) {
    const spec = parse(env[name]);
    if (spec === 'all') continue;
    if (spec === 'none') return [];
    const current = out;
    out = current.filter((d, position) => spec.some((e) => matches(e, d, position, byPosition)));
  }
  return out;
}
