// Renders the canonical snapshot and the passthrough families, once per collection cycle, as
// Prometheus text 0.0.4 or OpenMetrics 1.0 (without the closing `# EOF`, which the server adds
// after the agent's own metrics).

import type { Family, FamilyType } from '../parse/exposition.js';
import type { CanonicalFamily } from '../normalize/normalizer.js';
import { escapeHelp, escapeLabelValue, flatLabelBlock, formatNumber, labelBlock } from './format.js';

export type ExpositionFormat = 'text' | 'openmetrics';

/**
 * A passthrough family kept between scrapes as text: its sample lines (text format, each ending
 * in a newline) rather than thousands of sample objects that would survive into the old
 * generation and be copied by every scavenge until the next scrape replaces them.
 */
export interface PassthroughFamily {
  name: string;
  type: FamilyType;
  help: string | undefined;
  body: string;
}

export interface PassthroughSet {
  upstream: string;
  families: readonly PassthroughFamily[];
}

function renderCanonicalFamily(fam: CanonicalFamily, format: ExpositionFormat, out: string[]): void {
  const m = fam.metric;
  const name = m.exportName;
  const om = format === 'openmetrics';
  let typeName = name;
  let type: string = m.type;
  if (m.type === 'info') {
    if (om && name.endsWith('_info')) typeName = name.slice(0, -5);
    else type = 'gauge';
  }
  if (om && m.type === 'counter' && name.endsWith('_total')) typeName = name.slice(0, -6);
  out.push(`# HELP ${typeName} ${escapeHelp(m.help)}\n# TYPE ${typeName} ${type}\n`);
  for (const s of fam.series) {
    if (s.hist) {
      const h = s.hist;
      for (let i = 0; i < h.bounds.length; i++) {
        out.push(`${name}_bucket${labelBlock(s.labels, `le="${formatNumber(h.bounds[i]!)}"`)} ${formatNumber(h.cum[i]!)}\n`);
      }
      out.push(`${name}_bucket${labelBlock(s.labels, 'le="+Inf"')} ${formatNumber(h.count)}\n`);
      const lb = labelBlock(s.labels);
      out.push(`${name}_sum${lb} ${formatNumber(h.sum)}\n${name}_count${lb} ${formatNumber(h.count)}\n`);
    } else {
      out.push(`${name}${labelBlock(s.labels)} ${formatNumber(s.value)}\n`);
    }
  }
}

/** Sample lines of a parsed family; lines the guards left alone are copied from the body, a contiguous run at a time. */
function familyBody(fam: Family): string {
  const out: string[] = [];
  const text = fam.text;
  let runStart = -1;
  let runEnd = -1;
  const flush = () => {
    if (runStart >= 0 && text !== undefined) out.push(text.slice(runStart, runEnd) + '\n');
    runStart = -1;
  };
  for (const s of fam.samples) {
    if (text !== undefined && s.start !== undefined && s.end !== undefined && s.start >= 0) {
      if (runStart >= 0 && s.start === runEnd + 1) runEnd = s.end;
      else { flush(); runStart = s.start; runEnd = s.end; }
      continue;
    }
    flush();
    out.push(`${s.name}${flatLabelBlock(s.labels)} ${formatNumber(s.value)}\n`);
  }
  flush();
  return out.join('');
}

/** Guarded parsed families as the text the agent keeps between scrapes. */
export function toPassthroughFamilies(families: readonly Family[]): PassthroughFamily[] {
  return families.filter((f) => f.samples.length > 0).map((f) => ({ name: f.name, type: f.type, help: f.help, body: familyBody(f) }));
}

function header(f: PassthroughFamily, format: ExpositionFormat): string {
  const om = format === 'openmetrics';
  let typeName = f.name;
  let type: string = f.type === 'untyped' ? (om ? 'unknown' : 'untyped') : f.type;
  if (om && f.type === 'counter') {
    // OpenMetrics counters must end in _total; TGI's and Triton's do not, so they go out as unknown.
    if (f.name.endsWith('_total')) typeName = f.name.slice(0, -6);
    else type = 'unknown';
  }
  return (f.help !== undefined ? `# HELP ${typeName} ${escapeHelp(f.help)}\n` : '') + `# TYPE ${typeName} ${type}\n`;
}

