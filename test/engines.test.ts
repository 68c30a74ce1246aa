// Every registered engine, proven on its committed fixtures: detected as itself, normalised to
// the values worked out by hand in test/fixtures/engines.ts, identically from Prometheus text
// and from OpenMetrics, and listed in the README's support matrix.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseExposition, type InputFormat } from '../agent/parse/exposition.js';
import { FLAVORS, FLAVOR_TABLE, detectFlavor, type Flavor } from '../agent/sources/flavor.js';
import { loadCatalogueData } from '../agent/catalogue/catalogue.js';
import type { Expectation } from './fixtures/exposition-writer.js';
import { ENGINE_FIXTURES } from './fixtures/engines.js';
import { harness } from './normalize/harness.js';
import { promtoolCheckMetrics, promtoolPath, REPO_ROOT, strictOpenMetricsAvailable, strictOpenMetricsFailures } from './helpers.js';
import { renderExposition } from '../agent/export/render.js';
import { passthroughInput } from '../agent/sources/adapter.js';

const ROOT = join(REPO_ROOT, 'test/fixtures');

interface OnDisk {
  dir: string;
  engine: Flavor;
  version: string;
  infoModel?: string;
  expect: Expectation[];
}

function fixturesOnDisk(): OnDisk[] {
  const out: OnDisk[] = [];
  for (const engine of readdirSync(ROOT)) {
    const dir = join(ROOT, engine);
    if (!statSync(dir).isDirectory()) continue;
    for (const version of readdirSync(dir)) {
      const file = join(dir, version, 'expected.json');
      if (!existsSync(file)) continue;
      const meta = JSON.parse(readFileSync(file, 'utf8')) as Omit<OnDisk, 'dir'>;
      out.push({ ...meta, dir: join(dir, version) });
    }
  }
  return out;
}

const FIXTURES = fixturesOnDisk();
const read = (f: OnDisk, format: InputFormat) => readFileSync(join(f.dir, format === 'text' ? 'metrics.prom' : 'metrics.om'), 'utf8');

function normalised(f: OnDisk, format: InputFormat, histograms: 'native' | 'rebucket') {
  const h = harness({ histograms });
  h.ingest(f.engine, read(f, format), 'u1', f.infoModel, format);
  return h;
}

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));

