import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SeriesLimiter } from '../../agent/guard/cardinality.js';
import {
  guardLabels,
  guardValue,
  hasEmail,
  hasIpv4,
  hasIpv6,
  hasLongHex,
  hasUuid,
  looksUnbounded,
  makeLabelPolicy,
  newGuardCounts,
  UNBOUNDED_VALUE,
} from '../../agent/guard/labels.js';
import { PassthroughGuard } from '../../agent/guard/passthrough.js';
import { isLoopback } from '../../agent/sources/engine.js';
import { parseExposition } from '../../agent/parse/exposition.js';

describe('label guards', () => {
  const cases: Array<[string, boolean]> = [
    ['3f2b8c1e-9d4a-4c7e-8f1a-2b3c4d5e6f70', true],
    ['deadbeefcafebabe0123', true],
    ['someone@example.com', true],
    ['10.1.2.3', true],
    ['10.1.2.3:8080', true],
    ['fe80::1:2:3', true],
    ['/v1/chat/completions', false],
    ['meta-llama/Llama-3.1-8B-Instruct', false],
    ['stop', false],
    ['0.9', false],
  ];
  for (const [value, want] of cases) it(`looksUnbounded(${value}) = ${want}`, () => assert.equal(looksUnbounded(value), want));

  it('drops forbidden names (built-in and configured), caps lengths, replaces unbounded values', () => {
    const policy = makeLabelPolicy(['tenant_secret'], 16, ['model_name']);
    const counts = newGuardCounts();
    const out = guardLabels(
      policy,
      [
        'request_id',
        'r1',
        'tenant_secret',
        's',
        'handler',
        'x'.repeat(40),
        'node',
        '10.0.0.1',
        'model_name',
        '3f2b8c1e-9d4a-4c7e-8f1a-2b3c4d5e6f70',
        'le',
        '0.5',
      ],
      counts,
      'le',
    );
    // model_name is allowed to look like an id, but is still cut to the length cap.
    assert.deepEqual(out, ['handler', 'x'.repeat(16), 'node', UNBOUNDED_VALUE, 'model_name', '3f2b8c1e-9d4a-4c', 'le', '0.5']);
    assert.deepEqual(counts, { truncated: 2, redacted: 1, forbiddenDropped: 2 });
  });

  it('matches forbidden names exactly but case-insensitively, with the secret-bearing names built in', () => {
    const policy = makeLabelPolicy(['Tenant_Secret'], 128, []);
    const counts = newGuardCounts();
    const names = ['API_KEY', 'Authorization', 'password', 'TOKEN', 'secret', 'cookie', 'Email', 'tenant_secret', 'Request_Id'];
    const out = guardLabels(policy, [...names.flatMap((n) => [n, 'v']), 'api_key_hint', 'kept', 'tokens', 'kept'], counts);
    assert.deepEqual(out, ['api_key_hint', 'kept', 'tokens', 'kept'], 'exact names only: tokens and api_key_hint stay');
    assert.equal(counts.forbiddenDropped, names.length);
  });

  it('cuts a value to the cap before any pattern runs (a 10 KB value is judged on its first 128 characters)', () => {
    const counts = newGuardCounts();
    // An address past the cap is not seen; one inside it is.
    assert.equal(guardValue(makeLabelPolicy([], 128, []), 'x', `${'z'.repeat(10_000)} 10.0.0.1`, counts), 'z'.repeat(128));
    assert.equal(guardValue(makeLabelPolicy([], 128, []), 'x', `10.0.0.1 ${'z'.repeat(10_000)}`, counts), UNBOUNDED_VALUE);
    assert.deepEqual(counts, { truncated: 2, redacted: 1, forbiddenDropped: 0 });
  });

  it('the linear scanners agree with the regular expressions they replace on 200,000 generated values each', () => {
    // The former patterns, kept here as the reference: equal verdicts, without their backtracking.
    const reference: Array<[RegExp, (v: string) => boolean]> = [
      [/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i, hasUuid],
      [/(?:^|[^0-9a-z])(?:0x)?[0-9a-f]{16,}(?:$|[^0-9a-z])/i, hasLongHex],
      [/[^\s@]+@[^\s@]+\.[a-z]{2,}/i, hasEmail],
      [/(?:^|[^0-9.])(?:\d{1,3}\.){3}\d{1,3}(?:$|[^0-9.])/, hasIpv4],
      [/(?:^|[^0-9a-f:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:$|[^0-9a-f:])/i, hasIpv6],
    ];
    const fragments = [
      '0123abcd',
      'ABCD',
      '1234',
      '-',
      '--',
      'ab12',
      '@',
      '.',
      '.com',
      '.c',
      '1.2.3.4',
      '12',
      '345',
      '::',
      ':',
      'ffff',
      ' ',
      '\t',
      'x',
      'g',
      '0x',
      '0123456789abcdef',
      'Z',
      '\u2028',
      '9',
      '0123abcd-1234-ABCD-ab12-',
      '0123456789ab',
      '\u00a0',
    ];
    let seed = 3;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (const [re, fn] of reference) {
      let positives = 0;
      for (let n = 0; n < 200_000; n++) {
        let v = '';
        for (let k = 1 + Math.floor(rand() * 12); k > 0; k--) v += fragments[Math.floor(rand() * fragments.length)];
        const want = re.test(v);
        if (want) positives++;
        assert.equal(fn(v), want, `${fn.name}(${JSON.stringify(v)})`);
      }
      assert.ok(positives > 1000, `${fn.name}: the generator reaches both verdicts (${positives} positives)`);
    }
  });

  const loopback: Array<[string, boolean]> = [
    ['http://127.0.0.1:8000/metrics', true],
    ['http://127.9.9.9/metrics', true],
    ['http://localhost:1/', true],
    ['http://[::1]:8000/', true],
    ['http://127.evil.example/metrics', false],
    ['http://127.0.0.1.nip.io/', false],
    ['http://10.0.0.1/', false],
    ['http://[::ffff:7f00:1]/', true],
  ];
  for (const [url, want] of loopback) it(`isLoopback(${url}) = ${want} (parsed as an address, not a prefix)`, () => assert.equal(isLoopback(url), want));

  it('returns the same array when nothing changes (no allocation on the common path)', () => {
    const labels = ['engine', '0', 'model_name', 'm'];
    assert.equal(guardLabels(makeLabelPolicy([], 128, []), labels, newGuardCounts()), labels);
  });
});

describe('series limiter', () => {
  it('keeps admitted keys, folds new ones past the cap, and frees released slots', () => {
    const l = new SeriesLimiter({ perMetric: 2, total: 10 });
    assert.ok(l.admit('m', 'a'));
    assert.ok(l.admit('m', 'b'));
    assert.ok(!l.admit('m', 'c'));
    assert.ok(l.admit('m', 'a'), 'an admitted key keeps its place');
    l.release('m', 'a');
    assert.ok(l.admit('m', 'c'));
    assert.equal(l.overflowed.get('m'), 1);
  });
  it('enforces the total cap across metrics', () => {
    const l = new SeriesLimiter({ perMetric: 10, total: 2 });
    assert.ok(l.admit('x', '1'));
    assert.ok(l.admit('y', '1'));
    assert.ok(!l.admit('z', '1'));
  });
});

describe('passthrough guard', () => {
  it('keeps names, types and labels, drops forbidden labels, folds a label bomb into one overflow series', () => {
    const folded = new Map<string, number>();
    const g = new PassthroughGuard(
      makeLabelPolicy([], 128, []),
      { seriesPerFamily: 5, seriesTotal: 100, bucketsPerSeries: 64 },
      (f, n) => folded.set(f, n),
      newGuardCounts(),
    );
    const bomb = Array.from({ length: 50 }, (_, i) => `tgi_bomb{user="u${i}"} 1`).join('\n');
    const fams = g.apply(parseExposition(`# TYPE tgi_queue_size gauge\ntgi_queue_size{session_id="abc"} 3\n# TYPE tgi_bomb counter\n${bomb}\n`).families);
    assert.deepEqual(
      { ...fams[0], text: undefined },
      { name: 'tgi_queue_size', type: 'gauge', help: undefined, samples: [{ name: 'tgi_queue_size', labels: [], value: 3 }], text: undefined },
    );
    assert.equal(fams[1]!.samples.length, 6);
    assert.deepEqual(fams[1]!.samples[5], { name: 'tgi_bomb', labels: ['otel_metric_overflow', 'true'], value: 45 });
    assert.equal(folded.get('tgi_bomb'), 45);
  });

  it('series admitted before keep their slots when new ones arrive', () => {
    const g = new PassthroughGuard(makeLabelPolicy([], 128, []), { seriesPerFamily: 2, seriesTotal: 100, bucketsPerSeries: 64 }, () => {}, newGuardCounts());
    g.apply(parseExposition('a{k="1"} 1\na{k="2"} 1\n').families);
    const next = g.apply(parseExposition('a{k="0"} 1\na{k="1"} 1\na{k="2"} 1\n').families);
    assert.deepEqual(
      next[0]!.samples.map((s) => s.labels.join('=')),
      ['k=1', 'k=2', 'otel_metric_overflow=true'],
    );
  });
});
