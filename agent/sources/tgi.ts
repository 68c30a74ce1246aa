// Hugging Face TGI flavor. TGI serves one model per process and names it in no label, so the
// model comes from config or from the router's GET /info (`model_id`).

import axios from 'axios';
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
    const url = new URL('/info', metricsUrl).toString();
    const res = await axios.get(url, { signal, timeout: 2000, validateStatus: () => true, responseType: 'json' });
    const id = res.status === 200 && res.data && typeof res.data === 'object' ? (res.data as { model_id?: unknown }).model_id : undefined;
    return typeof id === 'string' && id.length > 0 ? id : undefined;
  },
};
