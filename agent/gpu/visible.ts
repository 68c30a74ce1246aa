// Which GPUs the pod may report: NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES, by index or UUID.

import type { GpuDevice } from './probe.js';

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

function matches(entry: string, d: GpuDevice, position: number, byPosition: boolean): boolean {
  if (/^\d+$/.test(entry)) return Number(entry) === (byPosition ? position : d.index);
  return d.uuid !== null && (d.uuid === entry || d.uuid.startsWith(entry) || `GPU-${entry}` === d.uuid);
}

/**
 * Devices the environment lets this pod see. NVIDIA_VISIBLE_DEVICES indexes name NVML indexes;
 * CUDA_VISIBLE_DEVICES indexes count within what NVIDIA_VISIBLE_DEVICES left, as CUDA does.
 */
export function visibleDevices(devices: GpuDevice[], env: NodeJS.ProcessEnv): GpuDevice[] {
  let out = devices;
  for (const [name, byPosition] of [
    ['NVIDIA_VISIBLE_DEVICES', false],
    ['CUDA_VISIBLE_DEVICES', true],
  ] as const) {
    const spec = parse(env[name]);
    if (spec === 'all') continue;
    if (spec === 'none') return [];
    const current = out;
    out = current.filter((d, position) => spec.some((e) => matches(e, d, position, byPosition)));
  }
  return out;
}
