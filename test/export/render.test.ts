import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TgiSim } from '../../agent/demo/sim-tgi.js';
import { VllmSim } from '../../agent/demo/sim-vllm.js';
import { renderExposition } from '../../agent/export/render.js';
import { negotiate } from '../../agent/export/server.js';
import { parseExposition } from '../../agent/parse/exposition.js';
import { promtoolCheckMetrics, promtoolPath } from '../helpers.js';
import { harness } from '../normalize/harness.js';

function canonicalBody(profile: 'ms' | 'seconds', format: 'text' | 'openmetrics' = 'text'): string {
  const h = harness({ profile });
  const vllm = new VllmSim({ model: 'm', engines: 2, maxModelLen: 32768, rate: 20, seed: 1 }, 0);
  const tgi = new TgiSim({ maxInputTokens: 4095, maxTotalTokens: 4096, rate: 10, seed: 2 }, 0);
  for (const t of [5000, 15000]) {
    vllm.advance(t);
    tgi.advance(t);
    h.ingest('vllm', vllm.render(), 'vllm');
    h.ingest('tgi', tgi.render(), 'tgi', 'mistral');
    h.snapshot(t);
  }
  return renderExposition(h.snapshot(25_000), [], format);
}

describe('render', () => {
  it('canonical text round-trips through our parser with HELP and TYPE for every family', () => {
    const body = canonicalBody('ms');
    const parsed = parseExposition(body);
    assert.equal(parsed.errors, 0);
    for (const f of parsed.families) {
      assert.ok(f.help, `${f.name} has HELP`);
      assert.notEqual(f.type, 'untyped', `${f.name} has TYPE`);
    }
    assert.ok(!/infertel_internal/.test(body), 'internal inputs are not exported');
  });

  it('promtool: seconds profile is clean', { skip: !promtoolPath() && 'promtool not on PATH' }, () => {
    const r = promtoolCheckMetrics(canonicalBody('seconds'));
    assert.deepEqual(r.findings, []);
    assert.equal(r.code, 0);
  });

  it('promtool: ms profile finds only the abbreviated-unit note on the documented _ms names', { skip: !promtoolPath() && 'promtool not on PATH' }, () => {
    const r = promtoolCheckMetrics(canonicalBody('ms'));
    assert.ok(r.findings.length > 0, 'the _ms names are expected to draw a note');
    for (const f of r.findings) assert.match(f, /^[a-z_]+_ms metric names should not contain abbreviated units$/, f);
    assert.equal(r.code, 3, 'lint findings only, no parse error');
  });

  it('OpenMetrics: counters drop _total from TYPE, no untyped, TGI counters without _total become unknown', () => {
    const body = canonicalBody('ms', 'openmetrics');
    assert.match(body, /# TYPE inference_requests counter\n/);
    assert.match(body, /\ninference_requests_total\{/);
    assert.ok(!/ untyped\n/.test(body));
    const passthrough = renderExposition(
      [],
      [
        {
          upstream: 'tgi',
          families: parseExposition(
            '# TYPE tgi_request_count counter\ntgi_request_count 3\n# TYPE vllm:x_total counter\nvllm:x_total 1\n# TYPE vllm:x_created gauge\nvllm:x_created 1\n',
          ).families,
        },
      ],
      'openmetrics',
    );
    assert.equal(passthrough, '# TYPE tgi_request_count unknown\ntgi_request_count 3\n# TYPE vllm:x counter\nvllm:x_total 1\n');
  });

  it('a family emitted by two upstreams is written once with an upstream label', () => {
    const fam = (v: number) => parseExposition(`# TYPE process_open_fds gauge\nprocess_open_fds ${v}\n`).families;
    const body = renderExposition(
      [],
      [
        { upstream: 'a', families: fam(1) },
        { upstream: 'b', families: fam(2) },
      ],
      'text',
    );
    assert.equal(body, '# TYPE process_open_fds gauge\nprocess_open_fds{upstream="a"} 1\nprocess_open_fds{upstream="b"} 2\n');
    const labelled = (v: number) => parseExposition(`# TYPE x_total counter\nx_total{a="1",b="q\\"uote"} ${v}\nx_total{} ${v}\n`).families;
    assert.equal(
      renderExposition(
        [],
        [
          { upstream: 'a', families: labelled(1) },
          { upstream: 'b', families: labelled(2) },
        ],
        'text',
      ),
      '# TYPE x_total counter\nx_total{upstream="a",a="1",b="q\\"uote"} 1\nx_total{upstream="a"} 1\nx_total{upstream="b",a="1",b="q\\"uote"} 2\nx_total{upstream="b"} 2\n',
    );
  });

  const negotiation: Array<[string | undefined, unknown, string]> = [
    [undefined, undefined, 'text'],
    ['application/json', undefined, 'json'],
    ['text/plain;version=0.0.4;q=0.5,application/json;q=0.9', undefined, 'json'],
    ['application/openmetrics-text;version=1.0.0,text/plain;q=0.5', undefined, 'openmetrics'],
    ['text/plain', 'json', 'json'],
  ];
  for (const [accept, query, want] of negotiation) it(`negotiate(${accept}, ${String(query)}) = ${want}`, () => assert.equal(negotiate(accept, query), want));
});
