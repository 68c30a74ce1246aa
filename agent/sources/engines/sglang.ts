// SGLang: the server's `sglang:` names, the router's `sglang_` rewrite (/engine_metrics) and Ray
// Serve's `ray_sglang_`. Scheduler series come once per rank: the ranks of one tensor- or
// pipeline-parallel group report the same requests, so the normaliser sees one of them (the
// lowest tp/pp/moe_ep rank of each group); data-parallel ranks are distinct work and are summed.

import { labelValue, type Family, type Sample } from '../../parse/exposition.js';
import { both, filterSamples, hasPrefix, idValue, infoDoc, openAiModel, singleLabelValue, type EngineAdapter } from '../adapter.js';

const PREFIXES = ['ray_sglang_', 'sglang:', 'sglang_'];
/** Labels that number the copies of one group's work. */
const RANK_LABELS = ['tp_rank', 'pp_rank', 'moe_ep_rank'];

function rankOf(s: Sample): number[] | undefined {
  let ranks: number[] | undefined;
  RANK_LABELS.forEach((l, i) => {
    const v = labelValue(s.labels, l);
    if (v === undefined) return;
    ranks ??= RANK_LABELS.map(() => 0);
    ranks[i] = Number(v);
  });
  return ranks;
}

function before(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] ?? 0) < (b[i] ?? 0);
  return false;
}

/** The sample's group: its labels without the rank labels and `le`. */
function groupKey(s: Sample): string {
  const parts: string[] = [];
  for (let i = 0; i < s.labels.length; i += 2) {
    const k = s.labels[i] ?? '';
    if (k === 'le' || RANK_LABELS.includes(k)) continue;
    parts.push(k, s.labels[i + 1] ?? '');
  }
  return parts.join('\u0000');
}

/** Keeps one rank per group; rank values that are not numbers are kept as they are. */
export function oneRankPerGroup(f: Family): Family {
  const chosen = new Map<string, number[]>();
  let ranked = false;
  for (const s of f.samples) {
    const r = rankOf(s);
    if (!r || r.some((x) => !Number.isFinite(x))) continue;
    ranked = true;
    const k = groupKey(s);
    const c = chosen.get(k);
    if (!c || before(r, c)) chosen.set(k, r);
  }
  if (!ranked) return f;
  return filterSamples(f, (s) => {
    const r = rankOf(s);
    if (!r || r.some((x) => !Number.isFinite(x))) return true;
    const c = chosen.get(groupKey(s));
    return !c || !before(c, r);
  });
}

export const sglang = {
  name: 'sglang',
  title: 'SGLang',
  versions: '0.4–0.5 (server `sglang:`, router `sglang_`, Ray `ray_sglang_`)',
  notes:
    'Ranks of one TP/PP group report the same work: the lowest `tp_rank`/`pp_rank`/`moe_ep_rank` of each group is read (rank 0 without DP); DP ranks are summed. `priority=""` is the total; `engine_type`, `is_streaming` are aggregated away. Inter-token `_count` counts tokens.',
  metricsPath: '/metrics',
  prefixes: PREFIXES,
  modelLabels: ['model_name'],
  detect: (families: readonly Family[]) => hasPrefix(families, PREFIXES),
  canonicalView(families: Family[]): Family[] {
    return families.map((f) => {
      // With priority scheduling the total is the priority="" series; the per-priority ones
      // beside it would count it again.
      const totals = f.samples.some((s) => labelValue(s.labels, 'priority') === '')
        ? filterSamples(f, (s) => {
            const p = labelValue(s.labels, 'priority');
            return p === undefined || p === '';
          })
        : f;
      return oneRankPerGroup(totals);
    });
  },
  payloadModel: (families: readonly Family[]) => singleLabelValue(families, ['model_name']),
  async info(metricsUrl: string, signal: AbortSignal) {
    const [model, doc] = await both(openAiModel(metricsUrl, signal), infoDoc(metricsUrl, '/get_server_info', signal));
    return { model, version: idValue(doc?.version) };
  },
} as const satisfies EngineAdapter<'sglang'>;
