// Renders the canonical snapshot and the passthrough families, once per collection cycle, as
// Prometheus text 0.0.4 or OpenMetrics 1.0 (without the closing `# EOF`, which the server adds
// after the agent's own metrics).

import type { Family, FamilyType, Sample } from '../parse/exposition.js';
import { coordinateValue } from '../guard/passthrough.js';
import type { CanonicalFamily } from '../normalize/normalizer.js';
import { escapeHelp, escapeLabelValue, flatLabelBlock, formatNumber, labelBlock } from './format.js';

export type ExpositionFormat = 'text' | 'openmetrics';

/** W3C trace ids only: 32 lowercase hex digits, not all zero (the exemplar label guard). */
const TRACE_ID = /^(?!0{32})[0-9a-f]{32}$/;

/** ` # {trace_id="…"} value timestamp` after a bucket, or '' (OpenMetrics 1.0 exemplar syntax). */
function exemplarText(e: { traceId: string; value: number; timestampSec: number } | undefined): string {
  if (!e || !TRACE_ID.test(e.traceId) || !Number.isFinite(e.value)) return '';
  return ` # {trace_id="${e.traceId}"} ${formatNumber(e.value)} ${e.timestampSec.toFixed(3)}`;
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
      const ex = om ? s.exemplars : undefined;
      h.bounds.forEach((bound, i) => {
        out.push(`${name}_bucket${labelBlock(s.labels, `le="${formatNumber(bound)}"`)} ${formatNumber(h.cum[i] ?? 0)}${exemplarText(ex?.[i])}\n`);
      });
      out.push(`${name}_bucket${labelBlock(s.labels, 'le="+Inf"')} ${formatNumber(h.count)}${exemplarText(ex?.[h.bounds.length])}\n`);
      const lb = labelBlock(s.labels);
      out.push(`${name}_sum${lb} ${formatNumber(h.sum)}\n${name}_count${lb} ${formatNumber(h.count)}\n`);
    } else {
      out.push(`${name}${labelBlock(s.labels)} ${formatNumber(s.value)}\n`);
    }
  }
}

/**
 * One family as one output format writes it: the header, the sample lines and every sample name
 * it takes (a later family wanting one of them is left out, so no two families clash).
 */
export interface FormatBlock {
  header: string;
  body: string;
  names: readonly string[];
}

/**
 * A passthrough family kept between scrapes as text, one block per output format (undefined
 * when the format cannot express any of it), rather than thousands of sample objects that would
 * survive into the old generation until the next scrape replaces them.
 */
export interface PassthroughFamily {
  name: string;
  type: FamilyType;
  text: FormatBlock | undefined;
  openmetrics: FormatBlock | undefined;
  /** Samples one format could not carry (e.g. a fractional bucket count in OpenMetrics). */
  droppedIn: Record<ExpositionFormat, number>;
}

export interface PassthroughSet {
  upstream: string;
  families: readonly PassthroughFamily[];
}

/** Families under this prefix are the agent's own: an upstream's are never re-exported under it. */
export const RESERVED_PREFIX = 'infertel_';

function sampleLine(s: Sample, text: string | undefined, name: string, labels: readonly string[]): string {
  if (text !== undefined && s.start !== undefined && s.end !== undefined && name === s.name && labels === s.labels) {
    return `${text.slice(s.start, s.end)}\n`;
  }
  return `${name}${flatLabelBlock(labels)} ${formatNumber(s.value)}\n`;
}

function metaLines(typeName: string, type: string, help: string | undefined): string {
  return `${help !== undefined ? `# HELP ${typeName} ${escapeHelp(help)}\n` : ''}# TYPE ${typeName} ${type}\n`;
}

/** Samples grouped into series the way the guard ordered them (consecutive runs share a key). */
function seriesRuns(fam: Family, coord: string): Sample[][] {
  const runs: Sample[][] = [];
  let key: string | undefined;
  let run: Sample[] | undefined;
  for (const s of fam.samples) {
    let k = '';
    for (let i = 0; i < s.labels.length; i += 2) if (s.labels[i] !== coord) k += `${s.labels[i]}\u0000${s.labels[i + 1]}\u0000`;
    if (k !== key || !run) {
      run = [];
      runs.push(run);
      key = k;
    }
    run.push(s);
  }
  return runs;
}

