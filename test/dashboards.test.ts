import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { stringify } from 'yaml';
import { promtoolPath, REPO_ROOT, tempDir } from './helpers.js';

const DIR = join(REPO_ROOT, 'config/dashboards');
const files = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort();

interface Dashboard {
  uid: string;
  title: string;
  templating: { list: Array<{ name: string; type: string }> };
  panels: Array<{ title: string; datasource: { uid: string }; targets: Array<{ expr: string }> }>;
}
const dashboards = files.map((f) => ({ file: f, d: JSON.parse(readFileSync(join(DIR, f), 'utf8')) as Dashboard }));

/** Grafana's variables replaced by values Prometheus accepts, so promtool can parse the PromQL. */
function promql(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$__range', '1h').replaceAll('$model', '.*').replaceAll('$tenant', '.*');
}

describe('dashboards', () => {
  it('the four dashboards exist: RED, LLM performance, GPU/worker, customer usage', () => {
    assert.deepEqual(files, ['infertel-gpu.json', 'infertel-llm.json', 'infertel-red.json', 'infertel-usage.json']);
  });

  it('every panel uses the datasource variable and every dashboard defines it', () => {
    for (const { file, d } of dashboards) {
      assert.ok(
        d.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'),
        file,
      );
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a Grafana variable, not a JavaScript template
      for (const p of d.panels) assert.equal(p.datasource.uid, '${datasource}', `${file}: ${p.title}`);
    }
  });

  it('every PromQL expression parses (promtool check rules on a rule file made of them)', { skip: !promtoolPath() && 'promtool not on PATH' }, () => {
    const rules = dashboards.flatMap(({ d }) =>
      d.panels.flatMap((p) => p.targets.map((t, i) => ({ record: `dashboard:${d.uid.replace(/-/g, '_')}:${i}`, expr: promql(t.expr) }))),
    );
    assert.ok(rules.length > 30);
    const f = join(tempDir('infertel-dash-'), 'exprs.yaml');
    writeFileSync(f, stringify({ groups: [{ name: 'dashboards', rules }] }));
    const r = spawnSync('promtool', ['check', 'rules', f], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  it('panels query canonical names only', () => {
    const catalogue = readFileSync(join(REPO_ROOT, 'config/taxonomy.yaml'), 'utf8');
    for (const { d } of dashboards) {
      for (const p of d.panels) {
        for (const t of p.targets) {
          for (const m of t.expr.match(/(?<![:\w$])[a-z][a-z_]+(?=\{|\[| |\)|$)/g) ?? []) {
            if (
              [
                'sum',
                'max',
                'avg',
                'by',
                'rate',
                'increase',
                'histogram_quantile',
                'le',
                'model',
                'phase',
                'code',
                'route',
                'context_bucket',
                'tenant',
                'limit',
                'slo_class',
                'result',
                'kind',
                'device',
                'on',
                'group_left',
                'instance',
              ].includes(m)
            )
              continue;
            const base = m.replace(/_(bucket|sum|count)$/, '');
            assert.ok(catalogue.includes(`name: ${base}\n`) || catalogue.includes(`name: ${m}\n`) || m.startsWith('infertel_'), `${d.uid}: ${m}`);
          }
        }
      }
    }
  });

  it('the files match scripts/gen-dashboards.mjs, and the chart carries the same dashboards and rules', () => {
    const r = spawnSync(process.execPath, ['scripts/gen-dashboards.mjs', '--check'], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});
