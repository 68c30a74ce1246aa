// vLLM: the Python frontend (Prometheus text), the 2026 Rust frontend (OpenMetrics 1.0 whatever
// Accept says), Ray Serve's ray_vllm: prefix and NVIDIA NIM's unprefixed names.

import type { Family } from '../../parse/exposition.js';
import { both, hasPrefix, idValue, infoDoc, openAiModel, singleLabelValue, type EngineAdapter } from '../adapter.js';

const PREFIXES = ['ray_vllm:', 'vllm:'];
/** NIM exports vLLM's names without a prefix; these are specific enough to identify it. */
const UNPREFIXED_MARKERS = ['num_requests_running', 'num_requests_waiting', 'time_to_first_token_seconds'];

export const vllm = {
  name: 'vllm',
  title: 'vLLM',
  versions: 'V1 0.8–0.11 (Python frontend, text); 0.32 (Rust frontend, OpenMetrics); V0 names as aliases; NIM, Ray Serve',
  notes:
    "Model from `model_name`; engine-wide series (HTTP) take the payload's one model, LoRA adapters keep the base model. OpenMetrics counters (Rust frontend) read like text ones. Old names are aliases, newest first, never both.",
  metricsPath: '/metrics',
  prefixes: PREFIXES,
  modelLabels: ['model_name', 'model'],
  detect(families: readonly Family[]): boolean {
    return hasPrefix(families, PREFIXES) || families.some((f) => UNPREFIXED_MARKERS.includes(f.name));
  },
  // Every family with a model_name: NIM names vLLM's families without a prefix.
  payloadModel: (families: readonly Family[]) => singleLabelValue(families, ['model_name']),
  async info(metricsUrl: string, signal: AbortSignal) {
    const [model, doc] = await both(openAiModel(metricsUrl, signal), infoDoc(metricsUrl, '/version', signal));
    return { model, version: idValue(doc?.version) };
  },
} as const satisfies EngineAdapter<'vllm'>;
