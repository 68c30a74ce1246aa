// Number and label formatting shared by the text and OpenMetrics renderers.

export function formatNumber(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export function escapeLabelValue(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;
}

export function escapeHelp(v: string): string {
  return /[\\\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n') : v;
}

/** `{a="x",b="y"}` from pairs, or '' when there are none. */
export function labelBlock(pairs: ReadonlyArray<readonly [string, string]>, extra?: string): string {
  if (pairs.length === 0 && !extra) return '';
  let out = '{';
  let first = true;
  for (const [name, value] of pairs) {
    if (!first) out += ',';
    first = false;
    out += `${name}="${escapeLabelValue(value)}"`;
  }
  if (extra) out += (pairs.length ? ',' : '') + extra;
  return `${out}}`;
}

export function flatLabelBlock(labels: readonly string[], extra?: string): string {
  if (labels.length === 0 && !extra) return '';
  let out = '{';
  if (extra) out += extra;
  for (let i = 0; i < labels.length; i += 2) {
    if (i || extra) out += ',';
    out += `${labels[i]}="${escapeLabelValue(labels[i + 1] ?? '')}"`;
  }
  return `${out}}`;
}
