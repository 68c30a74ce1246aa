//! Reading a 2xx event stream in the loop, so that JS is told once per request instead of once per
//! read: when content first and last arrived, the gaps between content reads, the usage, and the
//! streaming validator's findings (003 §18.11). It is agent/proxy/stream.ts's StreamObserver and
//! validator.ts's StreamValidator over the same events, rule for rule, and a test feeds both the
//! same streams and compares what they read. JS's per-event work (a decode, JSON.parse and the
//! schema reads) was about half the CPU each chunk cost on the native data path.
//!
//! Where JS would read a JSON value, this reads one as JSON.parse would: a document JSON.parse
//! refuses is refused here, a repeated key means its last value, and truthiness and `typeof` are
//! JavaScript's. Only the top levels are kept as values (the schemas read nothing deeper); deeper
//! containers are checked and skipped without recursion, so no nesting can exhaust the stack.

use crate::edge::{event_end, find_byte};
use std::borrow::Cow;

/** The measured routes, as agent/proxy/routes.ts's routeOf matches them. */
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Route {
    Chat,
    Completions,
    Responses,
    Embeddings,
    Generate,
    GenerateStream,
    Other,
}

pub fn route_of(target: &str) -> Route {
    match target.split('?').next().unwrap_or("") {
        "/v1/chat/completions" => Route::Chat,
        "/v1/completions" => Route::Completions,
        "/v1/responses" => Route::Responses,
        "/v1/embeddings" => Route::Embeddings,
        "/generate" => Route::Generate,
        "/generate_stream" => Route::GenerateStream,
        _ => Route::Other,
    }
}

/** A partial event held back longer than this is passed on unread, as stream.ts's MAX_PARTIAL_EVENT. */
const MAX_PARTIAL_EVENT: usize = 1024 * 1024;
/** Span-event marks kept per stream, as StreamObserver's maxMarks. */
const MAX_MARKS: usize = 4096;
/** Containers deeper than this are checked, not kept: the schemas read four levels at most. */
const KEPT_DEPTH: usize = 6;

/** A JSON value as far as the schemas read it; strings and keys stay as their raw bytes between the quotes. */
#[derive(Debug)]
enum J<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a [u8]),
    Arr(Vec<J<'a>>),
    Obj(Vec<(&'a [u8], J<'a>)>),
    /** A container below KEPT_DEPTH: only whether it is an array and has members. */
    Deep {
        array: bool,
        empty: bool,
    },
}

impl<'a> J<'a> {
    /** A member of an object (its last, as JSON.parse keeps); nothing for any other value, as a JS property read of these keys. */
    fn get(&self, key: &str) -> Option<&J<'a>> {
        match self {
            J::Obj(members) => members.iter().rev().find(|(k, _)| raw_eq(k, key)).map(|(_, v)| v),
            _ => None,
        }
    }

    fn is_object(&self) -> bool {
        matches!(self, J::Obj(_) | J::Arr(_) | J::Deep { .. })
    }

    fn is_array(&self) -> bool {
        matches!(self, J::Arr(_) | J::Deep { array: true, .. })
    }

    fn array_len(&self) -> usize {
        match self {
            J::Arr(v) => v.len(),
            J::Deep { array: true, empty } => usize::from(!empty),
            _ => 0,
        }
    }

    fn truthy(&self) -> bool {
        match self {
            J::Null => false,
            J::Bool(b) => *b,
            J::Num(n) => *n != 0.0 && !n.is_nan(),
            J::Str(s) => !s.is_empty(),
            _ => true,
        }
    }

    fn is(&self, want: &str) -> bool {
        matches!(self, J::Str(s) if raw_eq(s, want))
    }
}

fn truthy(v: Option<&J>) -> bool {
    v.is_some_and(J::truthy)
}

/** stream.ts's nonEmpty: a string or an array with something in it. */
fn non_empty(v: Option<&J>) -> bool {
    match v {
        Some(J::Str(s)) => !s.is_empty(),
        Some(v) => v.array_len() > 0,
        None => false,
    }
}

/** stream.ts's numberOf: a finite number not below zero. */
fn count_of(v: Option<&J>) -> Option<f64> {
    match v {
        Some(J::Num(n)) if n.is_finite() && *n >= 0.0 => Some(*n),
        _ => None,
    }
}

