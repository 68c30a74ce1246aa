// The one table of engines. Every list of engines (config enum, CLI help, webhook annotation
// values, README support matrix and metric-table columns, detection, fixture checks) is derived
// from it. Order is detection order: the most specific payloads first (a TRT-LLM backend payload
// also carries Triton's core families; a Dynamo frontend may sit beside an engine's).

import type { Family } from '../parse/exposition.js';
import type { UpstreamView } from '../normalize/normalizer.js';
import { familyKeyOf, type EngineAdapter } from './adapter.js';
import { GPU_SOURCE_NAME } from './source.js';
import { dynamo } from './engines/dynamo.js';
import { llamacpp } from './engines/llamacpp.js';
import { sglang } from './engines/sglang.js';
import { tgi } from './engines/tgi.js';
import { triton } from './engines/triton.js';
import { trtllm } from './engines/trtllm.js';
import { vllm } from './engines/vllm.js';

export const ENGINES = [dynamo, trtllm, triton, sglang, llamacpp, vllm, tgi] as const;

export type Flavor = (typeof ENGINES)[number]['name'];
export type FlavorAdapter = EngineAdapter<Flavor>;

export const FLAVORS = ENGINES.map((e) => e.name) as [Flavor, ...Flavor[]];

/**
 * Every kind of source the one loop runs: a row per engine of the table above, and the GPU probe.
 * Each row is also a source kind of the catalogue (`sources[].flavor`): an engine's families, or the
 * GPU's fields, which gpu/telemetry.ts exposes as an exposition for the same normaliser.
 */
export const SOURCE_TABLE: ReadonlyArray<{ name: string; kind: 'engine' | 'gpu' }> = [
  ...ENGINES.map((e) => ({ name: e.name, kind: 'engine' as const })),
  { name: GPU_SOURCE_NAME, kind: 'gpu' },
];

export const FLAVOR_TABLE = Object.fromEntries(ENGINES.map((e) => [e.name, e])) as unknown as Record<Flavor, FlavorAdapter>;

export function isFlavor(name: string): name is Flavor {
  return Object.hasOwn(FLAVOR_TABLE, name);
}

export function detectFlavor(families: readonly Family[]): FlavorAdapter | undefined {
  return ENGINES.find((f) => f.detect(families));
}

/** The flavors whose catalogue sources apply to an engine's payloads (its own, then what it inherits). */
export function sourceFlavors(adapter: FlavorAdapter): string[] {
  return adapter.inherits ? [adapter.name, adapter.inherits] : [adapter.name];
}

/** How the normaliser sees one upstream of this engine. */
export function normaliserView(adapter: FlavorAdapter, upstream: string, defaultModel: string): UpstreamView {
  return { name: upstream, flavors: sourceFlavors(adapter), familyKey: (n) => familyKeyOf(adapter, n), modelLabels: adapter.modelLabels, defaultModel };
}
