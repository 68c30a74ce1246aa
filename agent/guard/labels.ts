// Label guards: forbidden label names, value length caps, and values that look unbounded.

/** Never exported, in canonical or passthrough series, whatever config says. */
export const BUILTIN_FORBIDDEN_LABELS: readonly string[] = [
  'request_id', 'user_id', 'session_id', 'prompt', 'completion', 'trace_id', 'api_key',
];

/** Replacement for values that look unbounded (ids, addresses) in labels not allowlisted for them. */
export const UNBOUNDED_VALUE = '_unbounded_';

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;
const LONG_HEX = /(?:^|[^0-9a-z])(?:0x)?[0-9a-f]{16,}(?:$|[^0-9a-z])/i;
const EMAIL = /[^\s@]+@[^\s@]+\.[a-z]{2,}/i;
const IPV4 = /(?:^|[^0-9.])(?:\d{1,3}\.){3}\d{1,3}(?:$|[^0-9.])/;
const IPV6 = /(?:^|[^0-9a-f:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:$|[^0-9a-f:])/i;

export function looksUnbounded(value: string): boolean {
  return UUID.test(value) || LONG_HEX.test(value) || EMAIL.test(value) || IPV4.test(value) || IPV6.test(value);
}

/** Verdicts per distinct value: label values repeat on every scrape, the regexes need not. */
const verdicts = new Map<string, boolean>();
const VERDICT_CACHE_MAX = 20_000;

function looksUnboundedCached(value: string): boolean {
  let v = verdicts.get(value);
  if (v === undefined) {
    if (verdicts.size >= VERDICT_CACHE_MAX) verdicts.clear();
    verdicts.set(value, (v = looksUnbounded(value)));
  }
  return v;
}

export interface LabelPolicy {
  forbidden: ReadonlySet<string>;
  maxValueLength: number;
  /** Label names whose values may look like ids or addresses (model names can be hashes). */
  unboundedAllowed: ReadonlySet<string>;
}

export function makeLabelPolicy(extraForbidden: readonly string[], maxValueLength: number, unboundedAllowed: readonly string[]): LabelPolicy {
  return {
    forbidden: new Set([...BUILTIN_FORBIDDEN_LABELS, ...extraForbidden]),
    maxValueLength,
    unboundedAllowed: new Set(unboundedAllowed),
  };
}

export interface GuardCounts {
  truncated: number;
  redacted: number;
  forbiddenDropped: number;
}

export function newGuardCounts(): GuardCounts {
  return { truncated: 0, redacted: 0, forbiddenDropped: 0 };
}

/** Apply the policy to one label value; counts what it changed. */
export function guardValue(policy: LabelPolicy, name: string, value: string, counts: GuardCounts): string {
  let v = value;
  if (v.length >= 7 && !policy.unboundedAllowed.has(name) && looksUnboundedCached(v)) {
    counts.redacted++;
    return UNBOUNDED_VALUE;
  }
  if (v.length > policy.maxValueLength) {
    counts.truncated++;
    v = v.slice(0, policy.maxValueLength);
  }
  return v;
}

/**
 * Guard a flat label array (upstream order kept). Returns the same array when nothing changed,
 * so the common case allocates nothing.
 */
export function guardLabels(policy: LabelPolicy, labels: readonly string[], counts: GuardCounts, skip?: string): readonly string[] {
  let out: string[] | undefined;
  for (let i = 0; i < labels.length; i += 2) {
    const name = labels[i] as string;
    const value = labels[i + 1] as string;
    if (name === skip) { out?.push(name, value); continue; }
    if (policy.forbidden.has(name)) {
      counts.forbiddenDropped++;
      out ??= labels.slice(0, i);
      continue;
    }
    const guarded = guardValue(policy, name, value, counts);
    if (guarded !== value) out ??= labels.slice(0, i);
    out?.push(name, guarded);
  }
  return out ?? labels;
}
