import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { detectFormat, parseExposition, parseNumberAt, type RejectReason } from '../../agent/parse/exposition.js';
import { SHARED_FIXTURES, sharedFixturesPresent } from '../helpers.js';

describe('parseExposition', () => {
  const cases: Array<{
    name: string;
    text: string;
    families: number;
    samples: number;
    errors: number;
    check?: (r: ReturnType<typeof parseExposition>) => void;
  }> = [
    {
      name: 'vLLM label order puts le between engine and model_name',
      text:
        '# HELP vllm:e2e_request_latency_seconds h\n# TYPE vllm:e2e_request_latency_seconds histogram\n' +
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 1.0\n' +
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0\n' +
        'vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 2.0\n' +
        'vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 1.5\n',
      families: 1,
      samples: 4,
      errors: 0,
      check: (r) => {
        assert.equal(r.families[0]!.type, 'histogram');
        assert.deepEqual(r.families[0]!.samples[0]!.labels, ['engine', '0', 'le', '0.3', 'model_name', 'm']);
        assert.equal(r.families[0]!.samples[1]!.value, 2);
      },
    },
    {
      name: 'TGI counters without _total, blank lines, no HELP',
      text: '# TYPE tgi_request_failure counter\ntgi_request_failure{err="validation"} 2\n\n# HELP tgi_request_count Total\n# TYPE tgi_request_count counter\ntgi_request_count 111\n\n',
      families: 2,
      samples: 2,
      errors: 0,
      check: (r) => {
        assert.equal(r.families[0]!.help, undefined);
        assert.equal(r.families[1]!.samples[0]!.value, 111);
      },
    },
    {
      name: 'histogram whose base name ends in _total keeps its buckets',
      text: '# TYPE vllm:iteration_tokens_total histogram\nvllm:iteration_tokens_total_bucket{le="1.0"} 3.0\nvllm:iteration_tokens_total_bucket{le="+Inf"} 4.0\nvllm:iteration_tokens_total_count 4.0\nvllm:iteration_tokens_total_sum 9.0\n',
      families: 1,
      samples: 4,
      errors: 0,
      check: (r) => assert.equal(r.families[0]!.name, 'vllm:iteration_tokens_total'),
    },
    {
      name: 'escapes, exponents, timestamps, Inf and NaN',
      text: 'a{x="q\\"uote\\\\back\\nline"} 1.15891634176e+011 1700000000000\nb +Inf\nc NaN\nd -Inf\ne 8.128902e+06\n',
      families: 5,
      samples: 5,
      errors: 0,
      check: (r) => {
        assert.equal(r.families[0]!.samples[0]!.labels[1], 'q"uote\\back\nline');
        assert.equal(r.families[0]!.samples[0]!.value, 115891634176);
        assert.equal(r.families[1]!.samples[0]!.value, Infinity);
        assert.ok(Number.isNaN(r.families[2]!.samples[0]!.value));
        assert.equal(r.families[4]!.samples[0]!.value, 8128902);
      },
    },
    {
      name: 'garbage lines are counted and skipped',
      text: 'ok 1\nthis is not a sample\n{bad="x"} 2\nalso{broken 3\nok2 notanumber\nfine 4\n',
      families: 2,
      samples: 2,
      errors: 4,
    },
    {
      name: 'a final line without its newline is kept (several real exporters end that way)',
      text: 'x_total 10\ny_total 12',
      families: 2,
      samples: 2,
      errors: 0,
      check: (r) => assert.equal(r.families[1]!.samples[0]!.value, 12),
    },
    {
      name: 'prometheus_client _created families stay separate gauges',
      text: '# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{model_name="m"} 5.0\n# TYPE vllm:prompt_tokens_created gauge\nvllm:prompt_tokens_created{model_name="m"} 1.7e9\n',
      families: 2,
      samples: 2,
      errors: 0,
      check: (r) =>
        assert.deepEqual(
          r.families.map((f) => f.type),
          ['counter', 'gauge'],
        ),
    },
    {
      name: 'samples without TYPE form untyped families; interleaving regroups',
      text: '# TYPE h histogram\nh_bucket{le="1"} 1\nother 5\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 1\n',
      families: 2,
      samples: 5,
      errors: 0,
      check: (r) => assert.equal(r.families.find((f) => f.name === 'h')!.samples.length, 4),
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = parseExposition(c.text);
      assert.equal(r.families.length, c.families, 'families');
      assert.equal(r.sampleCount, c.samples, 'samples');
      assert.equal(r.errors, c.errors, 'errors');
      c.check?.(r);
    });
  }

  it('parses every real capture in ../shared/fixtures without errors', { skip: !sharedFixturesPresent() && 'no ../shared/fixtures' }, () => {
    const files = readdirSync(SHARED_FIXTURES).filter((f) => f.endsWith('.prom'));
    assert.ok(files.length >= 3);
    for (const f of files) {
      const text = readFileSync(SHARED_FIXTURES + f, 'utf8');
      const r = parseExposition(text);
      assert.equal(r.errors, 0, `${f}: ${r.errors} errors, first: ${r.firstError}`);
      const sampleLines = text.split('\n').filter((l) => l.trim() && !l.startsWith('#')).length;
      assert.equal(r.sampleCount, sampleLines - r.errors, f);
    }
  });
});

