// The proxy's pure parts, table-driven: route matching, body inspection, the SSE observer,
// tenants and key hashing, PII scrubbing, and the metrics' bucket arithmetic.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createHash, createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { buildCatalogue, proxySourced } from '../../agent/catalogue/catalogue.js';
import { sameEngine } from '../../agent/agent.js';
import { validateConfig } from '../../agent/config/load.js';
import { bucketIndex } from '../../agent/proxy/metrics.js';
import { promptHash, RequestLog, scrubPii } from '../../agent/proxy/request-log.js';
import { type Exchange, noteFacts, type ProxyDeps } from '../../agent/proxy/exchange.js';
import { inspectBody, promptMaterial, routeOf } from '../../agent/proxy/routes.js';
import { StreamObserver, sseData } from '../../agent/proxy/stream.js';
import { apiKeyOf, hashKey, keyFromStdin, TenantResolver } from '../../agent/proxy/tenants.js';
import { CLI, runCli, tempDir } from '../helpers.js';

describe('proxy units: routes', () => {
  const cases: Array<[string, string]> = [
    ['/v1/chat/completions', '/v1/chat/completions'],
    ['/v1/chat/completions?x=1', '/v1/chat/completions'],
    ['/v1/completions', '/v1/completions'],
    ['/v1/responses', '/v1/responses'],
    ['/v1/embeddings', '/v1/embeddings'],
    ['/generate', '/generate'],
    ['/generate_stream', '/generate_stream'],
    ['/v1/chat/completions/', 'other'],
    ['/V1/CHAT/COMPLETIONS', 'other'],
    ['/v1/models', 'other'],
    ['/metrics', 'other'],
    ['', 'other'],
  ];
  for (const [url, route] of cases) it(`${JSON.stringify(url)} is route ${route}`, () => assert.equal(routeOf(url), route));
});

