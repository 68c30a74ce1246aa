// Prometheus text (0.0.4) and OpenMetrics 1.0 parser: one pass over the string with charCodeAt,
// no regexes, every scan bounded by its own line so that no input shape is worse than linear.
// It rejects, line by line, what Prometheus's own parser rejects (counted by reason, never
// copied), so that nothing it accepts can make the agent's re-export unparseable.

/** The OpenMetrics-only types (info, stateset, gaugehistogram) are kept as such, not as unknown. */
export type FamilyType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped' | 'info' | 'stateset' | 'gaugehistogram';
export type InputFormat = 'text' | 'openmetrics';

export interface Sample {
  /** Full sample name, e.g. `vllm:e2e_request_latency_seconds_bucket`. */
  name: string;
  /** Flat label pairs `[name0, value0, name1, value1, …]` in exposition order. */
  labels: string[];
  value: number;
  /**
   * Where the sample's name, labels and value sit in the parsed body (`Family.text`), set only
   * for lines already written exactly as the agent's serialiser would write them, so
   * passthrough can re-emit them verbatim. Timestamps and exemplars lie outside the range.
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

/** Why a line was rejected (stable codes: they are label values of infertel_rejected_lines_total). */
export type RejectReason =
  | 'bad_metric_name'
  | 'bad_label_set'
  | 'bad_label_name'
  | 'reserved_label_name'
  | 'duplicate_label_name'
  | 'bad_escape'
  | 'bad_value'
  | 'bad_timestamp'
  | 'trailing_tokens'
  | 'exemplar_in_text'
  | 'bad_exemplar'
  | 'bad_le'
  | 'bad_quantile'
  | 'bad_metadata'
  | 'bad_type'
  | 'duplicate_metadata'
  | 'metadata_after_samples'
  | 'sample_outside_family'
  | 'after_eof';

export interface ParseResult {
  families: Family[];
  /** Lines rejected (they are skipped, the rest is kept). */
  errors: number;
  /** Rejected lines by reason. */
  rejected: Partial<Record<RejectReason, number>>;
  /** Position and reason of the first rejected line, never its content (it may hold secrets). */
  firstError: string | undefined;
  sampleCount: number;
}

const HASH = 35,
  SPACE = 32,
  TAB = 9,
  NL = 10,
  LBRACE = 123,
  RBRACE = 125,
  QUOTE = 34,
  BACKSLASH = 92,
  EQUALS = 61,
  COMMA = 44;

const ESCAPE = /\\([\\"n])/g;
const unescapeOne = (_m: string, c: string): string => (c === 'n' ? '\n' : c);

/** Shared by every sample without labels (nothing mutates a parsed label array). */
const NO_LABELS: string[] = [];

const FAMILY_SUFFIXES: Record<FamilyType, readonly string[]> = {
  counter: ['_total', '_created'],
  gauge: [],
  histogram: ['_bucket', '_count', '_sum', '_created'],
  summary: ['_count', '_sum', '_created'],
  untyped: [],
  info: ['_info'],
  stateset: [],
  gaugehistogram: ['_bucket', '_gcount', '_gsum'],
};

/** Every sample name a family of this type may use (OpenMetrics' clash rule). */
export function familySampleNames(name: string, type: FamilyType): string[] {
  return [name, ...FAMILY_SUFFIXES[type].map((s) => name + s)];
}

function isMetricNameStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c === 58;
}
function isMetricNameChar(c: number): boolean {
  return isMetricNameStart(c) || (c >= 48 && c <= 57);
}
function isLabelNameStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95;
}
function isLabelNameChar(c: number): boolean {
  return isLabelNameStart(c) || (c >= 48 && c <= 57);
}
function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** Case-insensitive `word` at text[pos, pos + word.length) (word in lower case). */
function wordAt(text: string, pos: number, end: number, word: string): boolean {
  if (end - pos !== word.length) return false;
  for (let k = 0; k < word.length; k++) {
    const c = text.charCodeAt(pos + k) | 0x20;
    if (c !== word.charCodeAt(k)) return false;
  }
  return true;
}

/**
 * Whether text[start, end) is a float Go's strconv.ParseFloat accepts in Prometheus's parser:
 * decimal with optional exponent, or inf/infinity/nan in any case; no hex, no `_`, no spaces.
 */
export function isGoFloat(text: string, start: number, end: number): boolean {
  let i = start;
  if (i >= end) return false;
  const c0 = text.charCodeAt(i);
  const signed = c0 === 43 || c0 === 45;
  if (signed) i++;
  if (wordAt(text, i, end, 'inf') || wordAt(text, i, end, 'infinity')) return true;
  if (!signed && wordAt(text, i, end, 'nan')) return true;
  let digits = 0;
  while (i < end && isDigit(text.charCodeAt(i))) {
    i++;
    digits++;
  }
  if (i < end && text.charCodeAt(i) === 46) {
    i++;
    while (i < end && isDigit(text.charCodeAt(i))) {
      i++;
      digits++;
    }
  }
  if (digits === 0) return false;
  return afterExponent(text, i, end) === end;
}

/** Where an optional exponent (`e`, optional sign, digits) starting at `i` ends; -1 when it has no digits. */
function afterExponent(text: string, i: number, end: number): number {
  if (i >= end || (text.charCodeAt(i) | 0x20) !== 101) return i;
  i++;
  if (i < end && (text.charCodeAt(i) === 43 || text.charCodeAt(i) === 45)) i++;
  const es = i;
  while (i < end && isDigit(text.charCodeAt(i))) i++;
  return i === es ? -1 : i;
}

/** The value of a Go float literal already checked by isGoFloat (specials included). */
function goFloatValue(text: string, start: number, end: number): number {
  let i = start;
  const c0 = text.charCodeAt(i);
  const neg = c0 === 45;
  if (c0 === 43 || c0 === 45) i++;
  const c = text.charCodeAt(i) | 0x20;
  if (c === 105) return neg ? -Infinity : Infinity;
  if (c === 110) return NaN;
  return parseNumberAt(text, start, end);
}

/** Parses a label value or bound as Prometheus does: undefined unless it is a valid, in-range float. */
export function parseFloatStrict(s: string): number | undefined {
  if (!isGoFloat(s, 0, s.length)) return undefined;
  const v = goFloatValue(s, 0, s.length);
  return !Number.isFinite(v) && !isSpecialLiteral(s, 0, s.length) ? undefined : v;
}

function isSpecialLiteral(text: string, start: number, end: number): boolean {
  let i = start;
  const c0 = text.charCodeAt(i);
  if (c0 === 43 || c0 === 45) i++;
  const c = text.charCodeAt(i) | 0x20;
  return i < end && (c === 105 || c === 110);
}

export function parseValue(text: string): number {
  return parseFloatStrict(text) ?? Number.NaN;
}

const POW10 = [1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/**
 * The number in text[start, end) without slicing a string: decimal mantissas of up to 15 digits
 * with a power of ten up to 22 are exact in doubles, so one multiplication or division rounds
 * correctly (Clinger's fast path). Anything else goes through the engine's own parser. Callers
 * check the syntax first (isGoFloat); this only computes.
 */
export function parseNumberAt(text: string, start: number, end: number): number {
  let i = start;
  let neg = false;
  const c0 = text.charCodeAt(i);
  if (c0 === 45 || c0 === 43) {
    neg = c0 === 45;
    i++;
  }
  let mantissa = 0;
  let significant = 0;
  let scale = 0;
  let seenDigit = false;
  let fraction = false;
  for (; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 46 && !fraction) {
      fraction = true;
      continue;
    }
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
    if (e0 === 45 || e0 === 43) {
      eneg = e0 === 45;
      i++;
    }
    const es = i;
    for (; i < end; i++) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      exp = exp * 10 + (c - 48);
    }
    if (i === es) return slowNumber(text, start, end);
    if (eneg) exp = -exp;
  }
  if (i !== end || !seenDigit || significant > 15) return slowNumber(text, start, end);
  const p = scale + exp;
  let v: number;
  if (p === 0) v = mantissa;
  else if (p > 0 && p <= 22) v = mantissa * (POW10[p] ?? 10 ** p);
  else if (p < 0 && p >= -22) v = mantissa / (POW10[-p] ?? 10 ** -p);
  else return slowNumber(text, start, end);
  return neg ? -v : v;
}

