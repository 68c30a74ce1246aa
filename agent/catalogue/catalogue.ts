// The metric catalogue (config/taxonomy.yaml) typed and validated. Everything that names a
// canonical metric (normaliser, renderer, README table, golden tests) goes through here.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

import { SOURCE_TABLE } from '../sources/flavor.js';

export type { Flavor } from '../sources/flavor.js';
/** The loop's sources (engine flavors and the GPU), the inline proxy (request-level mode), the canaries, and joins of GPU and engine series. */
export const SOURCE_KINDS: [string, ...string[]] = ['proxy', 'canary', 'join', ...SOURCE_TABLE.map((s) => s.name)];
export type UnitProfile = 'ms' | 'seconds';

const labelMap = z.record(z.string(), z.string());

const sourceSchema = z.strictObject({
  flavor: z.enum(SOURCE_KINDS),
  from: z.array(z.string().min(1)).min(1).optional(),
  field: z.string().optional(),
  scale: z.number().optional(),
  bits: z.record(z.string(), z.number().int().positive()).optional(),
  unit: z.enum(['seconds', 'ms', 'us']).optional(),
  labels: labelMap.optional(),
  set: labelMap.optional(),
  map: z.record(z.string(), z.strictObject({ from: z.string(), values: labelMap, default: z.string() })).optional(),
  match: labelMap.optional(),
  component: z.enum(['sum', 'count']).optional(),
  absentBelow: z.number().optional(),
  bucketize: z
    .strictObject({
      label: z.string(),
      bounds: z.array(z.number()).min(1),
      values: z.array(z.string()),
    })
    .refine((b) => b.values.length === b.bounds.length + 1, 'bucketize.values needs one more entry than bounds')
    .optional(),
  sample: z.boolean().optional(),
  statusClass: z.string().optional(),
});

const deriveSchema = z.union([
  z.strictObject({ rate: z.string(), set: labelMap.optional() }),
  z.strictObject({ ratio: z.tuple([z.string(), z.string()]), set: labelMap.optional() }),
  z.strictObject({ mean: z.tuple([z.string(), z.string()]), set: labelMap.optional() }),
]);

/** The catalogue metrics a derivation reads. */
export function deriveInputs(d: DeriveSpec): [string] | [string, string] {
  return 'rate' in d ? [d.rate] : 'ratio' in d ? d.ratio : d.mean;
}

const metricSchema = z.strictObject({
  name: z.string().regex(/^[a-z_][a-z0-9_]*$/),
  type: z.enum(['counter', 'gauge', 'histogram', 'info']),
  unit: z.enum([
    'ms',
    'ratio',
    'requests',
    'tokens',
    'tokens_per_second',
    'events',
    'bytes',
    'flops',
    'celsius',
    'watts',
    'joules',
    'joules_per_token',
    'hertz',
    'info',
  ]),
  help: z.string().min(1),
  labels: z.array(z.string()),
  aggregate: z.enum(['sum', 'max', 'avg']).optional(),
  layout: z.string().optional(),
  export: z.boolean().optional(),
  needs: z.string().optional(),
  sources: z.array(sourceSchema).optional(),
  derive: z.array(deriveSchema).optional(),
});

const catalogueSchema = z.strictObject({
  metrics: z.array(metricSchema),
  layouts: z.record(z.string(), z.array(z.number().positive())),
});

export type SourceSpec = z.infer<typeof sourceSchema>;
export type DeriveSpec = z.infer<typeof deriveSchema>;
export type MetricSpec = z.infer<typeof metricSchema>;
export type CatalogueData = z.infer<typeof catalogueSchema>;

export interface CanonicalMetric extends MetricSpec {
  /** Name in the active unit profile (`_ms` becomes `_seconds` in the seconds profile). */
  exportName: string;
  /** Bucket bounds in the profile's unit, for histograms. */
  bounds: number[] | undefined;
  /** Factor from the upstream's seconds to the profile's unit (1000 in ms, 1 in seconds). */
  secondsFactor: number;
}

export interface Catalogue {
  profile: UnitProfile;
  metrics: CanonicalMetric[];
  byName: Map<string, CanonicalMetric>;
  layouts: Record<string, number[]>;
}

