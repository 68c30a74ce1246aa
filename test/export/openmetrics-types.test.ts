// OpenMetrics' own types (info, stateset, gauge histogram) from an upstream: kept as such in the
// OpenMetrics output, written as what text 0.0.4 can say in the text output, and both outputs
// accepted by strict parsers (prometheus_client's, promtool's).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderExposition } from '../../agent/export/render.js';
import { parseExposition } from '../../agent/parse/exposition.js';
import { promtoolCheckMetrics, promtoolPath, strictOpenMetricsAvailable, strictOpenMetricsFailures } from '../helpers.js';

const UPSTREAM = `# TYPE build info
# HELP build Build information.
build_info{version="1.2",revision="abc"} 1
# TYPE engine_state stateset
engine_state{engine_state="awake"} 1
engine_state{engine_state="asleep"} 0
engine_state{engine_state="other"} 7
# TYPE running_keys gaugehistogram
running_keys_bucket{le="1.0"} 3
running_keys_bucket{le="5.0"} 4
running_keys_bucket{le="+Inf"} 5
running_keys_gcount 5
running_keys_gsum 7.5
# TYPE broken_keys gaugehistogram
broken_keys_bucket{le="1.0"} 3
broken_keys_bucket{le="+Inf"} 2
# EOF
`;

describe('OpenMetrics info, stateset and gauge histogram families', () => {
  const parsed = parseExposition(UPSTREAM, 'openmetrics');

  it('parse with their types and samples', () => {
    assert.equal(parsed.errors, 0, parsed.firstError);
    assert.deepEqual(
      parsed.families.map((f) => [f.name, f.type, f.samples.length]),
      [
        ['build', 'info', 1],
        ['engine_state', 'stateset', 3],
        ['running_keys', 'gaugehistogram', 5],
        ['broken_keys', 'gaugehistogram', 2],
      ],
    );
  });

  it('keep their types in the OpenMetrics output, without what OpenMetrics forbids', () => {
    const om = renderExposition([], [{ upstream: 'u', families: parsed.families }], 'openmetrics');
    assert.match(om, /# TYPE build info\n(?:.*\n)*?build_info\{[^}]*\} 1\n/);
    assert.match(om, /# TYPE engine_state stateset\n/);
    assert.match(om, /# TYPE running_keys gaugehistogram\n/);
    assert.match(om, /\nrunning_keys_gcount 5\n/);
    assert.ok(!om.includes('engine_state="other"'), 'a stateset value other than 0 or 1 is dropped');
    assert.ok(!om.includes('broken_keys_bucket'), 'decreasing buckets are dropped');
    if (strictOpenMetricsAvailable()) assert.deepEqual(strictOpenMetricsFailures([`${om}# EOF\n`]), []);
  });

  it('become gauges (info, stateset) and untyped samples (gauge histogram) in text 0.0.4', { skip: !promtoolPath() && 'no promtool' }, () => {
    const text = renderExposition([], [{ upstream: 'u', families: parsed.families }], 'text');
    assert.match(text, /# TYPE build_info gauge\n/);
    assert.match(text, /# TYPE engine_state gauge\n/);
    assert.ok(!text.includes('gaugehistogram') && !text.includes(' info\n') && !text.includes('stateset'));
    assert.match(text, /running_keys_bucket\{[^}]*le="5.0"[^}]*\} 4\n/);
    // promtool exits 1 on a parse error, 3 on lint findings only (the upstream wrote no HELP).
    const r = promtoolCheckMetrics(text);
    assert.notEqual(r.code, 1, r.findings.join('\n'));
    assert.ok(
      r.findings.every((f) => f.endsWith('no help text')),
      r.findings.join('\n'),
    );
  });
});