describe('engine fixtures', () => {
  it('are committed as the generator writes them (npm run fixtures rewrites them)', () => {
    assert.equal(FIXTURES.length, ENGINE_FIXTURES.length);
    for (const g of ENGINE_FIXTURES) {
      const dir = join(ROOT, g.engine, g.version);
      assert.equal(readFileSync(join(dir, 'metrics.prom'), 'utf8'), g.payload.render('text', g.lePosition), `${g.engine}/${g.version} text`);
      assert.equal(readFileSync(join(dir, 'metrics.om'), 'utf8'), g.payload.render('openmetrics', g.lePosition), `${g.engine}/${g.version} openmetrics`);
      assert.deepEqual(JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')).expect, JSON.parse(JSON.stringify(g.expect)));
    }
  });

  for (const f of FIXTURES) {
    for (const format of ['text', 'openmetrics'] as const) {
      it(`${f.engine}/${f.version} (${format}): parses cleanly and is detected as ${f.engine}`, () => {
        const parsed = parseExposition(read(f, format), format);
        assert.equal(parsed.errors, 0, parsed.firstError);
        assert.equal(detectFlavor(parsed.families)?.name, f.engine);
      });

      it(`${f.engine}/${f.version} (${format}): normalises to the hand-worked values`, () => {
        const h = normalised(f, format, 'native');
        for (const e of f.expect) {
          const exact = h.series(e.metric).filter((s) => JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(Object.entries(e.labels).sort()));
          assert.equal(exact.length, 1, `${e.metric} ${JSON.stringify(e.labels)}: ${JSON.stringify(h.series(e.metric).map((s) => s.labels))}`);
          const s = exact[0]!;
          if ('value' in e) assert.ok(close(s.value, e.value), `${e.metric} ${JSON.stringify(e.labels)}: ${s.value} != ${e.value}`);
          else {
            assert.equal(s.value, e.count, `${e.metric} _count`);
            assert.ok(close(s.sum!, e.sum), `${e.metric} _sum ${s.sum} != ${e.sum}`);
            if (e.bounds) assert.deepEqual(s.bounds, e.bounds, `${e.metric} bounds`);
            if (e.cum) assert.deepEqual(s.cum, e.cum, `${e.metric} buckets`);
          }
        }
      });
    }

    it(`${f.engine}/${f.version}: text and OpenMetrics give identical canonical output`, () => {
      for (const mode of ['native', 'rebucket'] as const) {
        const strip = (h: ReturnType<typeof harness>) => h.snapshot(5_000_000).map((fam) => ({ name: fam.metric.name, series: fam.series }));
        assert.deepEqual(strip(normalised(f, 'openmetrics', mode)), strip(normalised(f, 'text', mode)), mode);
      }
    });
  }
});

describe('the agent output for every engine fixture', () => {
  const outputs = FIXTURES.flatMap((f) =>
    (['text', 'openmetrics'] as const).map((format) => {
      const h = normalised(f, format, 'rebucket');
      const families = parseExposition(read(f, format), format).families;
      const passthrough = passthroughInput(FLAVOR_TABLE[f.engine], families, true);
      return {
        name: `${f.engine}/${f.version} from ${format}`,
        text: renderExposition(h.snapshot(), [{ upstream: 'u1', families: passthrough }], 'text'),
        om: `${renderExposition(h.snapshot(), [{ upstream: 'u1', families: passthrough }], 'openmetrics')}# EOF\n`,
      };
    }),
  );

  it('is strict OpenMetrics 1.0 (prometheus_client parser)', { skip: !strictOpenMetricsAvailable() && 'no python3-prometheus-client' }, () => {
    const failures = strictOpenMetricsFailures(outputs.map((o) => o.om));
    assert.deepEqual(
      failures.map((l) => `${outputs[Number(l.split('\t')[0])]?.name}: ${l}`),
      [],
    );
  });

  it('parses as Prometheus text (promtool check metrics: lint findings only)', { skip: !promtoolPath() && 'no promtool' }, () => {
    for (const o of outputs) {
      const r = promtoolCheckMetrics(o.text);
      assert.notEqual(r.code, 1, `${o.name}: ${r.findings.slice(0, 5).join('\n')}`);
    }
  });

  it("never reports a GPU twice: Triton's nv_gpu_* are not re-exported while infertel reads the GPUs", () => {
    const triton = outputs.find((o) => o.name.startsWith('triton/'))!;
    assert.ok(!triton.text.includes('nv_gpu_utilization') && !triton.text.includes('nv_energy_consumption'));
    assert.match(triton.text, /\nnv_inference_count\{/);
  });
});

describe('the engine table', () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const catalogue = loadCatalogueData();
  for (const e of FLAVORS.map((f) => FLAVOR_TABLE[f])) {
    it(`${e.name}: has fixtures, detection, catalogue sources and a support-matrix row`, () => {
      assert.ok(
        FIXTURES.some((f) => f.engine === e.name),
        `no fixture under test/fixtures/${e.name}/`,
      );
      const flavors = [e.name, e.inherits].filter(Boolean);
      assert.ok(
        catalogue.metrics.some((m) => m.sources?.some((s) => flavors.includes(s.flavor))),
        'no catalogue source',
      );
      assert.ok(readme.includes(`| ${e.title} | \`${e.name}\` |`), `README support matrix has no row for ${e.title}`);
    });
  }

  it('detects nothing in a payload of an engine it does not know', () => {
    assert.equal(detectFlavor(parseExposition('# TYPE mistralrs_requests_total counter\nmistralrs_requests_total 3\n').families), undefined);
  });
});