/** Whether a string's raw bytes (escapes and all) decode to `want`. */
fn raw_eq(raw: &[u8], want: &str) -> bool {
    // `want` is always an ASCII name without a backslash, and an escape is longer than what it
    // stands for: only raw bytes longer than `want` can decode to it.
    if raw.len() <= want.len() || !raw.contains(&b'\\') {
        return raw == want.as_bytes();
    }
    decode(raw).is_some_and(|s| s == want)
}

fn decode(raw: &[u8]) -> Option<String> {
    let mut units: Vec<u16> = Vec::with_capacity(raw.len());
    let text = String::from_utf8_lossy(raw);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
            continue;
        }
        let unit = match chars.next()? {
            '"' => b'"' as u16,
            '\\' => b'\\' as u16,
            '/' => b'/' as u16,
            'b' => 8,
            'f' => 12,
            'n' => 10,
            'r' => 13,
            't' => 9,
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                u16::from_str_radix(&hex, 16).ok()?
            }
            _ => return None,
        };
        units.push(unit);
    }
    // A lone surrogate decodes to U+FFFD here; it could not equal the ASCII names compared against.
    Some(char::decode_utf16(units).map(|r| r.unwrap_or('\u{fffd}')).collect())
}

pub(crate) fn skip_ws(j: &[u8], mut i: usize) -> usize {
    while i < j.len() && matches!(j[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/** Index after the string whose quote is at `i`, by JSON's rules (no raw control characters, known escapes only). */
pub(crate) fn string_end(j: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match *j.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *j.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = j.get(i + 2..i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/** Index after the number at `i`, by JSON's grammar: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)? */
fn number_end(j: &[u8], mut i: usize) -> Option<usize> {
    let digits = |j: &[u8], mut k: usize| {
        let start = k;
        while k < j.len() && j[k].is_ascii_digit() {
            k += 1;
        }
        (k > start).then_some(k)
    };
    if j.get(i) == Some(&b'-') {
        i += 1;
    }
    match j.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(j, i)?,
        _ => return None,
    }
    if j.get(i) == Some(&b'.') {
        i = digits(j, i + 1)?;
    }
    if matches!(j.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(j.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(j, i)?;
    }
    Some(i)
}

/** Index after the literal or number at `i` (a scalar that is not a string). */
fn scalar_end(j: &[u8], i: usize) -> Option<usize> {
    for word in [&b"true"[..], b"false", b"null"] {
        if j[i..].starts_with(word) {
            return Some(i + word.len());
        }
    }
    number_end(j, i)
}

/**
 * Index after the container whose bracket is at `i`, checked by JSON's grammar with a stack of
 * its own (no recursion), and whether it had members.
 */
fn skip_container(j: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut open: Vec<u8> = vec![j[i]];
    let mut k = skip_ws(j, i + 1);
    let empty = matches!(j.get(k), Some(b'}' | b']'));
    // Each turn starts where a member (or a close) is expected.
    let mut first = true;
    loop {
        let top = *open.last()?;
        let close = if top == b'{' { b'}' } else { b']' };
        if first && j.get(k) == Some(&close) {
            open.pop();
            k += 1;
        } else {
            if top == b'{' {
                if j.get(k) != Some(&b'"') {
                    return None;
                }
                k = skip_ws(j, string_end(j, k)?);
                if j.get(k) != Some(&b':') {
                    return None;
                }
                k = skip_ws(j, k + 1);
            }
            match *j.get(k)? {
                b'{' | b'[' => {
                    open.push(j[k]);
                    k = skip_ws(j, k + 1);
                    first = true;
                    continue;
                }
                b'"' => k = string_end(j, k)?,
                _ => k = scalar_end(j, k)?,
            }
        }
        // After a value or a close: a comma goes on, a close ends containers.
        loop {
            let Some(&top) = open.last() else { return Some((k, !empty)) };
            let close = if top == b'{' { b'}' } else { b']' };
            k = skip_ws(j, k);
            match j.get(k) {
                Some(b',') => {
                    k = skip_ws(j, k + 1);
                    first = false;
                    break;
                }
                Some(&b) if b == close => {
                    open.pop();
                    k += 1;
                }
                _ => return None,
            }
        }
    }
}

/** Index after the value at `i`, checked by JSON's grammar as `value` checks it, without building it. */
pub(crate) fn value_end(j: &[u8], i: usize) -> Option<usize> {
    match *j.get(i)? {
        b'"' => string_end(j, i),
        b'{' | b'[' => skip_container(j, i).map(|(end, _)| end),
        _ => scalar_end(j, i),
    }
}

/** The value at `i` and the index after it, or None where JSON.parse would throw. */
fn value(j: &[u8], i: usize, depth: usize) -> Option<(J<'_>, usize)> {
    match *j.get(i)? {
        b'"' => {
            let end = string_end(j, i)?;
            Some((J::Str(&j[i + 1..end - 1]), end))
        }
        b'{' | b'[' if depth >= KEPT_DEPTH => {
            let (end, has_members) = skip_container(j, i)?;
            Some((J::Deep { array: j[i] == b'[', empty: !has_members }, end))
        }
        b'{' => {
            let mut members = Vec::new();
            let mut k = skip_ws(j, i + 1);
            if j.get(k) == Some(&b'}') {
                return Some((J::Obj(members), k + 1));
            }
            loop {
                if j.get(k) != Some(&b'"') {
                    return None;
                }
                let key_end = string_end(j, k)?;
                let key = &j[k + 1..key_end - 1];
                k = skip_ws(j, key_end);
                if j.get(k) != Some(&b':') {
                    return None;
                }
                let (v, end) = value(j, skip_ws(j, k + 1), depth + 1)?;
                members.push((key, v));
                k = skip_ws(j, end);
                match j.get(k) {
                    Some(b',') => k = skip_ws(j, k + 1),
                    Some(b'}') => return Some((J::Obj(members), k + 1)),
                    _ => return None,
                }
            }
        }
        b'[' => {
            let mut items = Vec::new();
            let mut k = skip_ws(j, i + 1);
            if j.get(k) == Some(&b']') {
                return Some((J::Arr(items), k + 1));
            }
            loop {
                let (v, end) = value(j, k, depth + 1)?;
                items.push(v);
                k = skip_ws(j, end);
                match j.get(k) {
                    Some(b',') => k = skip_ws(j, k + 1),
                    Some(b']') => return Some((J::Arr(items), k + 1)),
                    _ => return None,
                }
            }
        }
        b't' | b'f' | b'n' => {
            let end = scalar_end(j, i)?;
            Some((
                match j[i] {
                    b't' => J::Bool(true),
                    b'f' => J::Bool(false),
                    _ => J::Null,
                },
                end,
            ))
        }
        _ => {
            let end = number_end(j, i)?;
            // Valid JSON number text is valid Rust float text; too large a one is infinite, as in JS.
            let n = std::str::from_utf8(&j[i..end]).ok()?.parse().ok()?;
            Some((J::Num(n), end))
        }
    }
}

/** One JSON document as JSON.parse reads it, or None where it would throw. */
fn parse(j: &[u8]) -> Option<J<'_>> {
    let (v, end) = value(j, skip_ws(j, 0), 0)?;
    (skip_ws(j, end) == j.len()).then_some(v)
}

/** JavaScript's String.prototype.trim() space: Unicode White_Space but U+0085, and U+FEFF. */
fn js_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

/** Whether `bytes`, trimmed as JS trims, are `want`, which starts with a byte that is not space. */
fn trimmed_is(bytes: &[u8], want: &str) -> bool {
    // Most data starts with `{`: an ASCII byte that is neither space nor want's first is decided here.
    if let Some(&b) = bytes.first() {
        if b.is_ascii() && !b.is_ascii_whitespace() && b != 0x0b && Some(&b) != want.as_bytes().first() {
            return false;
        }
    }
    String::from_utf8_lossy(bytes).trim_matches(js_space) == want
}

fn blank(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).trim_matches(js_space).is_empty()
}

/**
 * An event's `data:` lines joined by LF, or None when it has none (stream.ts's sseData). One line,
 * as engines write each event, is borrowed rather than copied.
 */
pub(crate) fn sse_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut out: Option<Cow<[u8]>> = None;
    let mut rest = event;
    while !rest.is_empty() {
        let (line, next) = match find_byte(rest, b'\n') {
            Some(k) => (&rest[..k], &rest[k + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = line.strip_prefix(b"data:") {
            let v = v.strip_prefix(b" ").unwrap_or(v);
            match out.as_mut() {
                Some(o) => {
                    let o = o.to_mut();
                    o.push(b'\n');
                    o.extend_from_slice(v);
                }
                None => out = Some(Cow::Borrowed(v)),
            }
        }
    }
    out
}

/** Violation kinds, in validator.ts's VIOLATION_KINDS order. */
pub const STALL: u8 = 0;
pub const INVALID_JSON: u8 = 1;
pub const OUT_OF_ORDER: u8 = 2;
pub const AFTER_DONE: u8 = 3;

/** validator.ts's MAX_TRACKED_CHOICES: an index first seen past this many is not checked. */
const MAX_TRACKED_CHOICES: usize = 256;

#[derive(Clone, Copy)]
struct ChoiceState {
    finished: bool,
}

/** validator.ts's StreamValidator. */
struct Validator {
    route: Route,
    stall_after_ms: f64,
    /** Kinds in the order found (each once): the request log lists them so. */
    found: Vec<u8>,
    last_event_at: Option<f64>,
    done: bool,
    usage_seen: bool,
    choices: std::collections::HashMap<u64, ChoiceState>,
    /** More choice indices came than are tracked (counted as choices_untracked). */
    choices_untracked: bool,
    ended: bool,
}

impl Validator {
    fn add(&mut self, kind: u8) {
        if !self.found.contains(&kind) {
            self.found.push(kind);
        }
    }

    fn gap_to(&mut self, t: f64) {
        if self.last_event_at.is_some_and(|last| t - last > self.stall_after_ms) {
            self.add(STALL);
        }
        self.last_event_at = Some(t);
    }

    /** An event's data: `[DONE]` (is_done), else its JSON when it parsed (None: not JSON). */
    fn on_data(&mut self, is_done: bool, doc: Option<&J>, t: f64) {
        self.gap_to(t);
        if self.done {
            self.add(AFTER_DONE);
            return;
        }
        if is_done {
            self.done = true;
            if self.choices.values().any(|c| !c.finished) {
                self.add(OUT_OF_ORDER);
            }
            return;
        }
        match doc {
            None => self.add(INVALID_JSON),
            Some(d) => self.check_order(d),
        }
    }

    fn on_trailing_bytes(&mut self, t: f64) {
        self.gap_to(t);
        if self.done {
            self.add(AFTER_DONE);
        }
    }

    fn end(&mut self, t: f64) {
        if self.ended {
            return;
        }
        self.ended = true;
        if !self.done {
            self.gap_to(t);
        }
    }

    fn check_order(&mut self, d: &J) {
        if !d.is_object() {
            return;
        }
        match self.route {
            Route::GenerateStream => {
                if truthy(d.get("details")) || matches!(d.get("generated_text"), Some(J::Str(_))) {
                    self.done = true;
                }
                return;
            }
            Route::Responses => {
                if d.get("type").is_some_and(|t| t.is("response.completed") || t.is("response.failed") || t.is("response.incomplete")) {
                    self.done = true;
                }
                return;
            }
            Route::Chat | Route::Completions => {}
            _ => return,
        }
        if truthy(d.get("error")) {
            return;
        }
        let choices: &[J] = match d.get("choices") {
            Some(J::Arr(items)) => items,
            _ => &[],
        };
        // A choices array below KEPT_DEPTH cannot be: it is the top level's member.
        if choices.is_empty() && truthy(d.get("usage")) {
            self.usage_seen = true;
            return;
        }
        for c in choices {
            if !c.is_object() {
                continue;
            }
            let index = match c.get("index") {
                Some(J::Num(n)) => *n,
                _ => 0.0,
            };
            // JS's Map keys by SameValueZero: -0 is 0.
            let key = if index == 0.0 { 0 } else { index.to_bits() };
            let delta = c.get("delta");
            if !self.choices.contains_key(&key) {
                if self.choices.len() >= MAX_TRACKED_CHOICES {
                    self.choices_untracked = true;
                    continue;
                }
                self.choices.insert(key, ChoiceState { finished: false });
                if self.route == Route::Chat && !truthy(delta.and_then(|d| d.get("role"))) {
                    self.add(OUT_OF_ORDER);
                }
            }
            let has_content = match c.get("text") {
                Some(J::Str(s)) => !s.is_empty(),
                _ => delta.is_some_and(|d| truthy(d.get("content")) || truthy(d.get("tool_calls")) || truthy(d.get("reasoning_content"))),
            };
            let st = self.choices.get_mut(&key).expect("inserted above");
            let finished_before = st.finished;
            if truthy(c.get("finish_reason")) {
                st.finished = true;
            }
            if (finished_before || self.usage_seen) && has_content {
                self.add(OUT_OF_ORDER);
            }
        }
    }
}

/** What one decoded event says (stream.ts's readEvent). */
#[derive(Default)]
struct Facts {
    content: bool,
    /** Prompt and completion tokens, when the event carries a usage. */
    usage: Option<(Option<f64>, Option<f64>)>,
    tgi_token: bool,
}

fn read_event(route: Route, d: &J) -> Facts {
    let mut f = Facts::default();
    if !d.is_object() {
        return f;
    }
    match route {
        Route::Generate | Route::GenerateStream => {
            if let Some(token) = d.get("token").filter(|t| t.truthy() && t.is_object()) {
                f.tgi_token = true;
                f.content = !matches!(token.get("special"), Some(J::Bool(true)));
            }
            if route == Route::Generate && matches!(d.get("generated_text"), Some(J::Str(_))) {
                f.content = true;
            }
            // Any number, as stream.ts reads it (not through numberOf).
            if let Some(J::Num(n)) = d.get("details").and_then(|x| x.get("generated_tokens")) {
                f.usage = Some((None, Some(*n)));
            }
        }
        Route::Responses => {
            let kind = d.get("type");
            if kind.is_some_and(|t| t.is("response.output_text.delta") || t.is("response.reasoning_text.delta")) {
                f.content = non_empty(d.get("delta"));
            }
            let is_response = d.get("object").is_some_and(|o| o.is("response"));
            let usage = if kind.is_some_and(|t| t.is("response.completed")) {
                d.get("response").and_then(|r| r.get("usage"))
            } else if is_response {
                d.get("usage")
            } else {
                None
            };
            if let Some(u) = usage.filter(|u| u.truthy() && u.is_object()) {
                f.usage = Some((count_of(u.get("input_tokens")), count_of(u.get("output_tokens"))));
            }
            if is_response && d.get("output").is_some_and(|o| o.is_array() && o.array_len() > 0) {
                f.content = true;
            }
        }
        _ => {
            if let Some(J::Arr(choices)) = d.get("choices") {
                for c in choices.iter().filter(|c| c.is_object()) {
                    let delta = match c.get("delta") {
                        None | Some(J::Null) => c.get("message"),
                        some => some,
                    };
                    let delta_content = delta.is_some_and(|x| {
                        x.truthy() && (non_empty(x.get("content")) || non_empty(x.get("reasoning_content")) || non_empty(x.get("tool_calls")))
                    });
                    if non_empty(c.get("text")) || delta_content {
                        f.content = true;
                    }
                }
            }
            if d.get("data").is_some_and(J::is_array) && d.get("object").is_some_and(|o| o.is("list")) {
                f.content = true;
            }
            if let Some(u) = d.get("usage").filter(|u| u.truthy() && u.is_object()) {
                f.usage = Some((count_of(u.get("prompt_tokens")), count_of(u.get("completion_tokens"))));
            }
        }
    }
    f
}

/** How one stream is read: the histogram's bounds, how often to mark the time of a content read, and the stall limit. */
#[derive(Clone, Debug, Default)]
pub struct ReadingRules {
    pub gap_bounds_ms: Vec<f64>,
    /** Every this-many content reads, its time is kept for span events; 0 keeps none (no tracing). */
    pub mark_every: usize,
    pub stall_after_ms: f64,
}

/** One 2xx event stream being read, as StreamObserver with its validator. */
pub struct StreamReading {
    route: Route,
    rules: std::sync::Arc<ReadingRules>,
    first_content_at: Option<f64>,
    last_content_at: Option<f64>,
    content_chunks: u64,
    gap_counts: Vec<f64>,
    gap_sum_ms: f64,
    usage: Option<(Option<f64>, Option<f64>)>,
    tgi_tokens: u64,
    saw_end: bool,
    marks: Vec<f64>,
    held: Vec<u8>,
    validator: Validator,
}

/**
 * Where each figure sits in StreamReading::summary. stream.ts's LoopReading reads them by the same
 * names: the addon's readingLayout() gives this table to JS, and a test holds the two equal.
 */
pub mod slot {
    pub const FIRST_CONTENT_AT: usize = 0;
    pub const LAST_CONTENT_AT: usize = 1;
    pub const CONTENT_CHUNKS: usize = 2;
    pub const GAP_SUM_MS: usize = 3;
    pub const USAGE_READ: usize = 4;
    pub const PROMPT_TOKENS: usize = 5;
    pub const COMPLETION_TOKENS: usize = 6;
    pub const TGI_TOKENS: usize = 7;
    pub const SAW_END: usize = 8;
    /** The first of FOUND_KINDS violation kinds. */
    pub const FOUND: usize = 9;
    pub const FOUND_KINDS: usize = 4;
    pub const CHOICES_UNTRACKED: usize = 13;
    /** The first of the gap histogram's counts; the marks follow them. */
    pub const GAP_COUNTS: usize = 14;

    /** The table JS reads by name (camelCase, as stream.ts names them). */
    pub const NAMED: [(&str, usize); 13] = [
        ("firstContentAt", FIRST_CONTENT_AT),
        ("lastContentAt", LAST_CONTENT_AT),
        ("contentChunks", CONTENT_CHUNKS),
        ("gapSumMs", GAP_SUM_MS),
        ("usageRead", USAGE_READ),
        ("promptTokens", PROMPT_TOKENS),
        ("completionTokens", COMPLETION_TOKENS),
        ("tgiTokens", TGI_TOKENS),
        ("sawEnd", SAW_END),
        ("found", FOUND),
        ("foundKinds", FOUND_KINDS),
        ("choicesUntracked", CHOICES_UNTRACKED),
        ("gapCounts", GAP_COUNTS),
    ];
}

impl StreamReading {
    pub fn new(route: Route, rules: std::sync::Arc<ReadingRules>) -> StreamReading {
        let buckets = rules.gap_bounds_ms.len() + 1;
        let stall_after_ms = rules.stall_after_ms;
        StreamReading {
            route,
            rules,
            first_content_at: None,
            last_content_at: None,
            content_chunks: 0,
            gap_counts: vec![0.0; buckets],
            gap_sum_ms: 0.0,
            usage: None,
            tgi_tokens: 0,
            saw_end: false,
            marks: Vec::new(),
            held: Vec::new(),
            validator: Validator {
                route,
                stall_after_ms,
                found: Vec::new(),
                last_event_at: None,
                done: false,
                usage_seen: false,
                choices: Default::default(),
                choices_untracked: false,
                ended: false,
            },
        }
    }

    fn content_at(&mut self, t: f64) {
        match self.last_content_at {
            None => self.first_content_at = Some(t),
            Some(last) => {
                let gap = t - last;
                let bucket = self.rules.gap_bounds_ms.partition_point(|b| gap > *b);
                self.gap_counts[bucket] += 1.0;
                self.gap_sum_ms += gap;
            }
        }
        self.last_content_at = Some(t);
        self.content_chunks += 1;
        let every = self.rules.mark_every as u64;
        if every > 0 && self.content_chunks.is_multiple_of(every) && self.marks.len() < MAX_MARKS {
            self.marks.push(t);
        }
    }

    /** One read's bytes, at `t`: its complete events are read, a partial last one is held. */
    pub fn push(&mut self, data: &[u8], t: f64) {
        let mut content = false;
        let mut read_events = |reading: &mut StreamReading, buf: &[u8]| {
            let mut start = 0;
            while let Some(end) = event_end(&buf[start..]) {
                content |= reading.on_event(&buf[start..start + end], t);
                start += end;
            }
            start
        };
        let mut held = std::mem::take(&mut self.held);
        if held.is_empty() {
            // The usual read: whole events, read where they lie rather than copied to be held.
            let used = read_events(self, data);
            held.extend_from_slice(&data[used..]);
        } else {
            held.extend_from_slice(data);
            let used = read_events(self, &held);
            held.drain(..used);
        }
        // Past the limit the partial event is passed on unread, as stream.ts does.
        if held.len() > MAX_PARTIAL_EVENT {
            held.clear();
        }
        self.held = held;
        if content {
            self.content_at(t);
        }
    }

    /** Whether the event carried content. */
    fn on_event(&mut self, event: &[u8], t: f64) -> bool {
        let Some(data) = sse_data(event) else {
            // Comments (keep-alives) are fine anywhere; other bytes matter only after [DONE].
            if !blank(event) && !event.starts_with(b":") {
                self.validator.on_trailing_bytes(t);
            }
            return false;
        };
        if trimmed_is(&data, "[DONE]") {
            self.saw_end = true;
            self.validator.on_data(true, None, t);
            return false;
        }
        let Some(doc) = parse(&data) else {
            self.validator.on_data(false, None, t);
            return false;
        };
        self.validator.on_data(false, Some(&doc), t);
        let f = read_event(self.route, &doc);
        if f.tgi_token {
            self.tgi_tokens += 1;
        }
        if f.usage.is_some() {
            self.usage = f.usage;
            if !matches!(self.route, Route::Chat | Route::Completions) {
                self.saw_end = true;
            }
        }
        f.content
    }

    /** The body ended at `t` (complete, or the engine reset it): an unfinished last event is read as it is. */
    pub fn finish(&mut self, t: f64) {
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            self.on_event(&held, t);
        }
        self.validator.end(t);
    }

    /** The exchange ended at `t` any other way (the client left, the engine timed out). */
    pub fn end(&mut self, t: f64) {
        self.validator.end(t);
    }

    /**
     * What JS records, as numbers at the places `slot` names: first and last content time (NaN:
     * none), content reads, the gap sum, whether a usage was read, its prompt and completion
     * tokens (NaN: absent), TGI token events, whether the stream completed, four violation kinds
     * in the order found (-1: none), whether choice indices went untracked, then the gap
     * histogram's counts (one per bound and +Inf), then the marks.
     */
    pub fn summary(&self) -> Vec<f64> {
        let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let flag = |b: bool| f64::from(u8::from(b));
        let (prompt, completion) = self.usage.unwrap_or((None, None));
        let mut out = vec![0.0; slot::GAP_COUNTS];
        out[slot::FIRST_CONTENT_AT] = opt(self.first_content_at);
        out[slot::LAST_CONTENT_AT] = opt(self.last_content_at);
        out[slot::CONTENT_CHUNKS] = self.content_chunks as f64;
        out[slot::GAP_SUM_MS] = self.gap_sum_ms;
        out[slot::USAGE_READ] = flag(self.usage.is_some());
        out[slot::PROMPT_TOKENS] = opt(prompt);
        out[slot::COMPLETION_TOKENS] = opt(completion);
        out[slot::TGI_TOKENS] = self.tgi_tokens as f64;
        out[slot::SAW_END] = flag(self.saw_end);
        for k in 0..slot::FOUND_KINDS {
            out[slot::FOUND + k] = self.validator.found.get(k).map_or(-1.0, |&kind| f64::from(kind));
        }
        out[slot::CHOICES_UNTRACKED] = flag(self.validator.choices_untracked);
        out.extend_from_slice(&self.gap_counts);
        out.extend_from_slice(&self.marks);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_is_trims_as_js_does() {
        // Each expected value is node's `s.trim() === "[DONE]"`.
        let cases: [(&str, bool); 12] = [
            ("[DONE]", true),
            (" [DONE] ", true),
            ("\u{0b}[DONE]", true),
            ("\u{a0}[DONE]", true),
            ("\u{feff}[DONE]", true),
            ("\u{85}[DONE]", false),
            ("{\"a\":1}", false),
            ("x[DONE]", false),
            ("\u{1c}[DONE]", false),
            ("\t\r\n\u{0c}[DONE]", true),
            ("[DONE]\u{2028}", true),
            ("", false),
        ];
        for (text, want) in cases {
            assert_eq!(trimmed_is(text.as_bytes(), "[DONE]"), want, "{text:?}");
        }
    }

    #[test]
    fn raw_eq_decodes_escaped_keys_only_when_they_can_match() {
        // As JSON.parse reads the key: node -e 'JSON.parse("{\"ty\\u0070e\":1}")' has `type`.
        let cases: [(&[u8], &str, bool); 7] = [
            (b"type", "type", true),
            (b"ty\\u0070e", "type", true),
            (b"typ", "type", false),
            (b"types", "type", false),
            (b"\\u0074", "t", true),
            (b"t\\n", "t", false),
            (b"\xff\\n", "t", false),
        ];
        for (raw, want, expect) in cases {
            assert_eq!(raw_eq(raw, want), expect, "{raw:?} {want}");
        }
    }

    #[test]
    fn parse_agrees_with_json_parse_table() {
        // Each was checked against node -e 'JSON.parse(...)'.
        let accepted = [
            "{}",
            " [ ] ",
            "0",
            "-0.5e+3",
            "1E400",
            "\"a\\u00e9\\n\"",
            "{\"a\":[1,{\"b\":null}],\"a\":true}",
            "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]",
            "{\"x\":[[[[[[[[{\"y\":[]}]]]]]]]]}",
            "\t\r\n{\"k\" : \"v\" }\n",
        ];
        let refused = [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "-",
            "tru",
            "nul",
            "'a'",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}\"",
            "{a:1}",
            "[1 2]",
            "{} {}",
            "NaN",
            "Infinity",
            "[[[[[[[[[[1]]]]]]]]]",
            "{\"x\":[[[[[[[[{\"y\":[,]}]]]]]]]]}",
            "{\"x\":[[[[[[[[{\"y\" []}]]]]]]]]}",
            "\u{feff}{}",
        ];
        for text in accepted {
            assert!(parse(text.as_bytes()).is_some(), "refused {text:?}");
        }
        for text in refused {
            assert!(parse(text.as_bytes()).is_none(), "accepted {text:?}");
        }
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_none(), "an unclosed deep document is refused, without recursion");
        let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(closed.as_bytes()).is_some());
    }

    #[test]
    fn a_repeated_key_reads_its_last_value_and_escapes_decode() {
        let doc = parse(br#"{"type":"x","type":"response.completed","object":"li\u0073t"}"#).expect("valid");
        assert!(doc.get("type").is_some_and(|t| t.is("response.completed")));
        assert!(doc.get("object").is_some_and(|t| t.is("list")));
    }

    fn rules() -> std::sync::Arc<ReadingRules> {
        std::sync::Arc::new(ReadingRules { gap_bounds_ms: vec![10.0, 50.0], mark_every: 2, stall_after_ms: 1000.0 })
    }

    fn chat(content: &str) -> String {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"{content}\"}}}}]}}\n\n")
    }

    #[test]
    fn a_chat_stream_at_every_split() {
        let events = [
            chat(""),
            chat("a"),
            chat("b"),
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_string(),
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n".to_string(),
            "data: [DONE]\n\n".to_string(),
        ];
        let whole: String = events.concat();
        for split in 1..whole.len() {
            let mut r = StreamReading::new(Route::Chat, rules());
            r.push(&whole.as_bytes()[..split], 100.0);
            r.push(&whole.as_bytes()[split..], 130.0);
            r.finish(131.0);
            let s = r.summary();
            assert_eq!(s[4..9], [1.0, 7.0, 2.0, 0.0, 1.0], "usage and end at split {split}");
            assert_eq!(s[9], -1.0, "no violation at split {split}");
        }
        // One event per read, 20 ms apart: content in the reads of "a" and "b" only.
        let mut r = StreamReading::new(Route::Chat, rules());
        for (k, e) in events.iter().enumerate() {
            r.push(e.as_bytes(), 100.0 + 20.0 * k as f64);
        }
        r.finish(300.0);
        let s = r.summary();
        assert_eq!(s[0..4], [120.0, 140.0, 2.0, 20.0]);
        assert_eq!(s[13], 0.0, "one choice: none untracked");
        assert_eq!(s[14..17], [0.0, 1.0, 0.0], "one gap of 20 ms, in the (10, 50] bucket");
        assert_eq!(s[17..], [140.0], "the second content read is marked");
    }

    #[test]
    fn violations_are_listed_once_each_in_the_order_found() {
        let mut r = StreamReading::new(Route::Chat, rules());
        r.push(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n", 0.0);
        r.push(b"data: {not json\n\n", 5000.0);
        r.push(b"data: [DONE]\n\n", 5001.0);
        r.push(b"data: {}\n\nstray\n\n", 5002.0);
        r.end(5003.0);
        assert_eq!(r.summary()[9..13], [OUT_OF_ORDER as f64, STALL as f64, INVALID_JSON as f64, AFTER_DONE as f64]);
    }

    #[test]
    fn choice_indices_past_the_cap_are_not_checked_and_are_flagged() {
        let event = |choices: &str| format!("data: {{\"choices\":[{choices}]}}\n\n");
        let opened: Vec<String> = (0..MAX_TRACKED_CHOICES).map(|i| format!("{{\"index\":{i},\"delta\":{{\"role\":\"assistant\"}}}}")).collect();
        let mut r = StreamReading::new(Route::Chat, rules());
        r.push(event(&opened.join(",")).as_bytes(), 0.0);
        assert_eq!(r.summary()[13], 0.0, "exactly the cap: all tracked");
        // One index past the cap, with no role, finished and then given content: out of order twice over, but not followed.
        let past = MAX_TRACKED_CHOICES;
        r.push(event(&format!("{{\"index\":{past},\"delta\":{{}},\"finish_reason\":\"stop\"}}")).as_bytes(), 1.0);
        r.push(event(&format!("{{\"index\":{past},\"delta\":{{\"content\":\"late\"}}}}")).as_bytes(), 2.0);
        r.end(3.0);
        let s = r.summary();
        assert_eq!(s[9], -1.0, "the untracked index is not checked");
        assert_eq!(s[13], 1.0, "and the stream is flagged");
    }

    #[test]
    fn route_table() {
        assert_eq!(route_of("/v1/chat/completions?x=1"), Route::Chat);
        assert_eq!(route_of("/generate_stream"), Route::GenerateStream);
        assert_eq!(route_of("/v1/chat/completions/"), Route::Other);
        assert_eq!(route_of("/V1/completions"), Route::Other);
    }
}