function slowNumber(text: string, start: number, end: number): number {
  if (!isGoFloat(text, start, end)) return Number.NaN;
  if (isSpecialLiteral(text, start, end)) return goFloatValue(text, start, end);
  return Number(text.slice(start, end));
}

/** Whether `text` spells `word` at `pos` (a plain loop beats startsWith for short words). */
function sameAt(text: string, pos: number, word: string): boolean {
  for (let k = word.length - 1; k >= 0; k--) if (text.charCodeAt(pos + k) !== word.charCodeAt(k)) return false;
  return true;
}

/** Value forms both Prometheus and strict OpenMetrics parsers read the same way (safe to copy verbatim). */
function isPlainNumber(text: string, start: number, end: number): boolean {
  let i = start;
  if (text.charCodeAt(i) === 45) i++;
  let digits = 0;
  while (i < end && isDigit(text.charCodeAt(i))) {
    i++;
    digits++;
  }
  if (digits === 0)
    return (end - start === 4 && (sameAt(text, start, '+Inf') || sameAt(text, start, '-Inf'))) || (end - start === 3 && sameAt(text, start, 'NaN'));
  if (i < end && text.charCodeAt(i) === 46) {
    i++;
    let frac = 0;
    while (i < end && isDigit(text.charCodeAt(i))) {
      i++;
      frac++;
    }
    if (frac === 0) return false;
  }
  return afterExponent(text, i, end) === end;
}

