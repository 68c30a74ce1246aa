// The native loop reads 2xx event streams itself (native/src/sse.rs) by the rules of stream.ts's
// StreamObserver and validator.ts's StreamValidator. These tests hold the two to each other: the
// same bytes, split into the same reads at the same times, must give the same reading, for a table
// of edge cases and for thousands of generated streams. The JS side is the reference: its rules are
// the ones the Node data path's tests pin down.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon } from '../../agent/gpu/addon.js';
import { MEASURED_ROUTES, type Route } from '../../agent/proxy/routes.js';
import { LoopReading, READING_LAYOUT, StreamObserver } from '../../agent/proxy/stream.js';
import { StreamValidator } from '../../agent/proxy/validator.js';

const loaded = loadAddon();
const skip = !loaded.ok && 'the addon is not built';

const BOUNDS = [5, 10, 25, 50, 100];
const STALL_MS = 400;
const MARK_EVERY = 3;
const RULES = `read:${STALL_MS}:${MARK_EVERY}:${BOUNDS.join(',')}`;

interface Read {
  bytes: Buffer;
  at: number;
}

type Outcome = 'complete' | 'engine_reset' | 'client_abort' | 'upstream_timeout';

/** What the recorder reads, from either side, in one comparable shape. */
function shape(r: {
  firstContentAt: number | undefined;
  lastContentAt: number | undefined;
  contentChunks: number;
  gapCounts: readonly number[];
  gapSumMs: number;
  usage: unknown;
  marks: readonly number[];
  completionTokens(): number | undefined;
  found: ReadonlySet<string>;
  choicesUntracked: boolean;
}) {
  return {
    firstContentAt: r.firstContentAt,
    lastContentAt: r.lastContentAt,
    contentChunks: r.contentChunks,
    gapCounts: [...r.gapCounts],
    gapSumMs: r.gapSumMs,
    usage: r.usage,
    completionTokens: r.completionTokens(),
    marks: [...r.marks],
    found: [...r.found],
    choicesUntracked: r.choicesUntracked,
  };
}

function byJs(route: Route, reads: Read[], endAt: number, outcome: Outcome) {
  const validator = new StreamValidator(route, STALL_MS);
  const obs = new StreamObserver(route, 'sse', false, BOUNDS, MARK_EVERY, validator);
  for (const r of reads) obs.push(r.bytes, r.at);
  if (outcome === 'complete' || outcome === 'engine_reset') obs.finish(endAt);
  else validator.end(endAt);
  return shape({ ...obs, completionTokens: () => obs.completionTokens(), found: validator.found, choicesUntracked: validator.choicesUntracked });
}

function byLoop(route: Route, reads: Read[], endAt: number, outcome: Outcome) {
  if (!loaded.ok) throw new Error('no addon');
  const numbers = loaded.addon.sseRead(
    route,
    RULES,
    Buffer.concat(reads.map((r) => r.bytes)),
    reads.map((r) => `${r.bytes.length}@${r.at}`).join(' '),
    endAt,
    outcome,
  );
  assert.ok(numbers, 'the loop read the stream');
  const reading = new LoopReading(route, numbers, BOUNDS.length + 1, 0);
  return shape({ ...reading, completionTokens: () => reading.completionTokens(), found: reading.found, choicesUntracked: reading.choicesUntracked });
}

const ev = (data: string) => `data: ${data}\n\n`;
const chat = (delta: unknown, extra: Record<string, unknown> = {}) => ev(JSON.stringify({ choices: [{ index: 0, delta, ...extra }] }));
/** One event opening choices 0..n-1 with the role, and one finishing them all. */
const manyChoices = (n: number) => [
  ev(JSON.stringify({ choices: Array.from({ length: n }, (_, index) => ({ index, delta: { role: 'assistant' } })) })),
  ev(JSON.stringify({ choices: Array.from({ length: n }, (_, index) => ({ index, delta: {}, finish_reason: 'stop' })) })),
];

