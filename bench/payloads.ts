// Benchmark payloads: ../shared/tools/gen-exposition.mjs when it is there (the presets the issue
// names), else the demo's vLLM simulator scaled to a similar size.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VllmSim } from '../agent/demo/sim-vllm.js';

const GENERATOR = fileURLToPath(new URL('../../../shared/tools/gen-exposition.mjs', import.meta.url));

export interface Payload {
  name: string;
  text: string;
  source: string;
}

export function payload(name: string, models: number, engines: number): Payload {
  if (existsSync(GENERATOR)) {
    const text = execFileSync(process.execPath, [GENERATOR, '--models', String(models), '--engines', String(engines)], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
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