function belongsTo(family: Family, sampleName: string): boolean {
  if (sampleName === family.name) return family.type !== 'histogram' && family.type !== 'gaugehistogram' && family.type !== 'info';
  if (sampleName.length <= family.name.length || !sampleName.startsWith(family.name)) return false;
  const suffixes = FAMILY_SUFFIXES[family.type];
  for (const s of suffixes) {
    if (sampleName.length === family.name.length + s.length && sampleName.endsWith(s)) return true;
  }
  return false;
}

/**
 * Parse a whole exposition. Rejected lines are counted and skipped. Samples that continue a
 * family already seen earlier in the body are appended to it, so interleaved output still groups.
 */
export function parseExposition(text: string, format: InputFormat = 'text'): ParseResult {
  const state = new ParserState(format);
  state.feed(text, 0, text.length);
  return state.finish();
}

/** The format a body is in: the Content-Type's word first, then the body's own `# EOF`. */
export function detectFormat(contentType: string, body: string): InputFormat {
  if (/application\/openmetrics-text/i.test(contentType)) return 'openmetrics';
  let end = body.length;
  while (end > 0 && (body.charCodeAt(end - 1) === NL || body.charCodeAt(end - 1) === SPACE)) end--;
  return end >= 5 && body.startsWith('# EOF', end - 5) && (end === 5 || body.charCodeAt(end - 6) === NL) ? 'openmetrics' : 'text';
}

/** Incremental parser: feed whole lines in chunks (used to yield the event loop on large bodies). */
export class ParserState {
  readonly families: Family[] = [];
  private readonly byName = new Map<string, Family>();
  /** Families whose TYPE or HELP line has been seen. */
  private readonly typed = new Set<string>();
  private readonly helped = new Set<string>();
  private current: Family | undefined;
  errors = 0;
  readonly rejected: Partial<Record<RejectReason, number>> = {};
  firstError: string | undefined;
  sampleCount = 0;
  private eof = false;
  private text: string | undefined;

  constructor(readonly format: InputFormat = 'text') {}

  private familyFor(name: string, type: FamilyType | undefined): Family {
    let fam = this.byName.get(name);
    if (!fam) {
      fam = { name, type: type ?? 'untyped', help: undefined, samples: [], text: this.text };
      this.byName.set(name, fam);
      this.families.push(fam);
    }
    return fam;
  }

  private reject(reason: RejectReason, text: string, pos: number): void {
    this.errors++;
    this.rejected[reason] = (this.rejected[reason] ?? 0) + 1;
    if (this.firstError === undefined) {
      let line = 1;
      for (let i = text.indexOf('\n'); i >= 0 && i < pos; i = text.indexOf('\n', i + 1)) line++;
      this.firstError = `line ${line}: ${reason}`;
    }
  }

