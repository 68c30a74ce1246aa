import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildCatalogue, exportedMetrics } from '../agent/catalogue/catalogue.js';
import { withFreshDocs } from '../agent/catalogue/table.js';
import { REPO_ROOT } from './helpers.js';
import { ERROR_CATALOGUE } from '../agent/errors.js';

describe('docs', () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  it('the README support matrix and metric table match the engine table and catalogue (npm run docs rewrites them)', () => {
    assert.equal(readme, withFreshDocs(readme));
  });
  it('every exported canonical metric is in the README', () => {
    for (const m of exportedMetrics(buildCatalogue('ms'))) assert.ok(readme.includes(`\`${m.name}\``), m.name);
  });
  it('every code of the error catalogue is in the README', () => {
    for (const code of Object.keys(ERROR_CATALOGUE)) assert.ok(readme.includes(`| \`${code}\` |`), code);
  });
  it('the README shows the set-up and test commands', () => {
    for (const cmd of ['npm install', 'npm run demo', 'npm test', 'npm run bench']) assert.ok(readme.includes(cmd), cmd);
  });
});