function coordOf(s: Sample, coord: string): { raw: string; value: number } | undefined {
  for (let i = 0; i < s.labels.length; i += 2) {
    if (s.labels[i] === coord) {
      const raw = s.labels[i + 1] ?? '';
      return { raw, value: coordinateValue(raw) };
    }
  }
  return undefined;
}

const isCount = (v: number) => Number.isInteger(v) && v >= 0;

/** A histogram series as strict OpenMetrics wants it, or undefined when it cannot be one. */
function omHistogramSeries(fam: Family, series: Sample[]): Array<{ s: Sample; labels: readonly string[] }> | undefined {
  const out: Array<{ s: Sample; labels: readonly string[] }> = [];
  let lastBound = -Infinity;
  let lastValue = 0;
  let inf: number | undefined;
  let count: number | undefined;
  let sum: number | undefined;
  let negativeBucket = false;
  for (const s of series) {
    const suffix = s.name.slice(fam.name.length);
    if (suffix === '_bucket') {
      const c = coordOf(s, 'le');
      if (!c || !(c.value > lastBound) || !isCount(s.value) || s.value < lastValue) return undefined;
      if (c.value < 0) negativeBucket = true;
      lastBound = c.value;
      lastValue = s.value;
      let labels: readonly string[] = s.labels;
      if (c.value === Infinity) {
        inf = s.value;
        if (c.raw !== '+Inf') labels = s.labels.map((x, i) => (i % 2 === 1 && s.labels[i - 1] === 'le' ? '+Inf' : x));
      }
      out.push({ s, labels });
    } else if (suffix === '_count') {
      if (!isCount(s.value)) return undefined;
      count = s.value;
      out.push({ s, labels: s.labels });
    } else if (suffix === '_sum') {
      if (!(s.value >= 0)) return undefined;
      sum = s.value;
      out.push({ s, labels: s.labels });
    }
  }
  if (inf === undefined || (count !== undefined && count !== inf) || (count === undefined) !== (sum === undefined)) return undefined;
  if (negativeBucket && sum !== undefined) return out.filter((x) => !x.s.name.endsWith('_sum') && !x.s.name.endsWith('_count'));
  return out;
}

/** A summary series as strict OpenMetrics wants it, or undefined. */
function omSummarySeries(fam: Family, series: Sample[]): Array<{ s: Sample; labels: readonly string[] }> | undefined {
  const out: Array<{ s: Sample; labels: readonly string[] }> = [];
  let count: number | undefined;
  let sum: number | undefined;
  for (const s of series) {
    const suffix = s.name.slice(fam.name.length);
    if (suffix === '') {
      const q = coordOf(s, 'quantile');
      if (!q || !(q.value >= 0 && q.value <= 1) || s.value < 0) return undefined;
    } else if (suffix === '_count') {
      if (!isCount(s.value)) return undefined;
      count = s.value;
    } else if (suffix === '_sum') {
      if (!(s.value >= 0)) return undefined;
      sum = s.value;
    } else continue;
    out.push({ s, labels: s.labels });
  }
  return (count === undefined) !== (sum === undefined) ? undefined : out;
}