  /** Parse lines in text[start, end); `end` must sit just after a newline or at the end of text. */
  feed(text: string, start: number, end: number): void {
    this.text = text;
    let pos = start;
    while (pos < end) {
      let eol = text.indexOf('\n', pos);
      if (eol < 0 || eol > end) eol = end;
      if (eol > pos) {
        if (this.eof) this.reject('after_eof', text, pos);
        else this.line(text, pos, eol);
      }
      pos = eol + 1;
    }
  }

  finish(): ParseResult {
    return { families: this.families, errors: this.errors, rejected: this.rejected, firstError: this.firstError, sampleCount: this.sampleCount };
  }

  private line(text: string, start: number, end: number): void {
    let i = start;
    while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
    if (i >= end) return;
    if (text.charCodeAt(i) === HASH) {
      this.comment(text, start, i + 1, end);
      return;
    }
    this.sample(text, i, end);
  }

  private comment(text: string, lineStart: number, start: number, end: number): void {
    let i = start;
    if (i >= end || (text.charCodeAt(i) !== SPACE && text.charCodeAt(i) !== TAB)) return;
    while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
    let kwEnd = i;
    while (kwEnd < end && text.charCodeAt(kwEnd) !== SPACE && text.charCodeAt(kwEnd) !== TAB) kwEnd++;
    const kwLen = kwEnd - i;
    const isType = kwLen === 4 && sameAt(text, i, 'TYPE');
    const isHelp = kwLen === 4 && sameAt(text, i, 'HELP');
    const isUnit = kwLen === 4 && sameAt(text, i, 'UNIT') && this.format === 'openmetrics';
    if (this.format === 'openmetrics' && kwLen === 3 && sameAt(text, i, 'EOF') && kwEnd === end) {
      this.eof = true;
      return;
    }
    if (!isType && !isHelp && !isUnit) return;
    let n = kwEnd;
    while (n < end && (text.charCodeAt(n) === SPACE || text.charCodeAt(n) === TAB)) n++;
    let ne = n;
    while (ne < end && isMetricNameChar(text.charCodeAt(ne))) ne++;
    if (ne === n || !isMetricNameStart(text.charCodeAt(n)) || (ne < end && text.charCodeAt(ne) !== SPACE && text.charCodeAt(ne) !== TAB)) {
      this.reject('bad_metadata', text, lineStart);
      return;
    }
    const name = text.slice(n, ne);
    if (isUnit) return;
    if (isType) {
      let ts = ne;
      while (ts < end && (text.charCodeAt(ts) === SPACE || text.charCodeAt(ts) === TAB)) ts++;
      let te = end;
      while (te > ts && (text.charCodeAt(te - 1) === SPACE || text.charCodeAt(te - 1) === TAB)) te--;
      const t = text.slice(ts, te);
      let type: FamilyType;
      if (t === 'counter' || t === 'gauge' || t === 'histogram' || t === 'summary') type = t;
      else if (t === 'untyped' || t === 'unknown') type = 'untyped';
      else if (this.format === 'openmetrics' && (t === 'gaugehistogram' || t === 'stateset' || t === 'info')) type = t;
      else {
        this.reject('bad_type', text, lineStart);
        return;
      }
      if (this.typed.has(name)) {
        this.reject('duplicate_metadata', text, lineStart);
        return;
      }
      // A TYPE after samples that it would claim: the samples already formed their own family.
      for (const sn of familySampleNames(name, type)) {
        const f = this.byName.get(sn);
        if (f && f.samples.length > 0) {
          this.reject('metadata_after_samples', text, lineStart);
          return;
        }
      }
      const fam = this.familyFor(name, type);
      fam.type = type;
      this.typed.add(name);
      this.current = fam;
    } else {
      if (this.helped.has(name)) {
        this.reject('duplicate_metadata', text, lineStart);
        return;
      }
      const fam = this.familyFor(name, undefined);
      this.helped.add(name);
      fam.help = unescapeHelp(ne < end ? text.slice(ne + 1, end) : '', this.format);
      this.current = fam;
    }
  }

  /** The previous sample's strings: consecutive samples mostly repeat them, so they are reused. */
  private prevName = '';
  private prevLabels: string[] = [];

