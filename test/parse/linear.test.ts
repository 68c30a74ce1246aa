// Super-linearity: pathological shapes at 1x, 4x and 16x size must not grow worse than about
// 6x per 4x (linear is 4x; quadratic would be 16x): under 36x over the two steps (one step alone
// is noisy). Sizes are timed interleaved, best of five, after a collection and without the
// collector's pauses, so a scheduler hiccup cannot fail it, but a quadratic path always does.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseExposition } from '../../agent/parse/exposition.js';
import { hasEmail, hasIpv4, hasIpv6, hasLongHex, hasUuid, looksUnbounded } from '../../agent/guard/labels.js';

// A collection before each timed run keeps garbage of the previous run out of the next one's time.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

// Collector pauses inside a timed run are subtracted: when a heap outgrows the young generation
// the collector's cost per object rises, which is the runtime's growth, not the parser's.
const pauses: Array<{ start: number; duration: number }> = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) pauses.push({ start: e.startTime, duration: e.duration });
}).observe({ entryTypes: ['gc'] });
const flush = () => new Promise<void>((r) => setTimeout(r, 5));

async function timed(fn: () => void): Promise<number> {
  gc();
  await flush();
  pauses.length = 0;
  const t = performance.now();
  fn();
  const elapsed = performance.now() - t;
  await flush();
  const inGc = pauses.filter((p) => p.start >= t && p.start <= t + elapsed).reduce((a, p) => a + p.duration, 0);
  return elapsed - inGc;
}

async function bestOf(n: number, fn: () => void): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < n; i++) best = Math.min(best, await timed(fn));
  return best;
}

/** Times `fn(make(size))` at three sizes, interleaved, best of five, and returns the growth ratios per 4x. */
async function growth(make: (bytes: number) => string, fn: (s: string) => unknown, base: number): Promise<number[]> {
  const inputs = [base, base * 4, base * 16].map(make);
  // Enough repetitions that the smallest size takes a few milliseconds (timer and noise floor).
  let reps = 1;
  for (let t = await timed(() => fn(inputs[0]!)); t * reps < 3 && reps < 4096; reps *= 2);
  const times = [Infinity, Infinity, Infinity];
  for (let round = 0; round < 5; round++) {
    for (let k = 0; k < 3; k++)
      times[k] = Math.min(
        times[k]!,
        await bestOf(1, () => {
          for (let r = 0; r < reps; r++) fn(inputs[k]!);
        }),
      );
  }
  const t = times.map((x) => Math.max(x, 0.05));
  return [t[1]! / t[0]!, t[2]! / t[1]!];
}

/** Up to three measurements; one under the bound passes (noise only ever slows a run down, and a quadratic path fails all three). */
async function assertLinear(measure: () => Promise<number[]>, what = ''): Promise<void> {
  let g: number[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    g = await measure();
    if (g[0]! * g[1]! < 36) return;
  }
  const [g1, g2] = g;
  assert.ok(g1! * g2! < 36, `${what}growth per 4x: ${g1!.toFixed(1)}x, ${g2!.toFixed(1)}x`);
}

const repeat = (unit: string) => (bytes: number) => unit.repeat(Math.ceil(bytes / unit.length));
const oneLine = (head: string, unit: string, tail: string) => (bytes: number) => head + unit.repeat(Math.ceil(bytes / unit.length)) + tail;

describe('parser: every path is linear', () => {
  const shapes: Array<[string, (bytes: number) => string]> = [
    ['comment lines without a space (#\\n)', repeat('#\n')],
    ['TYPE lines with no type', repeat('# TYPE x\n')],
    ['HELP lines with no text', repeat('# HELP x\n')],
    ['unclosed label values', repeat('a{b="\n')],
    ['unclosed label values with a backslash', repeat('a{b="\\\n')],
    ['one line of many distinct labels', (bytes) => `a{${Array.from({ length: Math.ceil(bytes / 12) }, (_, i) => `l${i}="v"`).join(',')}} 1\n`],
    ['one line of backslash escapes', oneLine('a{b="', '\\\\', '"} 1\n')],
    ['one long value token', oneLine('a ', '1', '\n')],
    ['one long name', oneLine('', 'a', ' 1\n')],
    ['samples of ever new families', (bytes) => Array.from({ length: Math.ceil(bytes / 10) }, (_, i) => `m${i} 1\n`).join('')],
    ['_sum lines before their TYPE', (bytes) => Array.from({ length: Math.ceil(bytes / 40) }, (_, i) => `f${i}_sum 1\n# TYPE f${i} summary\n`).join('')],
    ['rejected lines (first error counts lines once)', repeat('bad line here\n')],
    ['quotes far apart', (bytes) => `a{b="${'\n'.repeat(bytes)}"} 1\n`],
  ];
  for (const [what, make] of shapes) {
    it(what, async () => {
      await assertLinear(() => growth(make, (s) => parseExposition(s), 128 * 1024));
    });
  }
});

describe('label guards: every pattern is linear on 64 KB adversarial values', () => {
  const inputs: Array<[string, (bytes: number) => string]> = [
    ['@ repeated', repeat('a@')],
    ['local part then @', (b) => `${'a'.repeat(b)}@`],
    ['@ then a domain with no dot', (b) => `a@${'b'.repeat(b)}`],
    ['dots after @ without letters', (b) => `a@${'b.1'.repeat(b / 3)}`],
    ['colons', repeat(':')],
    ['hex and colons', repeat('ab:')],
    ['dashes', repeat('-')],
    ['hex with dashes', repeat('abcd-')],
    ['digits and dots', repeat('1.')],
    ['hex', repeat('a')],
    ['0x prefixes', repeat('0x')],
  ];
  for (const [what, make] of inputs) {
    it(what, async () => {
      for (const fn of [hasEmail, hasIpv4, hasIpv6, hasLongHex, hasUuid, looksUnbounded]) {
        await assertLinear(() => growth(make, fn, 4 * 1024), `${fn.name}: `);
        const input = make(64 * 1024);
        const t = await bestOf(3, () => fn(input));
        assert.ok(t < 50, `${fn.name} took ${t.toFixed(1)} ms on 64 KB`);
      }
    });
  }
});
