// TensorRT-LLM: `trtllm-serve`'s own `trtllm_*` set (served at /prometheus/metrics), and the
// Triton TRT-LLM backend's `nv_trt_llm_*` gauges, whose meaning sits in a label value
// (`request_type`, `kv_cache_block_type`). A backend payload also carries Triton's core families,
// so this flavor takes the catalogue's triton sources too.

import type { Family } from '../../parse/exposition.js';
import { hasPrefix, openAiModel, singleLabelValue, type EngineAdapter } from '../adapter.js';
import { isTritonGpuFamily } from './triton.js';

const PREFIXES = ['trtllm_', 'trtllm:'];

export const trtllm = {
  name: 'trtllm',
  title: 'TensorRT-LLM',
  versions: '`trtllm-serve` 1.0–1.2 (`trtllm_`); Triton TRT-LLM backend 0.x (`nv_trt_llm_`, older `_statistics` names)',
  notes:
    '`trtllm-serve` at `/prometheus/metrics` (a bare port in the annotation means that path). Backend gauges split by label: running = `request_type="scheduled"`, waiting = `"waiting"`, KV = `kv_cache_block_type="fraction"`. Takes Triton\'s core sources too.',
  metricsPath: '/prometheus/metrics',
  prefixes: PREFIXES,
  modelLabels: ['model_name', 'model'],
  inherits: 'triton',
  detect: (families: readonly Family[]) => hasPrefix(families, [...PREFIXES, 'nv_trt_llm_']),
  passthroughDrop: (name: string, gpuTelemetry: boolean) => gpuTelemetry && isTritonGpuFamily(name),
  payloadModel: (families: readonly Family[]) => singleLabelValue(families, ['model_name'], (f) => hasPrefix([f], PREFIXES)),
  async info(metricsUrl: string, signal: AbortSignal) {
    return { model: await openAiModel(metricsUrl, signal) };
  },
} as const satisfies EngineAdapter<'trtllm'>;
