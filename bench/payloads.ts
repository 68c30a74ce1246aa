// Benchmark payloads: ../shared/tools/gen-exposition.mjs when it is there (the presets the issue
// names), else the demo's vLLM simulator scaled to a similar size.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SglangSim } from '../agent/demo/sim-sglang.js';
import { VllmSim } from '../agent/demo/sim-vllm.js';

const GENERATOR = fileURLToPath(new URL('../../../shared/tools/gen-exposition.mjs', import.meta.url));

export interface Payload {
  name: string;
  text: string;
  source: string;
}

export function payload(name: string, models: number, engines: number): Payload {
  if (existsSync(GENERATOR)) {
    const text = execFileSync(process.execPath, [GENERATOR, '--models', String(models), '--engines', String(engines)], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return { name, text, source: `gen-exposition.mjs --models ${models} --engines ${engines}` };
  }
  const parts: string[] = [];
  for (let m = 0; m < models; m++) {
    const sim = new VllmSim({ model: `model-${m}`, engines, maxModelLen: 32768, rate: 30, seed: m + 1 }, 0);
    sim.advance(60_000);
    parts.push(sim.render());
  }
  return { name, text: parts.join(''), source: `VllmSim x${models} models x${engines} engines` };
}

/** The same payload as OpenMetrics writes it: counter families named without _total, `# EOF` last. */
export function asOpenMetrics(text: string): string {
  const counters = new Set([...text.matchAll(/^# TYPE (\S+)_total counter$/gm)].map((m) => m[1]!));
  const body = text
    .split('\n')
    .map((line) => {
      const m = /^# (TYPE|HELP) (\S+)_total( .*)?$/.exec(line);
      return m && counters.has(m[2]!) ? `# ${m[1]} ${m[2]}${m[3] ?? ''}` : line;
    })
    .join('\n')
    .replace(/\n*$/, '\n');
  return `${body}# EOF\n`;
}

/** An SGLang server with 8 tensor-parallel ranks (scheduler series once per rank), after some traffic. */
export function sglangPayload(tpSize = 8): Payload {
  const sim = new SglangSim({ model: 'deepseek-ai/DeepSeek-V3', tpSize, rate: 50, seed: 5 }, 0);
  for (let t = 1; t <= 60; t++) sim.advance(t * 1000);
  return { name: `sglang-tp${tpSize}`, text: sim.render(), source: `SglangSim, ${tpSize} tensor-parallel ranks` };
}