function textBlock(fam: Family): { block: FormatBlock | undefined; dropped: number } {
  let typeName = fam.name;
  let names: string[] = [fam.name];
  let keep: (s: Sample) => boolean = () => true;
  // Text 0.0.4 has no info, stateset or gauge histogram: the first two are gauges (as Prometheus
  // reads them), a gauge histogram's samples go out untyped (no TYPE line claims them).
  let header: string | undefined;
  if (fam.type === 'info') {
    typeName = `${fam.name}_info`;
    names = [typeName];
    keep = (s) => s.name === typeName;
    header = metaLines(typeName, 'gauge', fam.help);
  } else if (fam.type === 'stateset') {
    keep = (s) => s.name === fam.name;
    header = metaLines(typeName, 'gauge', fam.help);
  } else if (fam.type === 'gaugehistogram') {
    names = [`${fam.name}_bucket`, `${fam.name}_gcount`, `${fam.name}_gsum`];
    keep = (s) => names.includes(s.name);
    header = '';
  } else if (fam.type === 'histogram') {
    names = [fam.name, `${fam.name}_bucket`, `${fam.name}_count`, `${fam.name}_sum`];
    keep = (s) => !s.name.endsWith('_created');
  } else if (fam.type === 'summary') {
    names = [fam.name, `${fam.name}_count`, `${fam.name}_sum`];
    keep = (s) => !s.name.endsWith('_created');
  } else if (fam.type === 'counter' && !fam.samples.some((s) => s.name === fam.name)) {
    // An OpenMetrics counter family (`foo` with `foo_total` samples) is `foo_total` in 0.0.4.
    typeName = `${fam.name}_total`;
    names = [typeName];
    keep = (s) => s.name === typeName;
  } else keep = (s) => s.name === fam.name;
  let body = '';
  let dropped = 0;
  const text = fam.text;
  // Contiguous verbatim lines are copied as one slice.
  let runStart = -1;
  let runEnd = -1;
  for (const s of fam.samples) {
    if (!keep(s)) {
      dropped++;
      continue;
    }
    if (text !== undefined && s.start !== undefined && s.end !== undefined && text.charCodeAt(s.end) === 10) {
      if (runStart >= 0 && s.start === runEnd + 1) {
        runEnd = s.end;
        continue;
      }
      if (runStart >= 0) body += text.slice(runStart, runEnd + 1);
      runStart = s.start;
      runEnd = s.end;
      continue;
    }
    if (runStart >= 0) {
      body += text!.slice(runStart, runEnd + 1);
      runStart = -1;
    }
    body += sampleLine(s, text, s.name, s.labels);
  }
  if (runStart >= 0) body += text!.slice(runStart, runEnd + 1);
  if (!body) return { block: undefined, dropped };
  return { block: { header: header ?? metaLines(typeName, fam.type, fam.help), body, names }, dropped };
}

/** A gauge-histogram series as strict OpenMetrics wants it: ascending whole buckets up to +Inf, _gcount equal to it. */
function omGaugeHistogramSeries(fam: Family, series: Sample[]): Sample[] | undefined {
  let lastBound = -Infinity;
  let lastValue = 0;
  let inf: number | undefined;
  let gcount: number | undefined;
  for (const s of series) {
    if (s.name === `${fam.name}_bucket`) {
      const c = coordOf(s, 'le');
      if (!c || !(c.value > lastBound) || !isCount(s.value) || s.value < lastValue || (c.value === Infinity && c.raw !== '+Inf')) return undefined;
      lastBound = c.value;
      lastValue = s.value;
      if (c.value === Infinity) inf = s.value;
    } else if (s.name === `${fam.name}_gcount`) {
      if (!isCount(s.value)) return undefined;
      gcount = s.value;
    }
  }
  return inf === undefined || (gcount !== undefined && gcount !== inf) ? undefined : series;
}

