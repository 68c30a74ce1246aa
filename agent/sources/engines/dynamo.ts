// NVIDIA Dynamo's HTTP frontend (`dynamo_frontend_*`). A Dynamo worker's system port carries the
// engine's own families (vLLM, SGLang, TRT-LLM) and is detected as that engine.

import type { Family } from '../../parse/exposition.js';
import { hasPrefix, openAiModel, singleLabelValue, type EngineAdapter } from '../adapter.js';

export const dynamo = {
  name: 'dynamo',
  title: 'NVIDIA Dynamo frontend',
  versions: '0.7–1.6',
  notes:
    "Frontend only; a worker's system port carries its engine's own families and is detected as that engine. `inflight_requests` includes requests awaiting their first token.",
  metricsPath: '/metrics',
  prefixes: ['dynamo_frontend_'],
  modelLabels: ['model', 'model_name'],
  detect: (families: readonly Family[]) => hasPrefix(families, ['dynamo_frontend_']),
  payloadModel: (families: readonly Family[]) => singleLabelValue(families, ['model', 'model_name'], (f) => f.name.startsWith('dynamo_frontend_')),
  async info(metricsUrl: string, signal: AbortSignal) {
    return { model: await openAiModel(metricsUrl, signal) };
  },
} as const satisfies EngineAdapter<'dynamo'>;
