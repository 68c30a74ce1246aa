// Runs every compiled test file under dist/test with node's test runner (Node 20 has no globs).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? find(p) : p.endsWith('.test.js') ? [p] : [];
  });
}

const filter = process.argv[2];
const files = find('dist/test')
  .filter((f) => !filter || f.includes(filter))
  .sort();
if (files.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
// A test that hangs fails with its name after ten minutes (the longest, the output fuzz, takes about
// four) instead of holding the whole run until CI's own limit.
// Node's own reporter (spec on a terminal, and everywhere from Node 23; tap otherwise) and then the
// list of what was skipped.
const major = Number(process.versions.node.split('.')[0]);
const reporter = process.stdout.isTTY || major >= 23 ? 'spec' : 'tap';
const reporters = [
  `--test-reporter=${reporter}`,
  '--test-reporter-destination=stdout',
  '--test-reporter=./scripts/skip-report.mjs',
  '--test-reporter-destination=stdout',
];
const res = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=600000', ...reporters, ...files], { stdio: 'inherit' });
process.exit(res.status ?? 1);
