import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildCatalogue, exportedMetrics } from '../agent/catalogue/catalogue.js';
import { withFreshDocs } from '../agent/catalogue/table.js';
import { REPO_ROOT } from './helpers.js';
import { ERROR_CATALOGUE } from '../agent/errors.js';
import { configSchema } from '../agent/config/schema.js';

/** The parts of a zod 4 schema node the walk reads. */
interface ZodNode {
  _zod: { def: { type: string; shape?: Record<string, ZodNode>; innerType?: ZodNode; in?: ZodNode; element?: ZodNode } };
}

/** Every leaf key path of a config schema (arrays of objects as `key[].field`; records are leaves). */
function configKeys(node: ZodNode, prefix = ''): string[] {
  const def = node._zod.def;
  if (def.innerType) return configKeys(def.innerType, prefix);
  if (def.type === 'pipe' && def.in) return configKeys(def.in, prefix);
  if (def.type === 'array' && def.element) {
    const inner = configKeys(def.element, `${prefix}[]`);
    return inner.length === 1 && inner[0] === `${prefix}[]` ? [prefix] : inner;
  }
  if (def.type === 'object' && def.shape) return Object.entries(def.shape).flatMap(([k, v]) => configKeys(v, prefix ? `${prefix}.${k}` : k));
  return [prefix];
}

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
  it('every config key of the schema is in the README configuration table', () => {
    const table = readme.slice(readme.indexOf('### Configuration'), readme.indexOf('## Endpoints'));
    const keys = configKeys(configSchema as unknown as ZodNode);
    assert.ok(keys.length > 40, `${keys.length} keys found: the walk reached the nested objects`);
    const missing = keys.filter((k) => {
      const leaf = k.split('.').at(-1)!;
      // A row names a key whole (`a.b`, `a.<name>`, `a[]`), as a sibling (`/ .b`) or in a brace group ({b,c}).
      return !new RegExp(`\`${k.replace(/[.[\]]/g, '\\$&')}[\`.[]`).test(table) && !new RegExp(`[{,.]${leaf}[},\`]`).test(table);
    });
    assert.deepEqual(missing, []);
  });
  it('the README shows the set-up and test commands', () => {
    for (const cmd of ['npm install', 'npm run demo', 'npm test', 'npm run bench']) assert.ok(readme.includes(cmd), cmd);
  });
});
