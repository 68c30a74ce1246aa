// llama.cpp's llama-server (`llamacpp:`, no labels at all). The model comes from /v1/models or
// /props. Two families lie about their type (a high-water mark and a ratio declared as counters)
// and are treated as gauges; the two throughput gauges are averages over "since the previous
// scrape", which every scraper resets for the others, so they are dropped in favour of the
// token counters.

import type { Family } from '../../parse/exposition.js';
import { both, hasPrefix, idValue, infoDoc, openAiModel, type EngineAdapter } from '../adapter.js';

const PER_SCRAPE_GAUGES = new Set(['llamacpp:prompt_tokens_seconds', 'llamacpp:predicted_tokens_seconds']);

export const llamacpp = {
  name: 'llamacpp',
  title: 'llama.cpp `llama-server`',
  versions: 'b5000–b7xxx (since the `n_tokens_max` rename)',
  notes:
    'No labels: the model comes from `/v1/models` or `/props`. `n_tokens_max` and `n_busy_slots_per_decode` are declared counters but are a high-water mark and a ratio: treated as gauges. The per-scrape throughput gauges are dropped (each scraper resets them for the others); `tokens_per_second` is derived from the counters.',
  metricsPath: '/metrics',
  prefixes: ['llamacpp:'],
  modelLabels: [],
  detect: (families: readonly Family[]) => hasPrefix(families, ['llamacpp:']),
  retype: { 'llamacpp:n_tokens_max': 'gauge', 'llamacpp:n_past_max': 'gauge', 'llamacpp:n_busy_slots_per_decode': 'gauge' },
  passthroughDrop: (name: string) => PER_SCRAPE_GAUGES.has(name),
  payloadModel: () => undefined,
  async info(metricsUrl: string, signal: AbortSignal) {
    const [props, listed] = await both(infoDoc(metricsUrl, '/props', signal), openAiModel(metricsUrl, signal));
    const path = idValue(props?.model_path);
    const model = listed ?? idValue(props?.model_alias) ?? (path ? path.split('/').pop() : undefined);
    return { model, version: idValue(props?.build_info) };
  },
} as const satisfies EngineAdapter<'llamacpp'>;
