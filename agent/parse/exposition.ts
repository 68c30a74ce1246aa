// Prometheus text exposition (0.0.4) parser: one pass over the string with charCodeAt, no regexes
// on the hot path. npm parsers fold histograms, split families wrongly or reject `vllm:` names,
// and run at a fifth of the speed, so this one is ours.

export type FamilyType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** Full sample name, e.g. `vllm:e2e_request_latency_seconds_bucket`. */
  name: string;
  /** Flat label pairs `[name0, value0, name1, value1, …]` in exposition order. */
  labels: string[];
  value: number;
  /**
   * Where the sample's line sits in the parsed body (`Family.text`), so passthrough can re-emit
   * it verbatim when the guards change nothing, without keeping a string per sample. -1 for
   * samples built by the agent.
   */
  start?: number;
  end?: number;
}

export interface Family {
  name: string;
  type: FamilyType;
  help: string | undefined;
  samples: Sample[];
  /** The body the samples' offsets point into. */
  text?: string;
}

export interface ParseResult {
  families: Family[];
  /** Lines that could not be parsed (they are skipped, the rest is kept). */
  errors: number;
  firstError: string | undefined;
  sampleCount: number;
}

const HASH = 35, SPACE = 32, TAB = 9, NL = 10, CR = 13, LBRACE = 123, RBRACE = 125, QUOTE = 34,
  BACKSLASH = 92, EQUALS = 61, COMMA = 44;

const FAMILY_SUFFIXES: Record<FamilyType, readonly string[]> = {
  counter: ['_total', '_created'],
  gauge: [],
  histogram: ['_bucket', '_count', '_sum', '_created'],
  summary: ['_count', '_sum', '_created'],
  untyped: [],
};

function isNameStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c === 58;
}
function isNameChar(c: number): boolean {
  return isNameStart(c) || (c >= 48 && c <= 57);
}

export function parseValue(text: string): number {
  if (text.length === 0) return Number.NaN;
  const v = +text;
  if (!Number.isNaN(v)) return v;
  switch (text) {
    case '+Inf': case 'Inf': case '+inf': case 'inf': return Infinity;
    case '-Inf': case '-inf': return -Infinity;
    case 'NaN': case 'nan': return NaN;
    default: return Number.NaN;
  }
}

const POW10 = [1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/**
 * The number in text[start, end) without slicing a string: decimal mantissas of up to 15 digits
 * with a power of ten up to 22 are exact in doubles, so one multiplication or division rounds
 * correctly (Clinger's fast path). Anything else goes through the engine's own parser.
 */
export function parseNumberAt(text: string, start: number, end: number): number {
  let i = start;
  let neg = false;
  const c0 = text.charCodeAt(i);
  if (c0 === 45 || c0 === 43) { neg = c0 === 45; i++; }
  let mantissa = 0;
  let significant = 0;
  let scale = 0;
  let seenDigit = false;
  let fraction = false;
  for (; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 46 && !fraction) { fraction = true; continue; }
    if (c < 48 || c > 57) break;
    seenDigit = true;
    if (mantissa !== 0 || c !== 48) significant++;
    mantissa = mantissa * 10 + (c - 48);
    if (fraction) scale--;
  }
  let exp = 0;
  if (i < end && (text.charCodeAt(i) === 101 || text.charCodeAt(i) === 69)) {
    i++;
    let eneg = false;
    const e0 = text.charCodeAt(i);
    if (e0 === 45 || e0 === 43) { eneg = e0 === 45; i++; }
    const es = i;
    for (; i < end; i++) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      exp = exp * 10 + (c - 48);
    }
    if (i === es) return parseValue(text.slice(start, end));
    if (eneg) exp = -exp;
  }
  if (i !== end || !seenDigit || significant > 15) return parseValue(text.slice(start, end));
  const p = scale + exp;
  let v: number;
  if (p === 0) v = mantissa;
  else if (p > 0 && p <= 22) v = mantissa * POW10[p]!;
  else if (p < 0 && p >= -22) v = mantissa / POW10[-p]!;
  else return parseValue(text.slice(start, end));
  return neg ? -v : v;
}

/** Whether `text` spells `word` at `pos` (a plain loop beats startsWith for short words). */
function sameAt(text: string, pos: number, word: string): boolean {
  for (let k = word.length - 1; k >= 0; k--) if (text.charCodeAt(pos + k) !== word.charCodeAt(k)) return false;
  return true;
}

function isNaNLiteral(text: string, start: number, end: number): boolean {
  const len = end - start;
  return len === 3 && (text.startsWith('NaN', start) || text.startsWith('nan', start));
}

