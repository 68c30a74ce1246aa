// Renders the canonical snapshot and the passthrough families, once per collection cycle, as
// Prometheus text 0.0.4 or OpenMetrics 1.0 (without the closing `# EOF`, which the server adds
// after the agent's own metrics).

import type { Family } from '../parse/exposition.js';
import type { CanonicalFamily } from '../normalize/normalizer.js';
import { escapeHelp, flatLabelBlock, formatNumber, labelBlock } from './format.js';

export type ExpositionFormat = 'text' | 'openmetrics';

export interface PassthroughSet {
  upstream: string;
  families: readonly Family[];
}

function renderCanonical(fam: CanonicalFamily, format: ExpositionFormat, out: string[]): void {
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

function renderPassthrough(fam: Family, upstreamLabel: string | undefined, format: ExpositionFormat, out: string[]): void {
  if (fam.samples.length === 0) return;
  const om = format === 'openmetrics';
  let typeName = fam.name;
  let type: string = fam.type === 'untyped' ? (om ? 'unknown' : 'untyped') : fam.type;
  if (om && fam.type === 'counter') {
    // OpenMetrics counters must end in _total; TGI's and Triton's do not, so they go out as unknown.
    if (fam.name.endsWith('_total')) typeName = fam.name.slice(0, -6);
    else type = 'unknown';
  }
  if (fam.help !== undefined) out.push(`# HELP ${typeName} ${escapeHelp(fam.help)}\n`);
  out.push(`# TYPE ${typeName} ${type}\n`);
  for (const s of fam.samples) {
    if (om && fam.type === 'counter' && s.name.endsWith('_created')) continue;
    out.push(`${s.name}${flatLabelBlock(s.labels, upstreamLabel)} ${formatNumber(s.value)}\n`);
  }
}

export function renderExposition(canonical: readonly CanonicalFamily[], passthrough: readonly PassthroughSet[], format: ExpositionFormat): string {
  const out: string[] = [];
  for (const fam of canonical) if (fam.metric.export !== false) renderCanonical(fam, format, out);
  const owners = new Map<string, number>();
  for (const p of passthrough) for (const f of p.families) owners.set(f.name, (owners.get(f.name) ?? 0) + 1);
  const canonicalNames = new Set(canonical.map((f) => f.metric.exportName));
  const emitted = new Set<string>();
  for (const p of passthrough) {
    for (const f of p.families) {
      // prometheus_client's 0.0.4 `_created` gauges duplicate what OpenMetrics carries in-family.
      if (format === 'openmetrics' && f.type === 'gauge' && f.name.endsWith('_created')) continue;
      if (canonicalNames.has(f.name)) continue;
      const shared = (owners.get(f.name) ?? 0) > 1;
      if (shared && emitted.has(f.name)) {
        // A family emitted by several upstreams is written once, with an upstream label per series.
        continue;
      }
      if (shared) {
        const merged: Family = { name: f.name, type: f.type, help: f.help, samples: [] };
        for (const q of passthrough) {
          const g = q.families.find((x) => x.name === f.name);
          if (!g) continue;
          for (const s of g.samples) merged.samples.push({ name: s.name, labels: ['upstream', q.upstream, ...s.labels], value: s.value });
        }
        renderPassthrough(merged, undefined, format, out);
        emitted.add(f.name);
      } else renderPassthrough(f, undefined, format, out);
    }
  }
  return out.join('');
}