export const CATALOGUE_PATH = fileURLToPath(new URL('../../../config/taxonomy.yaml', import.meta.url));

let cachedData: CatalogueData | undefined;

/** Read and validate config/taxonomy.yaml (throws with every problem listed). */
export function loadCatalogueData(path = CATALOGUE_PATH): CatalogueData {
  if (path === CATALOGUE_PATH && cachedData) return cachedData;
  const result = catalogueSchema.safeParse(parseYaml(readFileSync(path, 'utf8')));
  if (!result.success) {
    throw new Error(`invalid metric catalogue ${path}:\n${result.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`);
  }
  const data = result.data;
  const names = new Set(data.metrics.map((m) => m.name));
  const problems: string[] = [];
  for (const m of data.metrics) {
    if (m.type === 'histogram' && (!m.layout || !data.layouts[m.layout])) problems.push(`${m.name}: histogram needs a known layout`);
    if (m.type === 'gauge' && !m.aggregate) problems.push(`${m.name}: gauge needs an aggregate`);
    for (const src of m.sources ?? []) {
      const byField = src.flavor === 'gpu' || src.flavor === 'proxy' || src.flavor === 'canary' || src.flavor === 'join';
      if (byField ? !src.field : !src.from) problems.push(`${m.name}: a ${src.flavor} source needs ${byField ? 'field' : 'from'}`);
    }
    for (const d of m.derive ?? []) {
      const inputs = deriveInputs(d);
      for (const input of inputs) if (!names.has(input)) problems.push(`${m.name}: derive input ${input} is not in the catalogue`);
    }
  }
  if (problems.length) throw new Error(`invalid metric catalogue ${path}:\n  ${problems.join('\n  ')}`);
  if (path === CATALOGUE_PATH) cachedData = data;
  return data;
}

export function profileName(name: string, profile: UnitProfile): string {
  if (profile !== 'seconds') return name;
  if (name.endsWith('_ms')) return `${name.slice(0, -3)}_seconds`;
  if (name.endsWith('_ms_total')) return `${name.slice(0, -9)}_seconds_total`;
  return name;
}

/** Whether the agent measures this metric itself, in the proxy or a canary (request-level metrics). */
export function requestLevel(m: MetricSpec): boolean {
  return m.sources?.some((s) => s.flavor === 'proxy' || s.flavor === 'canary') ?? false;
}

/** Whether the inline proxy measures this metric (it then has the only source while the proxy is on). */
export function proxySourced(m: MetricSpec): boolean {
  return m.sources?.some((s) => s.flavor === 'proxy') ?? false;
}

/** Build the catalogue for one unit profile, with optional per-metric bucket layouts from config. */
export function buildCatalogue(profile: UnitProfile, bucketOverrides: Record<string, number[] | string> = {}, data = loadCatalogueData()): Catalogue {
  const scale = profile === 'ms' ? 1 : 1 / 1000;
  const metrics = data.metrics.map((m): CanonicalMetric => {
    const exportName = profileName(m.name, profile);
    const override = bucketOverrides[m.name] ?? bucketOverrides[exportName];
    let bounds: number[] | undefined;
    const layoutName = typeof override === 'string' ? override : m.layout;
    if (Array.isArray(override)) bounds = [...override];
    else if (layoutName) {
      // Catalogue layouts are written in the ms profile's unit.
      const layout = data.layouts[layoutName] ?? [];
      bounds = m.unit === 'ms' ? layout.map((b) => roundBound(b * scale)) : [...layout];
    }
    return { ...m, exportName, bounds, secondsFactor: profile === 'ms' ? 1000 : 1 };
  });
  const byName = new Map<string, CanonicalMetric>();
  for (const m of metrics) byName.set(m.name, m);
  return { profile, metrics, byName, layouts: data.layouts };
}

/** Remove float artefacts from scaled bounds (0.3 * 1000 must compare and print as 300). */
export function roundBound(x: number): number {
  return Number.isFinite(x) ? +x.toPrecision(12) : x;
}

/** Metrics that a scrape can produce and that are exported. */
export function exportedMetrics(cat: Catalogue): CanonicalMetric[] {
  return cat.metrics.filter((m) => m.export !== false && !m.needs);
}
