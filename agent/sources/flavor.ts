// What the agent knows about each engine's exposition habits, and the explicit flavor table.

import type { Flavor } from '../catalogue/catalogue.js';
import type { Family } from '../parse/exposition.js';
import { tgiFlavor } from './tgi.js';
import { vllmFlavor } from './vllm.js';

export interface FlavorAdapter {
  name: Flavor;
  /** Upstream label names that carry the model, in order of preference. */
  modelLabels: readonly string[];
  /** Catalogue spelling of an upstream family name. */
  familyKey(name: string): string;
  /** Whether a payload looks like this engine's. */
  detect(families: readonly Family[]): boolean;
  /** The one model a payload names, if it names exactly one. */
  payloadModel(families: readonly Family[]): string | undefined;
  /** Ask the engine which model it serves (TGI's /info); undefined when it cannot say. */
  lookupModel(metricsUrl: string, signal: AbortSignal): Promise<string | undefined>;
}

export const FLAVOR_TABLE = { vllm: vllmFlavor, tgi: tgiFlavor } satisfies Record<Flavor, FlavorAdapter>;

export function detectFlavor(families: readonly Family[]): FlavorAdapter | undefined {
  return Object.values(FLAVOR_TABLE).find((f) => f.detect(families));
}