describe('proxy units: request bodies', () => {
  const b = (doc: unknown) => Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc));
  it('injects include_usage only into streams that did not ask, keeping other stream_options', () => {
    const f = inspectBody('/v1/chat/completions', b({ model: 'm', stream: true, stream_options: { continuous_usage_stats: false }, messages: [] }), 'POST');
    assert.equal(f.facts.usageInjected, true);
    assert.deepEqual(JSON.parse(f.body.toString()).stream_options, { continuous_usage_stats: false, include_usage: true });
    const asked = b({ model: 'm', stream: true, stream_options: { include_usage: true } });
    const g = inspectBody('/v1/completions', asked, 'POST');
    assert.equal(g.facts.usageInjected, false);
    assert.equal(g.body, asked, 'the very same bytes');
    assert.equal(inspectBody('/v1/chat/completions', b({ model: 'm' }), 'POST').facts.usageInjected, false, 'not a stream');
    assert.equal(inspectBody('/v1/responses', b({ model: 'm', stream: true }), 'POST').facts.usageInjected, false, 'responses streams always end with usage');
  });
  // Without stream_options the client's bytes are kept and the option is added as the last member.
  const kept: Array<[string, string]> = [
    ['{"model":"m","stream":true}', '{"model":"m","stream":true,"stream_options":{"include_usage":true}}'],
    ['{ "model": "m", "stream": true }\n', '{ "model": "m", "stream": true ,"stream_options":{"include_usage":true}}\n'],
    ['{"stream":true,"prompt":"a } b","n":1.0}', '{"stream":true,"prompt":"a } b","n":1.0,"stream_options":{"include_usage":true}}'],
    [
      '{"stream":true,"messages":[{"role":"user","content":"}"}]}\r\n\t ',
      '{"stream":true,"messages":[{"role":"user","content":"}"}],"stream_options":{"include_usage":true}}\r\n\t ',
    ],
  ];
  for (const [sent, forwarded] of kept)
    it(`adds stream_options to ${JSON.stringify(sent)} in place`, () => {
      const f = inspectBody('/v1/completions', b(sent), 'POST');
      assert.equal(f.facts.usageInjected, true);
      assert.equal(f.body.toString(), forwarded);
      assert.deepEqual(JSON.parse(f.body.toString()), { ...JSON.parse(sent), stream_options: { include_usage: true } });
    });

  it('makes and keeps no body when it went on already (the native loop added include_usage itself)', () => {
    const sent = b({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    const f = inspectBody('/v1/chat/completions', sent, 'POST', false);
    assert.equal(f.facts.usageInjected, true, "still says the usage chunk is not the client's");
    assert.equal(f.body.length, 0, 'no rewritten copy is made, and the bytes are not handed back');
    assert.equal(f.facts.requestedModel, 'm');
    assert.equal('body' in f.facts, false, 'what the exchange keeps holds no body');
  });
  it('hashes the prompt text as sent: the string, or the JSON of the messages or input', () => {
    const messages = [{ role: 'user', content: 'Summarise "this"' }];
    const rows: Array<[Parameters<typeof inspectBody>[0], string, string | undefined]> = [
      ['/v1/chat/completions', JSON.stringify({ messages }), '[{"role":"user","content":"Summarise \\"this\\""}]'],
      ['/v1/completions', JSON.stringify({ prompt: 'plain text' }), 'plain text'],
      ['/v1/embeddings', JSON.stringify({ input: ['a', 'b'] }), '["a","b"]'],
      ['/generate', JSON.stringify({ inputs: 'tgi text' }), 'tgi text'],
      ['/v1/completions', JSON.stringify({ model: 'm' }), undefined],
    ];
    for (const [route, body, material] of rows) assert.equal(promptMaterial(inspectBody(route, Buffer.from(body), 'POST').facts), material, body);
    assert.equal(promptMaterial(undefined), undefined);
  });
  it('re-serialises when stream_options is there but not an object, so the key is never doubled', () => {
    const f = inspectBody('/v1/completions', b('{"stream":true,"stream_options":null}'), 'POST');
    assert.equal(f.body.toString(), '{"stream":true,"stream_options":{"include_usage":true}}');
  });

  it('reads max_new_tokens and temperature from each schema', () => {
    const rows: Array<[Parameters<typeof inspectBody>[0], unknown, number | undefined, number | undefined]> = [
      ['/v1/chat/completions', { max_completion_tokens: 64, max_tokens: 9, temperature: 0.2 }, 64, 0.2],
      ['/v1/completions', { max_tokens: 9 }, 9, undefined],
      ['/v1/responses', { max_output_tokens: 33, temperature: 1 }, 33, 1],
      ['/generate', { inputs: 'x', parameters: { max_new_tokens: 20, temperature: 0.7 } }, 20, 0.7],
      ['/v1/chat/completions', { max_tokens: '9', temperature: 'hot' }, undefined, undefined],
    ];
    for (const [route, doc, max, temp] of rows) {
      const { facts: f } = inspectBody(route, b(doc), 'POST');
      assert.equal(f.maxNewTokens, max, JSON.stringify(doc));
      assert.equal(f.temperature, temp, JSON.stringify(doc));
    }
  });
  it('marks malformed bodies of measured routes and leaves other routes unread', () => {
    for (const raw of ['{"a":', '[1,2]', 'null', '"text"', '']) assert.equal(inspectBody('/v1/completions', b(raw), 'POST').facts.malformed, true, raw);
    assert.equal(inspectBody('other', b('{"a":'), 'POST').facts.malformed, false);
    assert.equal(inspectBody('/v1/completions', b('{"a":'), 'GET').facts.malformed, false);
  });
});

