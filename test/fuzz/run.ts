// The output property: for every fuzzed input, everything the agent emits parses with promtool
// (text 0.0.4) and with a strict OpenMetrics parser, holds no two samples with the same name and
// labels, and carries no forbidden label. Used by fuzz.test.ts (bounded, in CI) and `npm run fuzz`.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseExposition, type InputFormat } from '../../agent/parse/exposition.js';
import { BUILTIN_FORBIDDEN_LABELS } from '../../agent/guard/labels.js';
import { hostileBody, rng } from './corpus.js';
import { pipeline } from './pipeline.js';

export interface FuzzReport {
  cases: number;
  failures: string[];
  promtoolBatches: number;
  openmetricsChecked: number;
}

const FORBIDDEN = new Set(BUILTIN_FORBIDDEN_LABELS);
const CHECK_OM = fileURLToPath(new URL('../../../test/fuzz/check_openmetrics.py', import.meta.url));

/** Our own strict reading of an output: rejected lines, duplicate samples, forbidden labels. */
function selfCheck(body: string, format: InputFormat): string | undefined {
  const r = parseExposition(body, format);
  if (r.errors) return `own parser rejects ${format} output: ${r.firstError}`;
  const seen = new Set<string>();
  for (const f of r.families) {
    for (const s of f.samples) {
      const pairs: string[] = [];
      for (let i = 0; i < s.labels.length; i += 2) {
        if (FORBIDDEN.has(s.labels[i]!.toLowerCase())) return `forbidden label ${s.labels[i]} in ${format} output`;
        pairs.push(`${s.labels[i]}=${s.labels[i + 1]}`);
      }
      const key = `${s.name}{${pairs.sort().join(',')}}`;
      if (seen.has(key)) return `duplicate sample ${JSON.stringify(key)} in ${format} output`;
      seen.add(key);
    }
  }
  return undefined;
}

/** Every family of one text exposition renamed with a prefix, so many can share one promtool run. */
function prefixed(body: string, prefix: string): string {
  return body
    .split('\n')
    .map((l) => {
      if (l.startsWith('# HELP ') || l.startsWith('# TYPE ')) return l.slice(0, 7) + prefix + l.slice(7);
      return l ? prefix + l : l;
    })
    .join('\n');
}

function promtoolErrors(body: string): string | undefined {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  // Exit 3 is lint findings (naming advice), which are not parse errors.
  if (r.status === 0 || r.status === 3) return undefined;
  return (r.stderr + r.stdout).split('\n').find((l) => l.includes('error')) ?? `promtool exit ${r.status}`;
}

export function runFuzz(cases: number, seed: number, opts: { promtool: boolean; python: boolean }): FuzzReport {
  const report: FuzzReport = { cases, failures: [], promtoolBatches: 0, openmetricsChecked: 0 };
  const r = rng(seed);
  const BATCH = 2000;
  let texts: Array<{ i: number; body: string }> = [];
  let oms: Array<{ i: number; body: string; input: string }> = [];
  const flush = () => {
    if (opts.promtool && texts.length) {
      report.promtoolBatches++;
      if (promtoolErrors(texts.map((t) => prefixed(t.body, `f${t.i}_`)).join(''))) {
        for (const t of texts) {
          const e = promtoolErrors(t.body);
          if (e) report.failures.push(`case ${t.i}: promtool: ${e}\n--- output ---\n${t.body}`);
        }
      }
    }
    if (opts.python && oms.length) {
      const res = spawnSync('/usr/bin/python3', [CHECK_OM], { input: JSON.stringify(oms.map((o) => o.body)), encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      report.openmetricsChecked += oms.length;
      if (res.status !== 0) {
        for (const line of res.stdout.split('\n').filter(Boolean)) {
          const [idx, err] = line.split('\t');
          const o = oms[Number(idx)];
          report.failures.push(`case ${o?.i}: OpenMetrics: ${err}\n--- input ---\n${o?.input}\n--- output ---\n${o?.body}`);
        }
        if (!res.stdout.trim()) report.failures.push(`OpenMetrics check failed: ${res.stderr.slice(0, 500)}`);
      }
    }
    texts = [];
    oms = [];
  };
  let p = pipeline();
  for (let i = 0; i < cases && report.failures.length < 20; i++) {
    if (i % 50 === 0) p = pipeline();
    const a = hostileBody(r);
    const b = r() < 0.5 ? hostileBody(r) : a;
    const format: InputFormat = r() < 0.2 ? 'openmetrics' : 'text';
    let out: ReturnType<typeof p.scrape>;
    try {
      out = p.scrape(a, b, format);
    } catch (err) {
      report.failures.push(`case ${i}: threw ${(err as Error).stack}\n--- input ---\n${a}`);
      continue;
    }
    for (const f of ['text', 'openmetrics'] as const) {
      const problem = selfCheck(out[f], f);
      if (problem) report.failures.push(`case ${i}: ${problem}\n--- input ---\n${a}\n--- output ---\n${out[f]}`);
    }
    texts.push({ i, body: out.text });
    oms.push({ i, body: out.openmetrics, input: a });
    if (texts.length >= BATCH) flush();
  }
  flush();
  return report;
}