describe('line-by-line rejection (what Prometheus rejects, by reason)', () => {
  // Each line below is rejected by Prometheus' text parser (checked with promtool where noted in
  // the README); the good line after it must survive.
  const rejected: Array<[string, string, RejectReason]> = [
    ['trailing tokens', 'foo 1 garbage', 'bad_timestamp'],
    ['tokens after a timestamp', 'foo 1 1700000000000 x', 'trailing_tokens'],
    ['float timestamp in text', 'foo 1 1700000000.5', 'bad_timestamp'],
    ['hex value', 'foo 0x1A', 'bad_value'],
    ['binary value', 'foo 0b101', 'bad_value'],
    ['out-of-range value', 'foo 1e400', 'bad_value'],
    ['underscore in value', 'foo 1_000', 'bad_value'],
    ['empty value', 'foo{a="b"} ', 'bad_value'],
    ['label name with a colon', 'foo{a:b="1"} 1', 'bad_label_name'],
    ['label name with a leading digit', 'foo{1a="1"} 1', 'bad_label_name'],
    ['__name__ label', 'foo{__name__="bar"} 1', 'reserved_label_name'],
    ['duplicate label names', 'foo{a="1",a="2"} 1', 'duplicate_label_name'],
    ['unknown escape', 'foo{a="x\\qy"} 1', 'bad_escape'],
    ['unterminated value', 'foo{a="x} 1', 'bad_label_set'],
    ['leading comma', 'foo{,a="1"} 1', 'bad_label_set'],
    ['missing comma', 'foo{a="1" b="2"} 1', 'bad_label_set'],
    ['metric name with a leading digit', '9foo 1', 'bad_metric_name'],
    ['exemplar in text 0.0.4', 'foo_total 1 # {trace_id="abc"} 1', 'exemplar_in_text'],
    ['TYPE with an unknown type', '# TYPE foo countr', 'bad_type'],
    ['TYPE without a name', '# TYPE', 'bad_metadata'],
  ];
  for (const [what, line, reason] of rejected) {
    it(`${what}: ${JSON.stringify(line)} -> ${reason}`, () => {
      const r = parseExposition(`${line}\nok_gauge 7\n`);
      assert.equal(r.errors, 1, 'one line rejected');
      assert.deepEqual(r.rejected, { [reason]: 1 });
      assert.equal(r.firstError, `line 1: ${reason}`, 'position and reason, never the content');
      const ok = r.families.find((f) => f.name === 'ok_gauge');
      assert.equal(ok?.samples[0]?.value, 7, 'the next line survives');
      assert.ok(!r.families.some((f) => f.name === 'foo' && f.samples.length > 0), 'nothing of the bad line is kept');
    });
  }

  it('a non-numeric le on a histogram bucket is rejected; le on a gauge is an ordinary label', () => {
    const r = parseExposition(
      '# TYPE h histogram\nh_bucket{le="abc"} 1\nh_bucket{le="NaN"} 1\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 1\n# TYPE g gauge\ng{le="abc"} 3\n',
    );
    assert.deepEqual(r.rejected, { bad_le: 2 });
    assert.equal(r.families.find((f) => f.name === 'g')!.samples[0]!.labels[1], 'abc');
  });

  it('a second TYPE line is rejected and the first type stays', () => {
    const r = parseExposition('# TYPE foo gauge\nfoo 1\n# TYPE foo counter\n');
    assert.deepEqual(r.rejected, { duplicate_metadata: 1 });
    assert.equal(r.families[0]!.type, 'gauge');
  });

  it('a _sum before its TYPE keeps its own family and the late TYPE is rejected (no second TYPE line later)', () => {
    const r = parseExposition('foo_sum 3\n# TYPE foo summary\nfoo_count 2\n');
    assert.deepEqual(r.rejected, { metadata_after_samples: 1 });
    assert.deepEqual(
      r.families.map((f) => [f.name, f.type]),
      [
        ['foo_sum', 'untyped'],
        ['foo_count', 'untyped'],
      ],
    );
  });

  it('an error message never carries the line (it may hold a secret)', () => {
    const r = parseExposition('ok 1\nleak{api_key="sk-SECRET"} 0x1\n');
    assert.equal(r.firstError, 'line 2: bad_value');
  });

  it('OpenMetrics: exemplars, float timestamps, # EOF and UNIT; lines after EOF are rejected', () => {
    const om = '# TYPE a counter\n# UNIT a seconds\na_total 3 1700000000.5 # {trace_id="x"} 1 1700000000.1\n# EOF\nlate 1\n';
    const r = parseExposition(om, 'openmetrics');
    assert.deepEqual(r.rejected, { after_eof: 1 });
    assert.equal(r.families[0]!.samples[0]!.value, 3);
    assert.equal(r.families[0]!.samples[0]!.end, om.indexOf(' 1700000000.5'), 'the verbatim range stops before timestamp and exemplar');
    assert.equal(detectFormat('application/openmetrics-text; version=1.0.0', ''), 'openmetrics');
    assert.equal(detectFormat('text/plain', 'a 1\n# EOF\n'), 'openmetrics', 'the body wins when the header lies');
    assert.equal(detectFormat('text/plain', 'a 1\n'), 'text');
  });
});

