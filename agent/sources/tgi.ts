// Hugging Face TGI flavor. TGI serves one model per process and names it in no label, so the
// model comes from config or from the router's GET /info (`model_id`).

import { lookupJson } from '../net/http-client.js';
import type { Family } from '../parse/exposition.js';
import type { FlavorAdapter } from './flavor.js';

export const tgiFlavor: FlavorAdapter = {
  name: 'tgi',
  modelLabels: [],
  familyKey: (name: string) => name,
  detect(families: readonly Family[]): boolean {
    return families.some((f) => f.name.startsWith('tgi_'));
  },
  payloadModel: () => undefined,
  async lookupModel(metricsUrl: string, signal: AbortSignal): Promise<string | undefined> {
    const info = await lookupJson(new URL('/info', metricsUrl).toString(), signal);
    const id = info?.model_id;
    return typeof id === 'string' && id.length > 0 && id.length <= 256 ? id : undefined;
  },
};
