// What the agent knows about one engine's exposition habits. Every engine is one file under
// sources/engines/ exporting one EngineAdapter, listed once in sources/flavor.ts.

import { lookupJson } from '../net/http-client.js';
import { labelValue, type Family, type Sample } from '../parse/exposition.js';

/** What an engine's info endpoints said about it. */
export interface EngineInfo {
  /** The model it serves, when it serves exactly one (base model, not a LoRA adapter). */
  model?: string;
  version?: string;
}

export interface EngineAdapter<N extends string = string> {
  name: N;
  /** As the README's support matrix names it. */
  title: string;
  /** Versions the fixtures cover, for the support matrix. */
  versions: string;
  /** What the support matrix says about the awkward parts (ranks, units, types, model source). */
  notes: string;
  /** Listed as legacy / best effort in the support matrix. */
  legacy?: true;
  /** Path of the metrics endpoint when only a port is given (webhook annotations). */
  metricsPath: string;
  /** Name prefixes stripped to reach the catalogue's spelling, longest first. */
  prefixes: readonly string[];
  /** Upstream label names that carry the model, in order of preference. */
  modelLabels: readonly string[];
  /** Another flavor whose catalogue sources this engine's payloads also carry (Triton's under TRT-LLM). */
  inherits?: string;
  /** Whether a payload looks like this engine's. */
  detect(families: readonly Family[]): boolean;
  /**
   * Families as the normaliser should see them: one rank of a group that reports the same work,
   * totals instead of breakdowns that would count twice. Passthrough keeps the originals.
   */
  canonicalView?(families: Family[]): Family[];
  /** Families whose declared TYPE contradicts what they mean, with the type they are treated as (both paths). */
  retype?: Readonly<Record<string, Family['type']>>;
  /** Families never re-exported (values the agent owns better, or corrupted by being scraped). */
  passthroughDrop?(name: string, gpuTelemetry: boolean): boolean;
  /** The one model a payload names, if it names exactly one. */
  payloadModel(families: readonly Family[]): string | undefined;
  /** The engine version, when the payload names it. */
  payloadVersion?(families: readonly Family[]): string | undefined;
  /** Ask the engine's info endpoints (relative to the metrics URL) for its model and version. */
  info(metricsUrl: string, signal: AbortSignal): Promise<EngineInfo>;
}

/** The catalogue's spelling of an upstream family name: the adapter's prefix removed. */
export function familyKeyOf(adapter: Pick<EngineAdapter, 'prefixes'>, name: string): string {
  for (const p of adapter.prefixes) if (name.startsWith(p)) return name.slice(p.length);
  return name;
}

/** The one value of the first of `labels` any sample carries, when the payload names exactly one. */
export function singleLabelValue(families: readonly Family[], labels: readonly string[], only?: (f: Family) => boolean): string | undefined {
  const seen = new Set<string>();
  for (const f of families) {
    if (only && !only(f)) continue;
    for (const s of f.samples) {
      for (const l of labels) {
        const v = labelValue(s.labels, l);
        if (v === undefined) continue;
        seen.add(v);
        if (seen.size > 1) return undefined;
        break;
      }
    }
  }
  return seen.size === 1 ? [...seen][0] : undefined;
}

/** A bounded, printable identifier from an info endpoint, else undefined. */
export function idValue(v: unknown): string | undefined {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it refuses
  return typeof v === 'string' && v.length > 0 && v.length <= 256 && !/[\u0000-\u001f]/.test(v) ? v : undefined;
}

function endpoint(metricsUrl: string, path: string): string {
  return new URL(path, metricsUrl).toString();
}

/** OpenAI-compatible /v1/models: the one base model (an entry whose `parent` is set is a LoRA adapter). */
export async function openAiModel(metricsUrl: string, signal: AbortSignal): Promise<string | undefined> {
  const doc = await lookupJson(endpoint(metricsUrl, '/v1/models'), signal);
  const data = Array.isArray(doc?.data) ? (doc.data as unknown[]) : [];
  const bases = data.filter((m): m is Record<string, unknown> => !!m && typeof m === 'object' && !(m as Record<string, unknown>).parent);
  const [only, ...others] = bases;
  return only && others.length === 0 ? idValue(only.id) : undefined;
}

/** GET a JSON document at `path` beside the metrics URL (undefined when not found; throws FetchError). */
export function infoDoc(metricsUrl: string, path: string, signal: AbortSignal): Promise<Record<string, unknown> | undefined> {
  return lookupJson(endpoint(metricsUrl, path), signal);
}

/** The first lookup's answer, and the second's when it also succeeds: a missing version never hides the model. */
export async function both<A, B>(first: Promise<A>, second: Promise<B>): Promise<[A, B | undefined]> {
  const [a, b] = await Promise.allSettled([first, second]);
  if (a.status === 'rejected') throw a.reason;
  return [a.value, b.status === 'fulfilled' ? b.value : undefined];
}

/** Whether any family's name starts with one of `prefixes`. */
export function hasPrefix(families: readonly Family[], prefixes: readonly string[]): boolean {
  return families.some((f) => prefixes.some((p) => f.name.startsWith(p)));
}

/** A family with only the samples `keep` accepts (the family itself when all are kept). */
export function filterSamples(f: Family, keep: (s: Sample) => boolean): Family {
  const samples = f.samples.filter(keep);
  return samples.length === f.samples.length ? f : { ...f, samples };
}

function retyped(adapter: EngineAdapter, families: Family[]): Family[] {
  const retype = adapter.retype;
  if (!retype) return families;
  return families.map((f) => {
    const t = Object.hasOwn(retype, f.name) ? retype[f.name] : undefined;
    return t && t !== f.type ? { ...f, type: t } : f;
  });
}

/** The families the normaliser reads from one payload of this engine. */
export function canonicalInput(adapter: EngineAdapter, families: Family[]): Family[] {
  const typed = retyped(adapter, families);
  return adapter.canonicalView ? adapter.canonicalView(typed) : typed;
}

/** The families re-exported as passthrough from one payload of this engine. */
export function passthroughInput(adapter: EngineAdapter | undefined, families: Family[], gpuTelemetry: boolean): Family[] {
  if (!adapter) return families;
  const typed = retyped(adapter, families);
  const drop = adapter.passthroughDrop;
  return drop ? typed.filter((f) => !drop(f.name, gpuTelemetry)) : typed;
}