  private bsText: string | undefined;
  private bsPos = -1;
  private qText: string | undefined;
  private qPos = -1;

  /** Position of the next backslash at or after `from` (-1: none), found once per stretch of text. */
  private nextBackslash(text: string, from: number): number {
    if (text !== this.bsText || (this.bsPos >= 0 && this.bsPos < from)) {
      this.bsText = text;
      this.bsPos = text.indexOf('\\', from);
    }
    return this.bsPos;
  }

  /** Position of the next quote at or after `from`, memoised the same way (amortised linear). */
  private nextQuote(text: string, from: number): number {
    if (text !== this.qText || (this.qPos >= 0 && this.qPos < from)) {
      this.qText = text;
      this.qPos = text.indexOf('"', from);
    }
    return this.qPos;
  }

  /**
   * Reads a label set starting after `{`. Returns the position after `}` or -1 (rejected).
   * `tidy` tells whether it was written exactly as the serialiser writes label sets.
   */
  private labelSet(text: string, lineStart: number, i: number, end: number, labels: string[], reuse: boolean): number {
    const prev = this.prevLabels;
    this.tidy = true;
    let first = true;
    let names: Set<string> | undefined;
    for (;;) {
      const ws = i;
      while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
      if (i !== ws) this.tidy = false;
      if (i >= end) {
        this.reject('bad_label_set', text, lineStart);
        return -1;
      }
      if (text.charCodeAt(i) === RBRACE) return i + 1;
      if (!first) {
        // After a label: `,` then another label or the closing brace.
        if (text.charCodeAt(i) !== COMMA) {
          this.reject('bad_label_set', text, lineStart);
          return -1;
        }
        i++;
        const ws2 = i;
        while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
        if (i !== ws2) this.tidy = false;
        if (i < end && text.charCodeAt(i) === RBRACE) {
          this.tidy = false;
          return i + 1;
        }
      }
      first = false;
      const ls = i;
      const k = labels.length;
      let lname: string;
      const prevLabel = reuse ? prev[k] : undefined;
      if (prevLabel !== undefined && text.charCodeAt(ls + prevLabel.length) === EQUALS && sameAt(text, ls, prevLabel)) {
        lname = prevLabel;
        i = ls + prevLabel.length;
      } else {
        if (i >= end || !isLabelNameStart(text.charCodeAt(i))) {
          this.reject(i < end && isMetricNameChar(text.charCodeAt(i)) ? 'bad_label_name' : 'bad_label_set', text, lineStart);
          return -1;
        }
        while (i < end && isLabelNameChar(text.charCodeAt(i))) i++;
        if (i < end && text.charCodeAt(i) === 58) {
          this.reject('bad_label_name', text, lineStart);
          return -1;
        }
        lname = text.slice(ls, i);
        if (lname === '__name__') {
          this.reject('reserved_label_name', text, lineStart);
          return -1;
        }
      }
      if (k < 32) {
        for (let j = 0; j < k; j += 2)
          if (labels[j] === lname) {
            this.reject('duplicate_label_name', text, lineStart);
            return -1;
          }
      } else {
        // Many labels: a set keeps the duplicate check linear.
        if (!names) {
          names = new Set();
          for (let j = 0; j < k; j += 2) names.add(labels[j] ?? '');
        }
        if (names.has(lname)) {
          this.reject('duplicate_label_name', text, lineStart);
          return -1;
        }
        names.add(lname);
      }
      const ew = i;
      while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
      if (i >= end || text.charCodeAt(i) !== EQUALS) {
        this.reject('bad_label_set', text, lineStart);
        return -1;
      }
      i++;
      while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
      if (i !== ew + 1) this.tidy = false;
      if (i >= end || text.charCodeAt(i) !== QUOTE) {
        this.reject('bad_label_set', text, lineStart);
        return -1;
      }
      i++;
      const vs = i;
      let q = this.nextQuote(text, vs);
      let value: string;
      const bs = this.nextBackslash(text, vs);
      if (bs >= 0 && bs < end && (q < 0 || bs < q)) {
        // Escapes: the slow path, which also checks that each one is one Prometheus knows.
        q = -1;
        while (i < end) {
          const c = text.charCodeAt(i);
          if (c === BACKSLASH) {
            const n = i + 1 < end ? text.charCodeAt(i + 1) : -1;
            if (n !== BACKSLASH && n !== QUOTE && n !== 110) {
              this.reject('bad_escape', text, lineStart);
              return -1;
            }
            i += 2;
            continue;
          }
          if (c === QUOTE) {
            q = i;
            break;
          }
          i++;
        }
        if (q < 0) {
          this.reject('bad_label_set', text, lineStart);
          return -1;
        }
        value = text.slice(vs, q).replace(ESCAPE, unescapeOne);
      } else {
        if (q < 0 || q >= end) {
          this.reject('bad_label_set', text, lineStart);
          return -1;
        }
        const p = reuse ? prev[k + 1] : undefined;
        value = p !== undefined && p.length === q - vs && sameAt(text, vs, p) ? p : text.slice(vs, q);
      }
      labels.push(lname, value);
      i = q + 1;
    }
  }

