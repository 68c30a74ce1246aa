// NVIDIA Triton Inference Server core (`nv_inference_*`). Latencies are cumulative microsecond
// counters; the only histogram is the opt-in first-response one, in milliseconds. Its GPU
// families (`nv_gpu_*`, `nv_energy_consumption`) are not re-exported while infertel reads the
// GPUs itself, so no device is reported twice.

import type { Family } from '../../parse/exposition.js';
import { hasPrefix, idValue, infoDoc, singleLabelValue, type EngineAdapter } from '../adapter.js';

/** Triton families that describe the GPUs rather than the models. */
export function isTritonGpuFamily(name: string): boolean {
  return name.startsWith('nv_gpu_') || name === 'nv_energy_consumption';
}

export const triton = {
  name: 'triton',
  title: 'Triton (core)',
  versions: '2.40–2.60 (24.x–25.x containers)',
  notes:
    'Microsecond counters become ms counters plus derived means; TTFT only from the opt-in first-response histogram (ms). `nv_gpu_*` and `nv_energy_consumption` are not re-exported while infertel reads the GPUs. One series per model: an ensemble and its steps each count a request.',
  metricsPath: '/metrics',
  prefixes: [],
  modelLabels: ['model'],
  detect: (families: readonly Family[]) => hasPrefix(families, ['nv_inference_']),
  passthroughDrop: (name: string, gpuTelemetry: boolean) => gpuTelemetry && isTritonGpuFamily(name),
  payloadModel: (families: readonly Family[]) => singleLabelValue(families, ['model'], (f) => f.name.startsWith('nv_inference_')),
  async info(metricsUrl: string, signal: AbortSignal) {
    // The metrics port (8002) may not serve the HTTP API; then nothing is learned.
    return { version: idValue((await infoDoc(metricsUrl, '/v2', signal))?.version) };
  },
} as const satisfies EngineAdapter<'triton'>;
