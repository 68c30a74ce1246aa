// The GPU probe interface: the native addon over NVML or AMD SMI, the vendors' CLIs (nvidia-smi
// through systeminformation, amd-smi), or a simulation, all produce the same samples.

export interface GpuError {
  code: string;
  nvmlReturn: number;
  message: string;
}

/** One device; a field the source cannot read is null, never 0. */
export interface GpuDevice {
  index: number;
  minor: number | null;
  uuid: string | null;
  name: string | null;
  pciBusId: string | null;
  utilizationGpu: number | null;
  utilizationMemory: number | null;
  memoryTotalBytes: number | null;
  memoryUsedBytes: number | null;
  memoryFreeBytes: number | null;
  temperatureC: number | null;
  /** AMD's junction (hotspot) sensor; NVIDIA reports none. */
  temperatureHotspotC: number | null;
  powerW: number | null;
  powerLimitW: number | null;
  smClockMhz: number | null;
  memClockMhz: number | null;
  eccCorrected: number | null;
  eccUncorrected: number | null;
  throttleReasons: number | null;
  /** Energy since the driver was loaded, joules; it restarts from 0 at a driver reload. */
  energyJoules: number | null;
  /** The GPU's MIG devices when it is in MIG mode; null when MIG is off or unsupported. */
  mig: MigDevice[] | null;
  /** Compute processes; on a GPU in MIG mode each names its MIG GPU and compute instance. */
  processes: Array<{
    pid: number;
    usedMemoryBytes: number | null;
    gpuInstanceId?: number | null;
    computeInstanceId?: number | null;
    /** A simulated process's name (its pid is not real); real probes leave it to /proc. */
    name?: string;
  }> | null;
  /** The device as a whole failed (GPU lost); the other fields are null. */
  error: GpuError | null;
  fieldErrors: GpuError[];
}

/** One MIG device (a compute instance of a GPU instance) of a GPU in MIG mode; null: not read. */
export interface MigDevice {
  gpuInstanceId: number | null;
  computeInstanceId: number | null;
  uuid: string | null;
  gpuInstanceSlices: number | null;
  computeInstanceSlices: number | null;
  memorySizeMb: number | null;
  utilizationGpu: number | null;
  memoryTotalBytes: number | null;
  memoryUsedBytes: number | null;
  memoryFreeBytes: number | null;
}

export interface GpuPoll {
  devices: GpuDevice[];
  xids: Array<{ index: number; xid: number }>;
  elapsedUs: number;
}

export type GpuSourceName = 'nvml' | 'amdsmi' | 'nvidia-smi' | 'amd-smi' | 'simulated';
export type GpuVendor = 'nvidia' | 'amd';

export interface GpuProbe {
  readonly source: GpuSourceName;
  readonly vendor: GpuVendor;
  readonly driverVersion: string | null;
  /** Shortest sensible interval between polls (nvidia-smi is slow). */
  readonly minIntervalMs: number;
  poll(): Promise<GpuPoll>;
  close(): Promise<void>;
}

export function emptyDevice(index: number): GpuDevice {
  return {
    index,
    minor: null,
    uuid: null,
    name: null,
    pciBusId: null,
    utilizationGpu: null,
    utilizationMemory: null,
    memoryTotalBytes: null,
    memoryUsedBytes: null,
    memoryFreeBytes: null,
    temperatureC: null,
    temperatureHotspotC: null,
    powerW: null,
    powerLimitW: null,
    smClockMhz: null,
    memClockMhz: null,
    eccCorrected: null,
    eccUncorrected: null,
    throttleReasons: null,
    energyJoules: null,
    mig: null,
    processes: null,
    error: null,
    fieldErrors: [],
  };
}