  private tidy = true;

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
      if (!isMetricNameStart(text.charCodeAt(i))) {
        this.reject('bad_metric_name', text, start);
        return;
      }
      while (i < end && isMetricNameChar(text.charCodeAt(i))) i++;
      name = text.slice(start, i);
    }
    let tidy = true;
    let labels = NO_LABELS;
    if (i < end && text.charCodeAt(i) === LBRACE) {
      labels = [];
      i = this.labelSet(text, start, i + 1, end, labels, true);
      if (i < 0) return;
      tidy = this.tidy;
      if (labels.length === 0) {
        tidy = false;
        labels = NO_LABELS;
      }
    }
    const ws = i;
    while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
    if (i - ws !== 1 || text.charCodeAt(ws) !== SPACE) tidy = false;
    if (i === ws && (i >= end || text.charCodeAt(i - 1) !== RBRACE)) {
      this.reject(i >= end ? 'bad_value' : 'bad_metric_name', text, start);
      return;
    }
    const vs = i;
    while (i < end && text.charCodeAt(i) !== SPACE && text.charCodeAt(i) !== TAB) i++;
    const ve = i;
    // The fast path of parseNumberAt only takes valid decimals; anything else it hands to the
    // strict check, so one scan both validates and reads the common value.
    const value = parseNumberAt(text, vs, ve);
    if (Number.isNaN(value) ? !isGoFloat(text, vs, ve) : !Number.isFinite(value) && !isSpecialLiteral(text, vs, ve)) {
      this.reject('bad_value', text, start);
      return;
    }
    if (tidy && !isPlainNumber(text, vs, ve)) tidy = false;
    if (!this.rest(text, start, i, end)) return;
    let fam = this.current;
    if (!fam || !belongsTo(fam, name)) {
      fam = this.familyOfSample(name);
      if (!fam) {
        this.reject('sample_outside_family', text, start);
        return;
      }
      this.current = fam;
    }
    // le and quantile are what Prometheus reads as numbers, on bucket and quantile samples
    // only; anything else (a missing one, a word, one on _count or _sum) is rejected here.
    if (fam.type === 'histogram' || fam.type === 'gaugehistogram') {
      const le = labelValue(labels, 'le');
      if (name.length === fam.name.length + 7 && name.endsWith('_bucket')) {
        if (le === undefined || !this.validBound(le)) {
          this.reject('bad_le', text, start);
          return;
        }
      } else if (le !== undefined) {
        this.reject('bad_le', text, start);
        return;
      }
    } else if (fam.type === 'summary') {
      const q = labelValue(labels, 'quantile');
      if (name === fam.name) {
        if (q === undefined || parseFloatStrict(q) === undefined) {
          this.reject('bad_quantile', text, start);
          return;
        }
      } else if (q !== undefined) {
        this.reject('bad_quantile', text, start);
        return;
      }
    }
    const sample: Sample = { name, labels, value };
    if (tidy) {
      sample.start = start;
      sample.end = ve;
    }
    fam.samples.push(sample);
    this.prevName = name;
    this.prevLabels = labels;
    this.sampleCount++;
  }

  /** `le` values already checked: a payload repeats the same few bounds on every series. */
  private readonly bounds = new Map<string, boolean>();

  private validBound(le: string): boolean {
    let ok = this.bounds.get(le);
    if (ok === undefined) {
      const v = parseFloatStrict(le);
      ok = v !== undefined && !Number.isNaN(v);
      if (this.bounds.size < 4096) this.bounds.set(le, ok);
    }
    return ok;
  }

  /** What may follow a value: a timestamp, and in OpenMetrics an exemplar; nothing else. */
  private rest(text: string, lineStart: number, i: number, end: number): boolean {
    while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
    if (i >= end) return true;
    if (text.charCodeAt(i) !== HASH) {
      const ts = i;
      while (i < end && text.charCodeAt(i) !== SPACE && text.charCodeAt(i) !== TAB) i++;
      if (!this.timestampOk(text, ts, i)) {
        this.reject('bad_timestamp', text, lineStart);
        return false;
      }
      while (i < end && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++;
      if (i >= end) return true;
      if (text.charCodeAt(i) !== HASH) {
        this.reject('trailing_tokens', text, lineStart);
        return false;
      }
    }
    if (this.format === 'text') {
      this.reject('exemplar_in_text', text, lineStart);
      return false;
    }
    return this.exemplar(text, lineStart, i + 1, end);
  }

  private timestampOk(text: string, start: number, end: number): boolean {
    if (this.format === 'openmetrics') return isGoFloat(text, start, end) && Number.isFinite(goFloatValue(text, start, end));
    let i = start;
    if (i < end && (text.charCodeAt(i) === 45 || text.charCodeAt(i) === 43)) i++;
    const ds = i;
    while (i < end && isDigit(text.charCodeAt(i))) i++;
    return i === end && i > ds && i - ds <= 18;
  }

  /** ` {labels} value [timestamp]` after the `#` of an OpenMetrics exemplar; validated, then dropped. */
  private exemplar(text: string, lineStart: number, i: number, end: number): boolean {
    if (text.charCodeAt(i) !== SPACE || text.charCodeAt(i + 1) !== LBRACE) {
      this.reject('bad_exemplar', text, lineStart);
      return false;
    }
    i = this.labelSet(text, lineStart, i + 2, end, [], false);
    if (i < 0) return false;
    if (text.charCodeAt(i) !== SPACE) {
      this.reject('bad_exemplar', text, lineStart);
      return false;
    }
    i++;
    const vs = i;
    while (i < end && text.charCodeAt(i) !== SPACE) i++;
    if (!isGoFloat(text, vs, i)) {
      this.reject('bad_exemplar', text, lineStart);
      return false;
    }
    if (i < end) {
      const ts = ++i;
      while (i < end && text.charCodeAt(i) !== SPACE) i++;
      if (!isGoFloat(text, ts, i) || i !== end) {
        this.reject('bad_exemplar', text, lineStart);
        return false;
      }
    }
    return true;
  }

  /** The family a sample name joins, or undefined when a typed family of that name cannot hold it. */
  private familyOfSample(name: string): Family | undefined {
    const direct = this.byName.get(name);
    if (direct && direct.type !== 'histogram' && direct.type !== 'gaugehistogram' && direct.type !== 'info') return direct;
    for (const suffix of ['_bucket', '_count', '_sum', '_total', '_created', '_info', '_gcount', '_gsum']) {
      if (name.endsWith(suffix)) {
        const fam = this.byName.get(name.slice(0, -suffix.length));
        if (fam && belongsTo(fam, name)) return fam;
      }
    }
    return direct ? undefined : this.familyFor(name, undefined);
  }
}

function unescapeHelp(raw: string, format: InputFormat): string {
  if (raw.indexOf('\\') < 0) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === '\\' && i + 1 < raw.length) {
      const n = raw[i + 1];
      if (n === 'n') {
        out += '\n';
        i++;
        continue;
      }
      if (n === '\\') {
        out += '\\';
        i++;
        continue;
      }
      if (n === '"' && format === 'openmetrics') {
        out += '"';
        i++;
        continue;
      }
    }
    out += c;
  }
  return out;
}

/** Value of label `name` in a flat label array, or undefined. */
export function labelValue(labels: readonly string[], name: string): string | undefined {
  for (let i = 0; i < labels.length; i += 2) if (labels[i] === name) return labels[i + 1];
  return undefined;
}
