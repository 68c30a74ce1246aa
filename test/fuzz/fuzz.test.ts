import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { promtoolPath } from '../helpers.js';
import { runFuzz } from './run.js';

const CASES = Number(process.env.INFERTEL_FUZZ_CASES ?? 100_000);
const pythonOk =
  existsSync('/usr/bin/python3') &&
  (await import('node:child_process')).spawnSync('/usr/bin/python3', ['-c', 'import prometheus_client.openmetrics.parser'], { stdio: 'ignore' }).status === 0;

describe('fuzz: the agent output parses everywhere, whatever the input', () => {
  it(`${CASES} hostile inputs: promtool, strict OpenMetrics, unique samples, no forbidden label`, {
    skip: (!promtoolPath() || !pythonOk) && 'needs promtool and python3-prometheus-client',
    timeout: 20 * 60_000,
  }, () => {
    const report = runFuzz(CASES, 20261130, { promtool: true, python: true });
    assert.deepEqual(report.failures.slice(0, 3), [], `${report.failures.length} failing cases`);
    assert.equal(report.openmetricsChecked, CASES, 'every OpenMetrics output went through the strict parser');
    assert.ok(report.promtoolBatches >= Math.ceil(CASES / 2000));
  });
});
