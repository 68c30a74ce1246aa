import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { promtoolPath, REPO_ROOT } from './helpers.js';

const RULES = join(REPO_ROOT, 'config/alerts/infertel.rules.yaml');
const TESTS = join(REPO_ROOT, 'config/alerts/infertel.rules.test.yaml');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const groups = (parseYaml(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups;
const alerts = groups.flatMap((g) => g.rules).filter((r) => r.alert);

describe('alert rules', () => {
  it('promtool check rules', { skip: !promtoolPath() && 'promtool not on PATH' }, () => {
    const r = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  it('promtool test rules', { skip: !promtoolPath() && 'promtool not on PATH' }, () => {
    const r = spawnSync('promtool', ['test', 'rules', TESTS], { encoding: 'utf8', cwd: join(REPO_ROOT, 'config/alerts') });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS/);
  });

  it('every alert has a severity, a summary and a runbook_url to an existing runbook', () => {
    assert.ok(alerts.length > 0);
    // Every alert is exercised by the promtool unit tests (no alert is only asserted to exist).
    const tested = readFileSync(TESTS, 'utf8');
    for (const a of alerts) assert.match(tested, new RegExp(`alertname: ${a.alert}\\b`), `${a.alert} has no promtool test`);
    for (const a of alerts) {
      assert.match(a.labels?.severity ?? '', /^(page|ticket|warning)$/, a.alert);
      assert.ok(a.annotations?.summary, `${a.alert} summary`);
      const m = /config\/runbooks\/([\w-]+\.md)$/.exec(a.annotations?.runbook_url ?? '');
      assert.ok(m && existsSync(join(REPO_ROOT, 'config/runbooks', m[1]!)), `${a.alert} runbook ${a.annotations?.runbook_url}`);
    }
  });

  it('every alert is tested firing, and some series in each test stays quiet', () => {
    const tests = parseYaml(readFileSync(TESTS, 'utf8')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }> };
    const fired = new Set<string>();
    for (const t of tests.tests) for (const a of t.alert_rule_test ?? []) if (a.exp_alerts.length) fired.add(a.alertname);
    for (const a of alerts) assert.ok(fired.has(a.alert!), `${a.alert} has no firing test`);
  });

  it('the rules use only canonical metric names of the catalogue or infertel self-metrics', () => {
    const catalogue = parseYaml(readFileSync(join(REPO_ROOT, 'config/taxonomy.yaml'), 'utf8')) as { metrics: Array<{ name: string; type: string }> };
    const known = new Set<string>();
    for (const m of catalogue.metrics) for (const s of m.type === 'histogram' ? ['_bucket', '_sum', '_count'] : ['']) known.add(m.name + s);
    for (const r of groups.flatMap((g) => g.rules)) {
      for (const name of r.expr.match(/(?<![:\w])[a-z_]+(?:_total|_ms_bucket|_ms_sum|_ms_count|_ratio|_bytes|_celsius|_depth|_up)(?![:\w])/g) ?? []) {
        assert.ok(known.has(name) || name.startsWith('infertel_'), `${r.alert ?? r.record}: ${name}`);
      }
    }
  });
});
