// The error catalogue: errors the agent carries on from are counted every time and logged once.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorReporter } from '../agent/errors.js';
import { SelfMetrics } from '../agent/export/self-metrics.js';
import { OomTail } from '../agent/gpu/oom.js';
import { captureLogger, sampleValue } from './helpers.js';

describe('error catalogue', () => {
  it('a missing OOM log is counted at every poll, logged once, and its path is said', async () => {
    const { lines, log } = captureLogger();
    const errors = new ErrorReporter(log);
    const metrics = new SelfMetrics(
      't',
      () => new Map(),
      () => ({}),
      undefined,
      undefined,
      errors,
    );
    const tail = new OomTail('/nonexistent/engine.log', (err) => errors.report('oom_log_unreadable', err, { path: '/nonexistent/engine.log' }));
    for (let i = 0; i < 4; i++) assert.deepEqual(tail.read(), []);
    await new Promise((r) => setImmediate(r));
    assert.equal(sampleValue(await metrics.text.metrics(), 'infertel_errors_total', 'code="oom_log_unreadable"'), 4);
    const logged = lines.filter((l) => l.includes('oom_log_unreadable'));
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /ENOENT/);
    assert.match(logged[0]!, /\/nonexistent\/engine\.log/);
  });

  it('never logs credentials from an error message', () => {
    const { lines, log } = captureLogger();
    new ErrorReporter(log).report('engine_info_failed', new Error('connect ECONNREFUSED http://user:s3cret@10.0.0.1:8000/v1/models'));
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]!.includes('s3cret'), lines[0]);
  });
});