describe('proxy units: the stream observer', () => {
  const bounds = [1, 10, 100];
  const chunk = (content: string) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content } }] })}\n\n`;
  const usage = `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 3 } })}\n\n`;

  it('times content chunks, not role or empty deltas, and buckets the gaps', () => {
    const o = new StreamObserver('/v1/chat/completions', 'sse', false, bounds, 2);
    const role = `data: ${JSON.stringify({ choices: [{ index: 0, delta: { role: 'assistant' } }] })}\n\n`;
    o.push(Buffer.from(role), 100);
    assert.equal(o.firstContentAt, undefined);
    o.push(Buffer.from(chunk('a')), 105);
    o.push(Buffer.from(chunk('b')), 110); // gap 5: bucket le=10
    o.push(Buffer.from(chunk('')), 111);
    o.push(Buffer.from(chunk('c')), 160); // gap 50: bucket le=100
    o.push(Buffer.from(chunk('d')), 660); // gap 500: +Inf
    assert.equal(o.firstByteAt, 100);
    assert.equal(o.firstContentAt, 105);
    assert.deepEqual(o.gapCounts, [0, 1, 1, 1]);
    assert.equal(o.gapSumMs, 555);
    assert.deepEqual(o.marks, [110, 660], 'every 2nd content chunk');
  });

  it('holds an event split across reads until its blank line, and strips only the injected usage chunk', () => {
    const o = new StreamObserver('/v1/chat/completions', 'sse', true, bounds, 32);
    const whole = `${chunk('hello') + usage}data: [DONE]\n\n`;
    const out: Buffer[] = [];
    for (let i = 0; i < whole.length; i += 7) {
      const r = o.push(Buffer.from(whole.slice(i, i + 7)), i);
      if (r) out.push(r);
    }
    const tail = o.finish();
    if (tail) out.push(tail);
    assert.equal(Buffer.concat(out).toString(), `${chunk('hello')}data: [DONE]\n\n`);
    assert.deepEqual(o.usage, { promptTokens: 5, completionTokens: 3 });
    assert.equal(o.completionTokens(), 3);
  });

  it('keeps the usage chunk when the client asked for it, and handles CRLF framing', () => {
    const o = new StreamObserver('/v1/completions', 'sse', false, bounds, 32);
    const text = `data: ${JSON.stringify({ choices: [{ text: 'x' }] })}\r\n\r\n${usage}`;
    assert.equal(o.push(Buffer.from(text), 1)!.toString(), text);
    assert.equal(o.contentChunks, 1);
  });

  it('reads TGI token events and Responses API events', () => {
    const t = new StreamObserver('/generate_stream', 'sse', false, bounds, 32);
    for (let i = 0; i < 4; i++) t.push(Buffer.from(`data:${JSON.stringify({ token: { id: i, text: 'x', special: false } })}\n\n`), i);
    assert.equal(t.completionTokens(), undefined, 'no end seen: unknown, not 4');
    t.push(Buffer.from(`data:${JSON.stringify({ token: { id: 9, text: '', special: true }, details: { generated_tokens: 5 } })}\n\n`), 9);
    assert.equal(t.completionTokens(), 5);
    assert.equal(t.contentChunks, 4, 'the special token is not content');
    const r = new StreamObserver('/v1/responses', 'sse', false, bounds, 32);
    r.push(Buffer.from(`event: response.output_text.delta\ndata: ${JSON.stringify({ type: 'response.output_text.delta', delta: 'hi' })}\n\n`), 1);
    r.push(
      Buffer.from(
        `event: response.completed\ndata: ${JSON.stringify({ type: 'response.completed', response: { usage: { input_tokens: 4, output_tokens: 1 } } })}\n\n`,
      ),
      2,
    );
    assert.equal(r.firstContentAt, 1);
    assert.deepEqual(r.usage, { promptTokens: 4, completionTokens: 1 });
  });

  it('reads usage from a non-streamed JSON body kept as a copy', () => {
    const o = new StreamObserver('/v1/chat/completions', 'json', false, bounds, 32);
    const body = JSON.stringify({ choices: [{ message: { content: 'x' } }], usage: { prompt_tokens: 7, completion_tokens: 2 } });
    o.push(Buffer.from(body.slice(0, 10)), 50);
    o.push(Buffer.from(body.slice(10)), 60);
    o.finish();
    assert.equal(o.firstContentAt, 50);
    assert.deepEqual(o.usage, { promptTokens: 7, completionTokens: 2 });
  });

  // The data field as the SSE spec reads it: one optional space after the colon, lines joined by LF.
  const dataCases: Array<[string, string | undefined]> = [
    ['event: x\ndata: a\ndata:b\n', 'a\nb'],
    [': comment\n', undefined],
    ['data: {"a":1}\n\n', '{"a":1}'],
    ['data: {"a":1}\r\n\r\n', '{"a":1}'],
    ['data:  two spaces\n\n', ' two spaces'],
    ['data:\n\n', ''],
    ['data:\r\n\r\n', ''],
    ['data: \n\n', ''],
    ['data: x', 'x'],
    ['id: 1\r\ndata: a\r\ndata: b\r\n\r\n', 'a\nb'],
    ['event: ping\n\n', undefined],
    ['xdata: no\n\n', undefined],
  ];
  for (const [event, data] of dataCases) it(`the data of ${JSON.stringify(event)} is ${JSON.stringify(data)}`, () => assert.equal(sseData(event), data));

  it('strips the injected usage chunk when it arrives as a chunk of its own, and passes other whole events through as they came', () => {
    const o = new StreamObserver('/v1/chat/completions', 'sse', true, bounds, 32);
    const content = Buffer.from(`data: ${JSON.stringify({ choices: [{ delta: { content: 'x' } }] })}\n\n`);
    assert.equal(o.push(content, 1), content, 'the same buffer, not a copy');
    assert.equal(o.push(Buffer.from(usage), 2), undefined);
    assert.equal(o.push(Buffer.from('data: [DONE]\n\n'), 3)?.toString(), 'data: [DONE]\n\n');
    assert.deepEqual(o.usage, { promptTokens: 5, completionTokens: 3 });
    assert.equal(o.contentChunks, 1);
  });
});

describe('proxy units: tenants and keys', () => {
  it('hash-key is the SHA-256 of the key without its trailing newline', () => {
    const want = `sha256:${createHash('sha256').update('sk-abc').digest('hex')}`;
    assert.equal(hashKey('sk-abc'), want);
    assert.equal(hashKey(keyFromStdin('sk-abc\n')), want);
    assert.equal(hashKey(keyFromStdin('sk-abc\r\n')), want);
    assert.equal(keyFromStdin('sk-abc\n\n'), 'sk-abc\n', 'only one line ending is not part of the key');
  });

  it('`infertel hash-key` prints it, from the built CLI', () => {
    const r = runCli(['hash-key'], {});
    assert.equal(r.code, 2, 'empty stdin is a usage error');
    const ok = spawnSync(process.execPath, [CLI, 'hash-key'], { input: 'sk-abc\n', encoding: 'utf8' });
    assert.equal(ok.stdout, `sha256:${createHash('sha256').update('sk-abc').digest('hex')}\n`);
    assert.ok(!ok.stdout.includes('sk-abc') && !ok.stderr.includes('sk-abc'));
  });

  it('takes Authorization: Bearer, else x-api-key, else api-key', () => {
    const rows: Array<[Record<string, string>, string | undefined]> = [
      [{ authorization: 'Bearer k1', 'x-api-key': 'k2' }, 'k1'],
      [{ authorization: 'bearer   k1 ' }, 'k1'],
      [{ authorization: 'Basic dXNlcjpwYXNz', 'x-api-key': 'k2' }, 'k2'],
      [{ 'x-api-key': 'k2', 'api-key': 'k3' }, 'k2'],
      [{ 'api-key': 'k3' }, 'k3'],
      [{ 'x-api-key': '   ' }, undefined],
      [{}, undefined],
    ];
    for (const [headers, key] of rows) assert.equal(apiKeyOf(headers), key, JSON.stringify(headers));
  });

  it('caps the tenants carried as label values and counts the rest as other', () => {
    const specs = ['a', 'b', 'c'].map((name) => ({ name, keys: [hashKey(`key-${name}`)] }));
    const r = new TenantResolver(specs, 2);
    const label = (key?: string) => r.resolve(key ? { authorization: `Bearer ${key}` } : {}).label;
    assert.equal(label('key-a'), 'a');
    assert.equal(label('key-b'), 'b');
    assert.equal(label('key-c'), 'other');
    assert.equal(label('key-c'), 'other');
    assert.equal(label('key-a'), 'a', 'a tenant admitted earlier keeps its label');
    assert.equal(label(), 'anonymous', 'anonymous and unknown take no configured place');
    assert.equal(label('nope'), 'unknown');
    assert.equal(r.folded, 2);
  });

  it('config: tenants must hold sha256 forms, names are not reserved or repeated, a key has one tenant', () => {
    const h = hashKey('k');
    assert.throws(
      () =>
        validateConfig({
          tenants: [
            { name: 'acme', keys: ['sk-cleartext'] },
            { name: 'other', keys: [h] },
            { name: 'acme', keys: [h] },
          ],
        }),
      (err: Error) => {
        for (const want of [
          'tenants[0].keys[0]: must be sha256:',
          'tenants[1].name: "other" is reserved',
          'tenants[2].name: duplicate tenant',
          'tenants[2].keys[0]: already a key of tenant "other"',
        ])
          assert.ok(err.message.includes(want), `${want} in\n${err.message}`);
        assert.ok(!err.message.includes('sk-cleartext'), 'the clear-text key is not echoed');
        return true;
      },
    );
    assert.throws(() => validateConfig({ proxy: { listen: '127.0.0.1:9401' } }), /proxy.target: required when proxy.listen is set/);
    assert.throws(() => validateConfig({ tracing: { protocol: 'grpc' } }), /tracing.protocol: must be http\/protobuf or http\/json/);
  });
});

describe('proxy units: redaction and buckets', () => {
  it('scrubs emails, phone numbers, SSNs, card numbers, IP addresses and key-like tokens', () => {
    const rows: Array<[string, string]> = [
      ['write to jane.doe+x@example.co.uk now', 'write to [email] now'],
      ['ssn 078-05-1120.', 'ssn [ssn].'],
      ['card 4111 1111 1111 1111 end', 'card [card] end'],
      ['card 4111-1111-1111-1111', 'card [card]'],
      ['connect ECONNREFUSED 10.0.0.12:8000', 'connect ECONNREFUSED [ip]'],
      ['v6 fe80::1:2:3:4 and ::1', 'v6 [ip] and [ip]'],
      ['full 2001:0db8:0000:0000:0000:ff00:0042:8329', 'full [ip]'],
      ['at 12:30:45', 'at 12:30:45'],
      ['call +1 415-555-0100 today', 'call [phone] today'],
      ['key sk-live-abcdefgh12345678 leaked', 'key [secret] leaked'],
      ['Authorization: Bearer abc.def', 'Authorization: Bearer [secret]'],
      ['upstream status 503', 'upstream status 503'],
      ['engine_reset', 'engine_reset'],
    ];
    for (const [input, want] of rows) assert.equal(scrubPii(input), want, input);
  });

  it('prompt_hash is an HMAC under the secret, not a bare hash (a dictionary cannot reverse it)', () => {
    const secret = Buffer.from('0123456789abcdef0123456789abcdef');
    const want = createHmac('sha256', secret).update('hi').digest('hex');
    assert.equal(promptHash(secret, 'hi'), `hmac-sha256:${want}`);
    assert.notEqual(promptHash(secret, 'hi'), `hmac-sha256:${createHash('sha256').update('hi').digest('hex')}`);
  });

  it('hashes the prompt when the body is read and lets it go; without a secret it keeps nothing', () => {
    const dir = tempDir('infertel-facts-');
    const secretFile = join(dir, 'secret');
    const secret = '0123456789abcdef0123456789abcdef';
    writeFileSync(secretFile, secret);
    const messages = [{ role: 'user', content: 'my SSN is 078-05-1120' }];
    const body = Buffer.from(JSON.stringify({ model: 'm', messages }));
    const sink = new PassThrough();
    const rows: Array<[string, string | undefined, string | undefined]> = [
      ['with a secret', secretFile, `hmac-sha256:${createHmac('sha256', secret).update(JSON.stringify(messages)).digest('hex')}`],
      ['without one', undefined, undefined],
    ];
    for (const [what, hashSecretFile, want] of rows) {
      const requestLog = new RequestLog({ sampleSuccess: 1, sampleError: 1, hashSecretFile, maxSize: '10m', maxFiles: 2 }, Math.random, sink);
      const ex = { facts: undefined, promptHash: undefined } as unknown as Exchange;
      const { facts } = inspectBody('/v1/chat/completions', body, 'POST');
      noteFacts({ requestLog } as unknown as ProxyDeps, ex, facts);
      assert.equal(ex.promptHash, want, what);
      assert.equal(facts.prompt, undefined, `${what}: the parsed prompt is not kept`);
      assert.equal(ex.facts, facts, what);
    }
  });

  it('bucketIndex follows le: a value on a bound belongs to it', () => {
    const b = [1, 2.5, 5];
    const rows: Array<[number, number]> = [
      [0, 0],
      [1, 0],
      [1.0001, 1],
      [2.5, 1],
      [5, 2],
      [5.1, 3],
      [1e9, 3],
    ];
    for (const [v, i] of rows) assert.equal(bucketIndex(b, v), i, String(v));
  });

  it('the catalogue names the proxy as a source of the request-level metrics, each with a tenant label', () => {
    const cat = buildCatalogue('ms');
    const measured = cat.metrics.filter(proxySourced).map((m) => m.name);
    assert.deepEqual(measured.sort(), [
      'inference_inter_token_latency_ms',
      'inference_request_duration_ms',
      'inference_requests_total',
      'inference_requests_usage_unknown_total',
      'inference_stream_resets_total',
      'inference_stream_violations_total',
      'inference_ttft_ms',
      'rate_limit_remaining_ratio',
      'rate_limited_requests_total',
      'rate_limiter_backend_errors_total',
      'tokens_generated_total',
      'tokens_input_total',
    ]);
    // Backend errors are the pod's; a stream violation is the engine's fault, counted by model.
    const untenanted = ['rate_limiter_backend_errors_total', 'inference_stream_violations_total'];
    for (const name of measured.filter((n) => !untenanted.includes(n))) assert.ok(cat.byName.get(name)!.labels.includes('tenant'), name);
    assert.ok(!proxySourced(cat.byName.get('kv_cache_usage_ratio')!), 'engine-only metrics come from the scrape alone');
  });

  it('the engine behind the proxy is the scraped URL on the same port of the same or a loopback host', () => {
    const rows: Array<[string, string, boolean]> = [
      ['http://127.0.0.1:8000/metrics', 'http://127.0.0.1:8000', true],
      ['http://localhost:8000/metrics', 'http://127.0.0.1:8000/', true],
      ['http://[::1]:8000/metrics', 'http://localhost:8000', true],
      ['http://127.0.0.1:8001/metrics', 'http://127.0.0.1:8000', false],
      ['http://10.0.0.5:8000/metrics', 'http://127.0.0.1:8000', false],
      ['http://engine:80/metrics', 'http://engine', true],
      ['https://engine/metrics', 'http://engine', false],
    ];
    for (const [scrape, target, same] of rows) assert.equal(sameEngine(scrape, target), same, `${scrape} vs ${target}`);
  });
});