/** Streams whose every rule was chosen by hand: each names what it tries. */
const TABLE: Array<[string, Route, Array<string | Buffer>]> = [
  [
    'a chat stream with role, content, finish, usage and [DONE]',
    '/v1/chat/completions',
    [
      chat({ role: 'assistant', content: '' }),
      chat({ content: 'Hel' }),
      chat({ content: 'lo' }),
      chat({}, { finish_reason: 'stop' }),
      ev('{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}'),
      ev('[DONE]'),
    ],
  ],
  [
    'no role, content after finish, [DONE] with a choice open',
    '/v1/chat/completions',
    [chat({ content: 'x' }), chat({ content: 'y' }, { index: 1, finish_reason: 'length' }), chat({ content: 'z' }, { index: 1 }), ev('[DONE]')],
  ],
  [
    'a repeated key means its last value',
    '/v1/chat/completions',
    [ev('{"choices":[{"delta":{"role":"assistant","content":"a"}}],"choices":[]}'), ev('{"usage":{"completion_tokens":1},"usage":{"completion_tokens":4}}')],
  ],
  [
    'escaped names',
    '/v1/responses',
    [
      ev('{"type":"response.output_text.d\\u0065lta","delta":"hi"}'),
      ev('{"type":"response.c\\u006fmpleted","response":{"usage":{"input_tokens":3,"output_tokens":1}}}'),
    ],
  ],
  [
    '[DONE] amid JS and non-JS white space',
    '/v1/completions',
    [ev('{"choices":[{"text":"a"}]}'), 'data: \u00a0[DONE]\u2003\n\n', ev('{"choices":[{"text":"late"}]}')],
  ],
  ['U+0085 is no white space to JS', '/v1/completions', [ev('{"choices":[{"text":"a"}]}'), 'data: [DONE]\u0085\n\n']],
  ['not JSON: trailing comma, NaN, single quotes, a BOM', '/v1/chat/completions', [ev('{"choices":[],}'), ev('NaN'), ev("{'a':1}"), ev('\ufeff{}')]],
  [
    'CRLF events, comments, a bare data line and multi-line data',
    '/v1/completions',
    [': keep-alive\r\n\r\n', 'data:{"choices":[{"text":\r\ndata:"b"}]}\r\n\r\n', 'event: x\n\n'],
  ],
  [
    'delta null falls back to message; empty and full tool_calls',
    '/v1/chat/completions',
    [chat(null, { message: { content: 'm' } }), chat({ role: 'assistant', tool_calls: [] }), chat({ tool_calls: [{}] })],
  ],
  ['choices that are not objects, and an array document', '/v1/chat/completions', [ev('{"choices":[null,1,"s",[]]}'), ev('[1,2]'), ev('"text"'), ev('3')]],
  [
    'index -0 is index 0',
    '/v1/chat/completions',
    [chat({ role: 'assistant', content: 'a' }, { index: -0 }), ev('{"choices":[{"index":-0.0,"delta":{"content":"b"},"finish_reason":"stop"}]}'), ev('[DONE]')],
  ],
  [
    'usage numbers: negative, fractional, huge, strings',
    '/v1/completions',
    [ev('{"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":2.5}}'), ev('{"usage":{"prompt_tokens":1e999,"completion_tokens":"7"}}')],
  ],
  [
    'TGI tokens, a special one, and details',
    '/generate_stream',
    [
      ev('{"token":{"text":"a"}}'),
      ev('{"token":{"special":true}}'),
      ev('{"token":[]}'),
      ev('{"token":{},"generated_text":"a","details":{"generated_tokens":-0}}'),
    ],
  ],
  ['TGI details with an infinite count', '/generate_stream', [ev('{"token":{"text":"a"}}'), ev('{"details":{"generated_tokens":1e400}}')]],
  ['TGI /generate reads generated_text as content', '/generate', [ev('{"generated_text":""}')]],
  [
    'responses: a whole response object with output and usage',
    '/v1/responses',
    [ev('{"object":"response","output":[{}],"usage":{"input_tokens":2}}'), ev('{"type":"response.failed"}'), ev('{"type":"x"}')],
  ],
  ['embeddings: a list with usage', '/v1/embeddings', [ev('{"object":"list","data":[],"usage":{"prompt_tokens":4}}')]],
  [
    'deep nesting is checked, not kept',
    '/v1/chat/completions',
    [ev(`{"choices":[{"delta":{"role":"assistant","content":${'['.repeat(40)}1${']'.repeat(40)}}}]}`), ev(`{"x":${'['.repeat(40)}1,${']'.repeat(40)}}`)],
  ],
  [
    'invalid UTF-8 inside and outside strings',
    '/v1/completions',
    [Buffer.from('data: {"choices":[{"text":"\xff"}]}\n\n', 'latin1'), Buffer.from('data: \xff\n\n', 'latin1')],
  ],
  ['an event left without its blank line', '/v1/completions', [ev('{"choices":[{"text":"a"}]}'), 'data: {"choices":[],"usage":{"completion_tokens":5}}']],
  ['stray bytes after [DONE]', '/v1/chat/completions', [chat({ role: 'assistant', content: 'a' }, { finish_reason: 'stop' }), ev('[DONE]'), 'junk\n\n']],
  ['the 256th choice index is still followed', '/v1/chat/completions', [...manyChoices(256), chat({ content: 'x' }, { index: 255 }), ev('[DONE]')]],
  [
    'a 257th choice index is not followed, and the stream is flagged',
    '/v1/chat/completions',
    [
      ...manyChoices(256),
      chat({ content: 'x' }, { index: 256 }),
      chat({}, { index: 256, finish_reason: 'stop' }),
      chat({ content: 'y' }, { index: 256 }),
      ev('[DONE]'),
    ],
  ],
];

/** Strings as UTF-8; raw bytes (not UTF-8) are written as Buffers. */
const bytesOf = (e: string | Buffer) => (typeof e === 'string' ? Buffer.from(e) : e);