describe('parseNumberAt (the allocation-free value parser)', () => {
  it('agrees with Number() on every form prometheus_client, Rust and Go print', () => {
    const forms = [
      '0',
      '0.0',
      '1',
      '1.0',
      '-1.5',
      '+3',
      '0.3',
      '0.1',
      '1e-05',
      '1.7181405583e+09',
      '1.15891634176e+011',
      '8.128902e+06',
      '15.330000000000002',
      '0.00015000000000000001',
      '145.61096060497135',
      '295648.0',
      '4.4481e+07',
      '123456789012345678901',
      '1e308',
      '5e-324',
      '0.000001',
      '000123',
      '1E3',
      '2.5e0',
      '.5',
      '5.',
      '-0',
      '1e400',
    ];
    for (const f of forms) assert.equal(parseNumberAt(f, 0, f.length), Number(f), f);
  });

  it('agrees with Number() on 20,000 random doubles in several notations', () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let i = 0; i < 20_000; i++) {
      const v = (rand() - 0.5) * 10 ** Math.floor(rand() * 40 - 20);
      for (const f of [String(v), v.toExponential(), v.toFixed(6), v.toPrecision(12)]) {
        assert.equal(parseNumberAt(f, 0, f.length), Number(f), f);
      }
    }
  });

  it('falls back for specials and rejects garbage', () => {
    assert.equal(parseNumberAt('+Inf', 0, 4), Infinity);
    assert.equal(parseNumberAt('-Inf', 0, 4), -Infinity);
    assert.ok(Number.isNaN(parseNumberAt('NaN', 0, 3)));
    assert.ok(Number.isNaN(parseNumberAt('1.2.3', 0, 5)));
    assert.ok(Number.isNaN(parseNumberAt('12abc', 0, 5)));
    assert.ok(Number.isNaN(parseNumberAt('0x1A', 0, 4)), 'no hex (Number() would take it)');
    assert.ok(Number.isNaN(parseNumberAt('Infinity ', 0, 9)), 'no trailing space');
    assert.equal(parseNumberAt('x 42 y', 2, 4), 42, 'reads only its range');
  });
});
