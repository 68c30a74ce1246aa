// vLLM flavor (V0, V1, Ray Serve's ray_vllm: prefix, NVIDIA NIM's unprefixed names).

import type { Family } from '../parse/exposition.js';
import { labelValue } from '../parse/exposition.js';
import type { FlavorAdapter } from './flavor.js';

const PREFIXES = ['vllm:', 'ray_vllm:'];
/** NIM exports vLLM's names without a prefix; these are specific enough to identify it. */
const UNPREFIXED_MARKERS = ['num_requests_running', 'num_requests_waiting', 'time_to_first_token_seconds'];

export const vllmFlavor: FlavorAdapter = {
  name: 'vllm',
  modelLabels: ['model_name', 'model'],
  familyKey(name: string): string {
    for (const p of PREFIXES) if (name.startsWith(p)) return name.slice(p.length);
    return name;
  },
  detect(families: readonly Family[]): boolean {
    return families.some((f) => PREFIXES.some((p) => f.name.startsWith(p)) || UNPREFIXED_MARKERS.includes(f.name));
  },
  payloadModel(families: readonly Family[]): string | undefined {
    const models = new Set<string>();
    // Every family with a model_name: NIM names vLLM's families without a prefix.
    for (const f of families) {
      for (const s of f.samples) {
        const m = labelValue(s.labels, 'model_name');
        if (m !== undefined) models.add(m);
        if (models.size > 1) return undefined;
      }
    }
    return models.size === 1 ? [...models][0] : undefined;
  },
  async lookupModel(): Promise<string | undefined> {
    return undefined;
  },
};