describe('the loop reads event streams as stream.ts does', { skip }, () => {
  it("stream.ts reads each figure where sse.rs puts it: the addon's layout by name", () => {
    if (!loaded.ok) throw new Error('no addon');
    assert.deepStrictEqual(loaded.addon.readingLayout(), { ...READING_LAYOUT });
  });

  for (const [name, route, events] of TABLE) {
    it(name, () => {
      const whole = Buffer.concat(events.map(bytesOf));
      for (const outcome of ['complete', 'client_abort'] as const) {
        // One read per event, then the same bytes at every two-way split.
        const perEvent = events.map((e, k) => ({ bytes: bytesOf(e), at: 1000 + 7 * k * k }));
        assert.deepStrictEqual(byLoop(route, perEvent, 2000, outcome), byJs(route, perEvent, 2000, outcome), `${outcome}, one read per event`);
        for (let split = 1; split < whole.length; split += Math.max(1, Math.floor(whole.length / 40))) {
          const reads = [
            { bytes: whole.subarray(0, split), at: 1000 },
            { bytes: whole.subarray(split), at: 1500 },
          ];
          assert.deepStrictEqual(byLoop(route, reads, 1501, outcome), byJs(route, reads, 1501, outcome), `${outcome}, split at ${split}`);
        }
      }
    });
  }

  it('the table is not read alike by accident: a different route reads the first stream differently', () => {
    const reads = TABLE[0]![2].map((e, k) => ({ bytes: bytesOf(e), at: 100 + k }));
    assert.notDeepStrictEqual(byLoop('/v1/chat/completions', reads, 200, 'complete'), byLoop('/generate_stream', reads, 200, 'complete'));
    assert.equal(byLoop('/v1/chat/completions', reads, 200, 'complete').completionTokens, 2);
  });

  it('agrees on 3,000 generated streams, split and timed at random', () => {
    let seed = 0x5eed;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x80000000;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const text = () => pick(['', 'a', 'héllo', '\\n', '\\u00e9', ' ']);
    const num = () => pick(['0', '-0', '1', '7', '2.5', '-3', '1e999', '"4"', 'null', 'true']);
    const delta = () =>
      pick([
        `{"role":"assistant","content":"${text()}"}`,
        `{"content":"${text()}"}`,
        `{"tool_calls":${pick(['[]', '[{}]'])}}`,
        `{"reasoning_content":"${text()}"}`,
        '{}',
        'null',
        '"s"',
      ]);
    const choice = () =>
      `{"index":${pick(['0', '1', '-0', '"0"'])},"delta":${delta()}${pick(['', ',"finish_reason":"stop"', ',"finish_reason":null', ',"text":"t"', ',"message":{"content":"m"}'])}}`;
    const doc = () =>
      pick([
        () => `{"choices":[${choice()}]}`,
        () => `{"choices":[${choice()},${choice()}]}`,
        () => `{"choices":[],"usage":{"prompt_tokens":${num()},"completion_tokens":${num()}}}`,
        () => `{"error":{"message":"x"},"choices":[${choice()}]}`,
        () => `{"token":{"text":"${text()}","special":${pick(['true', 'false'])}}}`,
        () => `{"token":{},"details":{"generated_tokens":${num()}}${pick(['', ',"generated_text":"g"'])}}`,
        () =>
          `{"type":"${pick(['response.output_text.delta', 'response.reasoning_text.delta', 'response.completed', 'response.incomplete'])}","delta":"${text()}","response":{"usage":{"input_tokens":${num()},"output_tokens":${num()}}}}`,
        () => `{"object":"${pick(['response', 'list'])}","output":${pick(['[]', '[1]'])},"data":[],"usage":{"input_tokens":${num()},"prompt_tokens":${num()}}}`,
        () => pick(['[DONE]', ' [DONE] ', '[DONE]x', '{', '{"a":1,}', '[]', '{"a":1}{"b":2}', '0', '"s"']),
      ])();
    const event = () =>
      pick([() => `data: ${doc()}\n\n`, () => `data:${doc()}\r\n\r\n`, () => `: comment\n\n`, () => `event: message\ndata: ${doc()}\n\n`, () => 'stray\n\n'])();
    const routes = MEASURED_ROUTES as readonly Route[];
    for (let n = 0; n < 3000; n++) {
      const route = pick(routes);
      const count = 1 + Math.floor(rand() * 8);
      let body = '';
      for (let k = 0; k < count; k++) body += event();
      if (rand() < 0.2) body += `data: ${doc()}`;
      const whole = Buffer.from(body);
      const reads: Read[] = [];
      let at = 1000;
      for (let start = 0; start < whole.length; ) {
        const len = 1 + Math.floor(rand() * 120);
        at += Math.floor(rand() * 3) === 0 ? Math.floor(rand() * 600) : Math.floor(rand() * 30);
        reads.push({ bytes: whole.subarray(start, start + len), at });
        start += len;
      }
      const outcome = pick(['complete', 'engine_reset', 'client_abort', 'upstream_timeout'] as const);
      assert.deepStrictEqual(byLoop(route, reads, at + 1, outcome), byJs(route, reads, at + 1, outcome), `stream ${n} on ${route}: ${JSON.stringify(body)}`);
    }
  });
});
