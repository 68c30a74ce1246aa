import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT, tempDir } from './helpers.js';

/** Runs node's test runner on one file with `npm test`'s skip reporter alone, and returns its output. */
function skipReportOf(source: string): string {
  const file = join(tempDir('skip-report'), 'sample.test.mjs');
  writeFileSync(file, source);
  // Without NODE_TEST_CONTEXT, which this runner sets, the child reports to its own reporter, not to ours.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const res = spawnSync(
    process.execPath,
    ['--test', `--test-reporter=${join(REPO_ROOT, 'scripts/skip-report.mjs')}`, '--test-reporter-destination=stdout', file],
    {
      encoding: 'utf8',
      env,
    },
  );
  assert.equal(res.status, 0, res.stderr);
  return res.stdout;
}

describe("npm test's skip report", () => {
  it('lists a skipped suite, which node leaves out of its own skipped count, and a skipped test, each with its reason', () => {
    const out = skipReportOf(`import { describe, it } from 'node:test';
describe('needs a tool', { skip: 'no such tool on PATH' }, () => { it('inside', () => {}); });
it('runs', () => {});
it('skipped bare', { skip: true }, () => {});
it('skipped with a reason', { skip: 'not on this machine' }, () => {});
`);
    assert.equal(
      out,
      [
        "skipped: 3 (a skipped suite's tests are not in the counts above)",
        '  suite: needs a tool (no such tool on PATH)',
        '  test: skipped bare',
        '  test: skipped with a reason (not on this machine)',
        '',
      ].join('\n'),
    );
  });

  it('says none when nothing was skipped', () => {
    assert.equal(skipReportOf(`import { it } from 'node:test';\nit('runs', () => {});\n`), 'skipped: none\n');
  });
});