function openMetricsBlock(fam: Family, textBody: string | undefined): { block: FormatBlock | undefined; dropped: number } {
  let body = '';
  let dropped = 0;
  let typeName = fam.name;
  let type: string = fam.type === 'untyped' ? 'unknown' : fam.type;
  let names: string[] = [fam.name];
  if (fam.type === 'histogram' || fam.type === 'summary') {
    names = [fam.name, `${fam.name}_count`, `${fam.name}_sum`, `${fam.name}_created`, ...(fam.type === 'histogram' ? [`${fam.name}_bucket`] : [])];
    for (const series of seriesRuns(fam, fam.type === 'histogram' ? 'le' : 'quantile')) {
      const ok = fam.type === 'histogram' ? omHistogramSeries(fam, series) : omSummarySeries(fam, series);
      if (!ok) {
        dropped += series.length;
        continue;
      }
      dropped += series.length - ok.length;
      for (const x of ok) body += sampleLine(x.s, fam.text, x.s.name, x.labels);
    }
  } else if (fam.type === 'counter') {
    const exact = fam.samples.some((s) => s.name === fam.name);
    const total = exact ? fam.name : `${fam.name}_total`;
    if (total.endsWith('_total')) {
      // OpenMetrics counters: TYPE without _total, samples with it, never NaN or negative.
      typeName = total.slice(0, -6);
      names = [typeName, total, `${typeName}_created`];
      for (const s of fam.samples) {
        if (s.name === total && s.value >= 0) body += sampleLine(s, fam.text, s.name, s.labels);
        else dropped++;
      }
    } else {
      // TGI's and Triton's counters do not end in _total, which OpenMetrics requires: unknown.
      type = 'unknown';
      for (const s of fam.samples) {
        if (s.name === fam.name) body += sampleLine(s, fam.text, s.name, s.labels);
        else dropped++;
      }
    }
  } else if (fam.type === 'info' || fam.type === 'stateset') {
    // An info sample is 1; a stateset sample names its state in the label the family is named after, 0 or 1.
    names = fam.type === 'info' ? [fam.name, `${fam.name}_info`] : [fam.name];
    for (const s of fam.samples) {
      const ok =
        fam.type === 'info'
          ? s.name === `${fam.name}_info` && s.value === 1
          : s.name === fam.name && (s.value === 0 || s.value === 1) && s.labels.some((l, i) => i % 2 === 0 && l === fam.name);
      if (ok) body += sampleLine(s, fam.text, s.name, s.labels);
      else dropped++;
    }
  } else if (fam.type === 'gaugehistogram') {
    names = [fam.name, `${fam.name}_bucket`, `${fam.name}_gcount`, `${fam.name}_gsum`];
    for (const series of seriesRuns(fam, 'le')) {
      const ok = omGaugeHistogramSeries(fam, series);
      if (!ok) dropped += series.length;
      else for (const s of ok) body += sampleLine(s, fam.text, s.name, s.labels);
    }
  } else if (textBody !== undefined) {
    // Gauges and unknowns: every sample line is the same in both formats.
    body = textBody;
  } else {
    for (const s of fam.samples) body += sampleLine(s, fam.text, s.name, s.labels);
  }
  if (!body) return { block: undefined, dropped };
  return { block: { header: metaLines(typeName, type, fam.help), body, names }, dropped };
}

/** prometheus_client's 0.0.4 `_created` gauges duplicate what OpenMetrics carries in-family. */
function isCreatedGauge(f: Family): boolean {
  return f.type === 'gauge' && f.name.endsWith('_created');
}

/** Guarded parsed families as the text the agent keeps between scrapes. */
export function toPassthroughFamilies(families: readonly Family[]): PassthroughFamily[] {
  const out: PassthroughFamily[] = [];
  for (const f of families) {
    if (f.samples.length === 0 || f.name.startsWith(RESERVED_PREFIX)) continue;
    const text = textBlock(f);
    const om = isCreatedGauge(f)
      ? { block: undefined, dropped: 0 }
      : openMetricsBlock(f, f.type === 'gauge' || f.type === 'untyped' ? text.block?.body : undefined);
    out.push({ name: f.name, type: f.type, text: text.block, openmetrics: om.block, droppedIn: { text: text.dropped, openmetrics: om.dropped } });
  }
  return out;
}

/** Sample names already written; a family whose names overlap them is left out. */
export class NameClaims {
  private readonly taken = new Set<string>();
  /** Families left out because a name was taken. */
  clashes = 0;

  claim(names: readonly string[]): boolean {
    for (const n of names)
      if (this.taken.has(n)) {
        this.clashes++;
        return false;
      }
    for (const n of names) this.taken.add(n);
    return true;
  }

  has(name: string): boolean {
    return this.taken.has(name);
  }
}

/** The names the canonical families take in a format. */
export function canonicalClaims(canonical: readonly CanonicalFamily[], format: ExpositionFormat): NameClaims {
  const claims = new NameClaims();
  for (const fam of canonical) {
    const n = fam.metric.exportName;
    const base = format === 'openmetrics' && fam.metric.type === 'counter' && n.endsWith('_total') ? n.slice(0, -6) : n;
    claims.claim([n, base, `${base}_bucket`, `${base}_count`, `${base}_sum`, `${base}_created`, `${base}_info`]);
  }
  return claims;
}