/** The body in a format: OpenMetrics carries a counter's _created inside the family, so the 0.0.4 lines go. */
function bodyIn(f: PassthroughFamily, format: ExpositionFormat): string {
  if (format !== 'openmetrics' || f.type !== 'counter' || !f.body.includes('_created')) return f.body;
  return f.body.split('\n').filter((l) => !/^[^{\s]+_created[{\s]/.test(l)).join('\n');
}

/** prometheus_client's 0.0.4 `_created` gauges duplicate what OpenMetrics carries in-family. */
function skipInFormat(f: PassthroughFamily, format: ExpositionFormat): boolean {
  return format === 'openmetrics' && f.type === 'gauge' && f.name.endsWith('_created');
}

/** Sample lines with an `upstream` label added first. */
function withUpstream(body: string, upstream: string): string {
  const label = `upstream="${escapeLabelValue(upstream)}"`;
  return body.replace(/^([^{\s]+)(\{\}?)?/gm, (_m, name: string, brace: string | undefined) =>
    brace === '{' ? `${name}{${label},` : `${name}{${label}}`);
}

export function renderCanonical(canonical: readonly CanonicalFamily[], format: ExpositionFormat): string {
  const out: string[] = [];
  for (const fam of canonical) if (fam.metric.export !== false) renderCanonicalFamily(fam, format, out);
  return out.join('');
}

/** One upstream's passthrough families, except those in `exclude` (shared with other upstreams). */
export function renderPassthrough(families: readonly PassthroughFamily[], format: ExpositionFormat, exclude: ReadonlySet<string>): string {
  const out: string[] = [];
  for (const f of families) if (!exclude.has(f.name) && !skipInFormat(f, format)) out.push(header(f, format), bodyIn(f, format));
  return out.join('');
}

/** Family names emitted by more than one upstream, or clashing with a canonical name. */
export function sharedFamilies(passthrough: readonly PassthroughSet[], canonicalNames: ReadonlySet<string>): Set<string> {
  const seen = new Set<string>();
  const shared = new Set<string>(canonicalNames);
  for (const p of passthrough) for (const f of p.families) (seen.has(f.name) ? shared : seen).add(f.name);
  return shared;
}

/** Families emitted by several upstreams, written once each with an `upstream` label per series. */
export function renderShared(passthrough: readonly PassthroughSet[], shared: ReadonlySet<string>, canonicalNames: ReadonlySet<string>, format: ExpositionFormat): string {
  const merged = new Map<string, string[]>();
  for (const p of passthrough) {
    for (const f of p.families) {
      if (!shared.has(f.name) || canonicalNames.has(f.name) || skipInFormat(f, format)) continue;
      let parts = merged.get(f.name);
      if (!parts) merged.set(f.name, (parts = [header(f, format)]));
      parts.push(withUpstream(bodyIn(f, format), p.upstream));
    }
  }
  return [...merged.values()].map((parts) => parts.join('')).join('');
}

export function canonicalNameSet(canonical: readonly CanonicalFamily[]): Set<string> {
  return new Set(canonical.map((f) => f.metric.exportName));
}

/** The whole data part of an exposition in one call (the agent caches the pieces instead). */
export function renderExposition(canonical: readonly CanonicalFamily[], parsed: ReadonlyArray<{ upstream: string; families: readonly Family[] }>, format: ExpositionFormat): string {
  const passthrough = parsed.map((p) => ({ upstream: p.upstream, families: toPassthroughFamilies(p.families) }));
  const names = canonicalNameSet(canonical);
  const shared = sharedFamilies(passthrough, names);
  return renderCanonical(canonical, format)
    + passthrough.map((p) => renderPassthrough(p.families, format, shared)).join('')
    + renderShared(passthrough, shared, names, format);
}