function unescapeLabel(raw: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === BACKSLASH && i + 1 < raw.length) {
      const n = raw[++i];
      out += n === 'n' ? '\n' : n;
    } else out += raw[i];
  }
  return out;
}

function unescapeHelp(raw: string): string {
  return raw.indexOf('\\') < 0 ? raw : raw.replace(/\\(n|\\)/g, (_m, c: string) => (c === 'n' ? '\n' : '\\'));
}

function belongsTo(family: Family, sampleName: string): boolean {
  if (sampleName === family.name) return true;
  if (!sampleName.startsWith(family.name)) return false;
  const suffix = sampleName.slice(family.name.length);
  return FAMILY_SUFFIXES[family.type].includes(suffix);
}

/**
 * Parse a whole exposition. Bad lines are counted and skipped; a body that does not end in a
 * newline has its last line treated as truncated. Samples that continue a family already seen
 * earlier in the body are appended to it, so interleaved output still groups correctly.
 */
export function parseExposition(text: string): ParseResult {
  const state = new ParserState();
  state.feed(text, 0, text.length);
  return state.finish();
}

/** Incremental parser: feed whole lines in chunks (used to yield the event loop on large bodies). */
export class ParserState {
  readonly families: Family[] = [];
  private readonly byName = new Map<string, Family>();
  private current: Family | undefined;
  errors = 0;
  firstError: string | undefined;
  sampleCount = 0;

  private familyFor(name: string, type: FamilyType | undefined): Family {
    let fam = this.byName.get(name);
    if (!fam) {
      fam = { name, type: type ?? 'untyped', help: undefined, samples: [], text: this.text };
      this.byName.set(name, fam);
      this.families.push(fam);
    } else if (type && fam.type === 'untyped' && fam.samples.length === 0) {
      fam.type = type;
    }
    return fam;
  }

  private fail(line: string): void {
    this.errors++;
    if (this.firstError === undefined) this.firstError = line.length > 120 ? line.slice(0, 120) + '…' : line;
  }

  private text: string | undefined;

  /** Parse lines in text[start, end); `end` must sit just after a newline or at the end of text. */
  feed(text: string, start: number, end: number): void {
    this.text = text;
    let pos = start;
    while (pos < end) {
      let eol = text.indexOf('\n', pos);
      if (eol < 0 || eol > end) eol = end;
      let lineEnd = eol;
      if (lineEnd > pos && text.charCodeAt(lineEnd - 1) === CR) lineEnd--;
      if (lineEnd > pos) {
        if (eol === text.length && text.charCodeAt(text.length - 1) !== NL) {
          this.fail(text.slice(pos, lineEnd));
        } else this.line(text, pos, lineEnd);
      }
      pos = eol + 1;
    }
  }

  finish(): ParseResult {
    return { families: this.families, errors: this.errors, firstError: this.firstError, sampleCount: this.sampleCount };
  }

  private line(text: string, start: number, end: number): void {
    let i = start;
    while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
    if (i >= end) return;
    if (text.charCodeAt(i) === HASH) {
      this.comment(text, i + 1, end);
      return;
    }
    this.sample(text, i, end);
  }

  private comment(text: string, start: number, end: number): void {
    let i = start;
    while (i < end && text.charCodeAt(i) === SPACE) i++;
    const kwEnd = text.indexOf(' ', i);
    if (kwEnd < 0 || kwEnd >= end) return;
    const kw = text.slice(i, kwEnd);
    if (kw !== 'TYPE' && kw !== 'HELP') return;
    let n = kwEnd + 1;
    while (n < end && text.charCodeAt(n) === SPACE) n++;
    let ne = n;
    while (ne < end && isNameChar(text.charCodeAt(ne))) ne++;
    if (ne === n) { this.fail(text.slice(start - 1, end)); return; }
    const name = text.slice(n, ne);
    const rest = ne < end ? text.slice(ne + 1, end) : '';
    if (kw === 'TYPE') {
      const t = rest.trim();
      if (t !== 'counter' && t !== 'gauge' && t !== 'histogram' && t !== 'summary' && t !== 'untyped' && t !== 'unknown') {
        this.fail(text.slice(start - 1, end));
        return;
      }
      this.current = this.familyFor(name, t === 'unknown' ? 'untyped' : t);
    } else {
      const fam = this.familyFor(name, undefined);
      fam.help = unescapeHelp(rest);
      this.current = fam;
    }
  }

  /** The previous sample's strings: consecutive samples mostly repeat them, so they are reused. */
  private prevName = '';
  private prevLabels: string[] = [];

