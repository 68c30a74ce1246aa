// Label guards: forbidden label names, value length caps, and values that look unbounded.

/**
 * Never exported, in canonical or passthrough series, whatever config says. Matched exactly but
 * case-insensitively (`API_KEY`, `Authorization` too).
 */
export const BUILTIN_FORBIDDEN_LABELS: readonly string[] = [
  'request_id',
  'user_id',
  'session_id',
  'prompt',
  'completion',
  'trace_id',
  'api_key',
  'password',
  'token',
  'secret',
  'authorization',
  'cookie',
  'email',
];

/** Replacement for values that look unbounded (ids, addresses) in labels not allowlisted for them. */
export const UNBOUNDED_VALUE = '_unbounded_';

// Hand-written scanners instead of regular expressions: each is one pass over the value with no
// backtracking, so a hostile label value costs time linear in its length (and values are cut to
// the length cap before any of them runs).

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}
function isAlnum(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 122) || (c >= 65 && c <= 90);
}
function isAsciiLetter(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90);
}
function isSpace(c: number): boolean {
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

/** 8-4-4-4-12 hex groups joined by dashes anywhere in the value (the outer groups may be longer). */
export function hasUuid(v: string): boolean {
  // Lengths of the last five hex runs of the current dash-joined chain.
  const chain: number[] = [];
  let run = 0;
  for (let i = 0; i <= v.length; i++) {
    const c = i < v.length ? v.charCodeAt(i) : -1;
    if (isHex(c)) {
      run++;
      continue;
    }
    chain.push(run);
    if (chain.length > 5) chain.shift();
    const [first = 0, second, third, fourth, last = 0] = chain;
    if (chain.length === 5 && first >= 8 && second === 4 && third === 4 && fourth === 4 && last >= 12) return true;
    if (c !== 45) chain.length = 0;
    run = 0;
  }
  return false;
}

/** A run of 16 or more hex digits (optionally 0x-prefixed) not inside a longer word. */
export function hasLongHex(v: string): boolean {
  let i = 0;
  while (i < v.length) {
    const before = i > 0 ? v.charCodeAt(i - 1) : -1;
    let start = i;
    if (v.charCodeAt(i) === 48 && (v.charCodeAt(i + 1) | 0x20) === 120 && !isAlnum(before)) start = i + 2;
    let j = start;
    while (j < v.length && isHex(v.charCodeAt(j))) j++;
    const boundedBefore = start !== i || !isAlnum(before);
    if (j - start >= 16 && boundedBefore && !isAlnum(j < v.length ? v.charCodeAt(j) : -1)) return true;
    i = j > i ? j : i + 1;
  }
  return false;
}

/** `local@domain.tld`: no spaces or second @, a dot in the domain followed by two letters. */
export function hasEmail(v: string): boolean {
  for (let at = v.indexOf('@'); at >= 0; at = v.indexOf('@', at + 1)) {
    const b = at > 0 ? v.charCodeAt(at - 1) : -1;
    if (b < 0 || b === 64 || isSpace(b)) continue;
    // The domain runs to the next space or @; it needs `.xx` (two letters) after one character.
    let letters = -1;
    for (let j = at + 1; j < v.length; j++) {
      const c = v.charCodeAt(j);
      if (c === 64 || isSpace(c)) break;
      if (c === 46 && j > at + 1) {
        letters = 0;
        continue;
      }
      if (letters >= 0) {
        if (isAsciiLetter(c)) {
          if (++letters >= 2) return true;
        } else letters = -1;
      }
    }
  }
  return false;
}

/** Dotted quad of 1-3 digit groups, standing alone among digits and dots. */
export function hasIpv4(v: string): boolean {
  let i = 0;
  while (i < v.length) {
    const c = v.charCodeAt(i);
    if (!(c >= 48 && c <= 57) && c !== 46) {
      i++;
      continue;
    }
    let j = i;
    while (j < v.length && ((v.charCodeAt(j) >= 48 && v.charCodeAt(j) <= 57) || v.charCodeAt(j) === 46)) j++;
    let groups = 0;
    let digits = 0;
    let ok = true;
    for (let k = i; k <= j && ok; k++) {
      if (k === j || v.charCodeAt(k) === 46) {
        if (digits < 1 || digits > 3) ok = false;
        groups++;
        digits = 0;
      } else digits++;
    }
    if (ok && groups === 4) return true;
    i = j;
  }
  return false;
}

/** Two to seven colons among groups of at most four hex digits, standing alone. */
export function hasIpv6(v: string): boolean {
  let i = 0;
  while (i < v.length) {
    const c = v.charCodeAt(i);
    if (!isHex(c) && c !== 58) {
      i++;
      continue;
    }
    let j = i;
    let colons = 0;
    let group = 0;
    let ok = true;
    for (; j < v.length; j++) {
      const d = v.charCodeAt(j);
      if (d === 58) {
        colons++;
        group = 0;
      } else if (isHex(d)) {
        if (++group > 4) ok = false;
      } else break;
    }
    if (ok && colons >= 2 && colons <= 7) return true;
    i = j;
  }
  return false;
}

export function looksUnbounded(value: string): boolean {
  return hasUuid(value) || hasLongHex(value) || hasEmail(value) || hasIpv4(value) || hasIpv6(value);
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
    forbidden: new Set([...BUILTIN_FORBIDDEN_LABELS, ...extraForbidden].map((n) => n.toLowerCase())),
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
  // The cap comes first: every check after it, and the verdict cache, see at most that much.
  if (v.length > policy.maxValueLength) {
    counts.truncated++;
    v = v.slice(0, policy.maxValueLength);
  }
  if (v.length >= 7 && !policy.unboundedAllowed.has(name) && looksUnboundedCached(v)) {
    counts.redacted++;
    return UNBOUNDED_VALUE;
  }
  return v;
}

/** Verdicts per label name: names repeat on every sample, lower-casing them need not. */
const forbiddenVerdicts = new WeakMap<LabelPolicy, Map<string, boolean>>();

/** Whether a label name is on the forbidden list (exact, case-insensitive). */
export function isForbidden(policy: LabelPolicy, name: string): boolean {
  let cache = forbiddenVerdicts.get(policy);
  if (!cache) forbiddenVerdicts.set(policy, (cache = new Map()));
  let v = cache.get(name);
  if (v === undefined) {
    v = policy.forbidden.has(name) || policy.forbidden.has(name.toLowerCase());
    if (cache.size >= VERDICT_CACHE_MAX) cache.clear();
    cache.set(name, v);
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
    const name = labels[i] ?? '';
    const value = labels[i + 1] ?? '';
    if (name === skip) {
      out?.push(name, value);
      continue;
    }
    if (isForbidden(policy, name)) {
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
