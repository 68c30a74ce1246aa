// The agent's output path, in process, for property tests: parse -> normalise -> passthrough
// guard -> render, with two upstreams so shared families and the upstream label are exercised.
// It calls the same functions, in the same order, as Agent.renderData.

import { buildCatalogue } from '../../agent/catalogue/catalogue.js';
import { SeriesLimiter } from '../../agent/guard/cardinality.js';
import { makeLabelPolicy, newGuardCounts } from '../../agent/guard/labels.js';
import { PassthroughGuard } from '../../agent/guard/passthrough.js';
import { Normalizer } from '../../agent/normalize/normalizer.js';
import { parseExposition, type InputFormat } from '../../agent/parse/exposition.js';
import {
  canonicalClaims,
  renderCanonical,
  renderPassthrough,
  renderShared,
  sharedFamilies,
  toPassthroughFamilies,
  type ExpositionFormat,
  type PassthroughSet,
} from '../../agent/export/render.js';
import { FLAVOR_TABLE, normaliserView } from '../../agent/sources/flavor.js';
import { canonicalInput } from '../../agent/sources/adapter.js';

const catalogue = buildCatalogue('ms');

/** A fresh agent-shaped pipeline; `scrape` feeds both upstreams one body each and returns both renders. */
export function pipeline(): { scrape(a: string, b: string, format?: InputFormat): Record<ExpositionFormat, string> } {
  const limiter = new SeriesLimiter({ perMetric: 50, total: 500 });
  const counts = newGuardCounts();
  const policy = makeLabelPolicy([], 64, ['model', 'model_name']);
  const normalizer = new Normalizer(catalogue, {
    histograms: 'rebucket',
    staleAfterScrapes: 3,
    seriesPerMetric: 50,
    labelPolicy: policy,
    limiter,
    guardCounts: counts,
  });
  const guards = [0, 1].map(() => new PassthroughGuard(policy, { seriesPerFamily: 20, seriesTotal: 200, bucketsPerSeries: 16 }, () => {}, counts));
  let now = 1_000_000;
  return {
    scrape(a, b, format = 'text') {
      now += 10_000;
      const sets: PassthroughSet[] = [a, b].map((body, i) => {
        const parsed = parseExposition(body, format);
        const flavor = i === 0 ? 'vllm' : 'tgi';
        const ad = FLAVOR_TABLE[flavor];
        normalizer.ingest(normaliserView(ad, `u${i}`, ad.payloadModel(parsed.families) ?? 'm'), canonicalInput(ad, parsed.families));
        return { upstream: `u${i}`, families: toPassthroughFamilies(guards[i]!.apply(parsed.families)) };
      });
      normalizer.advance(now, 1);
      const canonical = normalizer.snapshot();
      const out = {} as Record<ExpositionFormat, string>;
      for (const format of ['text', 'openmetrics'] as const) {
        const claims = canonicalClaims(canonical, format);
        const shared = sharedFamilies(sets);
        out[format] =
          renderCanonical(canonical, format) +
          sets.map((s) => renderPassthrough(s.families, format, shared, claims)).join('') +
          renderShared(sets, shared, format, claims) +
          (format === 'openmetrics' ? '# EOF\n' : '');
      }
      return out;
    },
  };
}
