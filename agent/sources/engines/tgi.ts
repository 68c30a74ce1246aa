// Hugging Face TGI (maintenance mode since December 2025: legacy, best effort). It serves one
// model per process and names it in no label, so the model comes from config or GET /info.

import type { Family } from '../../parse/exposition.js';
import { hasPrefix, idValue, infoDoc, type EngineAdapter } from '../adapter.js';

export const tgi = {
  name: 'tgi',
  title: 'TGI',
  versions: '2.x–3.3 (archived upstream)',
  notes: 'No model label: the model comes from config or `GET /info`. Counters without `_total`.',
  legacy: true,
  metricsPath: '/metrics',
  prefixes: [],
  modelLabels: [],
  detect: (families: readonly Family[]) => hasPrefix(families, ['tgi_']),
  payloadModel: () => undefined,
  async info(metricsUrl: string, signal: AbortSignal) {
    const doc = await infoDoc(metricsUrl, '/info', signal);
    return { model: idValue(doc?.model_id), version: idValue(doc?.version) };
  },
} as const satisfies EngineAdapter<'tgi'>;