/** One upstream's passthrough families, except those in `exclude` (shared with other upstreams). */
export function renderPassthrough(families: readonly PassthroughFamily[], format: ExpositionFormat, exclude: ReadonlySet<string>, claims: NameClaims): string {
  const out: string[] = [];
  for (const f of families) {
    const b = f[format];
    if (!b || exclude.has(f.name) || !claims.claim(b.names)) continue;
    out.push(b.header, b.body);
  }
  return out.join('');
}

/** Family names emitted by more than one upstream. */
export function sharedFamilies(passthrough: readonly PassthroughSet[]): Set<string> {
  const seen = new Set<string>();
  const shared = new Set<string>();
  for (const p of passthrough) for (const f of p.families) (seen.has(f.name) ? shared : seen).add(f.name);
  return shared;
}

/** Sample lines with an `upstream` label added first; lines end only at \n (never at \r or U+2028). */
function withUpstream(body: string, upstream: string): string {
  const label = `upstream="${escapeLabelValue(upstream)}"`;
  let out = '';
  let pos = 0;
  while (pos < body.length) {
    let eol = body.indexOf('\n', pos);
    if (eol < 0) eol = body.length;
    let nameEnd = pos;
    while (nameEnd < eol) {
      const c = body.charCodeAt(nameEnd);
      if (c === 123 || c === 32) break;
      nameEnd++;
    }
    const name = body.slice(pos, nameEnd);
    if (body.charCodeAt(nameEnd) === 123) {
      out +=
        body.charCodeAt(nameEnd + 1) === 125 ? `${name}{${label}${body.slice(nameEnd + 1, eol + 1)}` : `${name}{${label},${body.slice(nameEnd + 1, eol + 1)}`;
    } else out += `${name}{${label}}${body.slice(nameEnd, eol + 1)}`;
    pos = eol + 1;
  }
  return out;
}

/**
 * Families emitted by several upstreams, written once each with an `upstream` label per series.
 * Only blocks with the same header merge; a family that differs in type keeps the first.
 */
export function renderShared(passthrough: readonly PassthroughSet[], shared: ReadonlySet<string>, format: ExpositionFormat, claims: NameClaims): string {
  const merged = new Map<string, { header: string; names: readonly string[]; parts: string[] }>();
  for (const p of passthrough) {
    for (const f of p.families) {
      const b = f[format];
      if (!b || !shared.has(f.name)) continue;
      const m = merged.get(f.name);
      if (!m) merged.set(f.name, { header: b.header, names: b.names, parts: [withUpstream(b.body, p.upstream)] });
      else if (m.header === b.header) m.parts.push(withUpstream(b.body, p.upstream));
      else claims.clashes++;
    }
  }
  const out: string[] = [];
  for (const m of merged.values()) if (claims.claim(m.names)) out.push(m.header, ...m.parts);
  return out.join('');
}

export function renderCanonical(canonical: readonly CanonicalFamily[], format: ExpositionFormat): string {
  const out: string[] = [];
  for (const fam of canonical) if (fam.metric.export !== false) renderCanonicalFamily(fam, format, out);
  return out.join('');
}

/** The whole data part of an exposition in one call (the agent caches the pieces instead). */
export function renderExposition(
  canonical: readonly CanonicalFamily[],
  parsed: ReadonlyArray<{ upstream: string; families: readonly Family[] }>,
  format: ExpositionFormat,
): string {
  const passthrough = parsed.map((p) => ({ upstream: p.upstream, families: toPassthroughFamilies(p.families) }));
  const claims = canonicalClaims(canonical, format);
  const shared = sharedFamilies(passthrough);
  return (
    renderCanonical(canonical, format) +
    passthrough.map((p) => renderPassthrough(p.families, format, shared, claims)).join('') +
    renderShared(passthrough, shared, format, claims)
  );
}