  private bsText: string | undefined;
  private bsPos = -1;

  /** Position of the next backslash at or after `from` (-1: none), found once per stretch of text. */
  private nextBackslash(text: string, from: number): number {
    if (text !== this.bsText || (this.bsPos >= 0 && this.bsPos < from)) {
      this.bsText = text;
      this.bsPos = text.indexOf('\\', from);
    }
    return this.bsPos;
  }

  private sample(text: string, start: number, end: number): void {
    let i = start;
    // Consecutive samples mostly repeat the previous name, already validated: compare first.
    let name: string;
    const prevName = this.prevName;
    const after = text.charCodeAt(start + prevName.length);
    if (prevName.length > 0 && (after === LBRACE || after === SPACE) && sameAt(text, start, prevName)) {
      name = prevName;
      i = start + prevName.length;
    } else {
      if (!isNameStart(text.charCodeAt(i))) { this.fail(text.slice(start, end)); return; }
      while (i < end && isNameChar(text.charCodeAt(i))) i++;
      name = text.slice(start, i);
    }
    const prev = this.prevLabels;
    const labels: string[] = [];
    if (i < end && text.charCodeAt(i) === LBRACE) {
      i++;
      for (;;) {
        while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === COMMA)) i++;
        if (i >= end) { this.fail(text.slice(start, end)); return; }
        if (text.charCodeAt(i) === RBRACE) { i++; break; }
        const ls = i;
        const k = labels.length;
        let lname: string;
        const prevLabel = prev[k];
        if (prevLabel !== undefined && text.charCodeAt(ls + prevLabel.length) === EQUALS && sameAt(text, ls, prevLabel)) {
          lname = prevLabel;
          i = ls + prevLabel.length;
        } else {
          while (i < end && isNameChar(text.charCodeAt(i))) i++;
          if (i === ls || i >= end) { this.fail(text.slice(start, end)); return; }
          lname = text.slice(ls, i);
        }
        while (i < end && text.charCodeAt(i) === SPACE) i++;
        if (text.charCodeAt(i) !== EQUALS) { this.fail(text.slice(start, end)); return; }
        i++;
        while (i < end && text.charCodeAt(i) === SPACE) i++;
        if (text.charCodeAt(i) !== QUOTE) { this.fail(text.slice(start, end)); return; }
        i++;
        const vs = i;
        // indexOf is native and much faster than a char loop; escapes are rare and take the slow path.
        i = text.indexOf('"', vs);
        let escaped = false;
        const bs = this.nextBackslash(text, vs);
        if (bs >= 0 && bs < i) {
          escaped = true;
          i = vs;
          while (i < end) {
            const c = text.charCodeAt(i);
            if (c === BACKSLASH) { i += 2; continue; }
            if (c === QUOTE) break;
            i++;
          }
        }
        if (i < 0 || i >= end) { this.fail(text.slice(start, end)); return; }
        let value: string;
        if (escaped) value = unescapeLabel(text.slice(vs, i));
        else {
          const p = prev[k + 1];
          value = p !== undefined && p.length === i - vs && sameAt(text, vs, p) ? p : text.slice(vs, i);
        }
        labels.push(lname, value);
        i++;
      }
    }
    while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
    let ve = i;
    while (ve < end && text.charCodeAt(ve) !== SPACE && text.charCodeAt(ve) !== TAB) ve++;
    const value = parseNumberAt(text, i, ve);
    if (Number.isNaN(value) && !isNaNLiteral(text, i, ve)) { this.fail(text.slice(start, end)); return; }
    // A timestamp may follow; it is ignored (the agent stamps samples with its own scrape time).
    let fam = this.current;
    if (!fam || !belongsTo(fam, name)) {
      fam = this.familyOfSample(name);
      this.current = fam;
    }
    fam.samples.push({ name, labels, value, start, end });
    this.prevName = name;
    this.prevLabels = labels;
    this.sampleCount++;
  }

  private familyOfSample(name: string): Family {
    const direct = this.byName.get(name);
    if (direct) return direct;
    for (const suffix of ['_bucket', '_count', '_sum', '_total', '_created']) {
      if (name.endsWith(suffix)) {
        const fam = this.byName.get(name.slice(0, -suffix.length));
        if (fam && belongsTo(fam, name)) return fam;
      }
    }
    return this.familyFor(name, undefined);
  }
}

/** Value of label `name` in a flat label array, or undefined. */
export function labelValue(labels: readonly string[], name: string): string | undefined {
  for (let i = 0; i < labels.length; i += 2) if (labels[i] === name) return labels[i + 1];
  return undefined;
}
