// `infertel demo`: simulated vLLM V1 (two data-parallel engines) and TGI v3 on loopback, and the
// agent scraping both. TGI restarts every few minutes, so its counters reset.

import { Agent } from '../agent.js';
import { validateConfig } from '../config/load.js';
import { parseDuration } from '../config/duration.js';
import { agentDeps } from '../runtime.js';
import { stopOnSignal, type Signals } from '../signals.js';
import { serve, type SimServer } from './sim-common.js';
import { TgiSim } from './sim-tgi.js';
import { VllmSim } from './sim-vllm.js';

export const DEMO_VLLM_MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
export const DEMO_TGI_MODEL = 'mistralai/Mistral-7B-Instruct-v0.3';

export interface DemoUpstreams {
  vllm: SimServer;
  tgi: SimServer;
  tgiSim: TgiSim;
  close(): Promise<void>;
}

/** Start both simulated engines; TGI restarts every `restartEveryMs` (0: never). */
export async function startSimulatedEngines(restartEveryMs: number, ports: { vllm?: number; tgi?: number } = {}): Promise<DemoUpstreams> {
  const vllmSim = new VllmSim({ model: DEMO_VLLM_MODEL, engines: 2, maxModelLen: 32768, rate: 4, seed: 7 });
  const tgiSim = new TgiSim({ maxInputTokens: 4095, maxTotalTokens: 4096, rate: 3, seed: 11 });
  const text = 'text/plain; version=0.0.4; charset=utf-8';
  const vllm = await serve((req, res) => {
    if (req.url?.startsWith('/metrics')) {
      vllmSim.advance();
      res.writeHead(200, { 'Content-Type': text }).end(vllmSim.render());
    } else res.writeHead(404).end();
  }, ports.vllm);
  const tgi = await serve((req, res) => {
    if (req.url?.startsWith('/metrics')) {
      tgiSim.advance();
      res.writeHead(200, { 'Content-Type': text }).end(tgiSim.render());
    } else if (req.url === '/info') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ model_id: DEMO_TGI_MODEL, version: '3.3.6' }));
    } else res.writeHead(404).end();
  }, ports.tgi);
  const timer = restartEveryMs > 0 ? setInterval(() => { tgiSim.reset(); tgiSim.restarts++; }, restartEveryMs) : undefined;
  timer?.unref();
  return {
    vllm, tgi, tgiSim,
    async close() {
      if (timer) clearInterval(timer);
      await Promise.all([vllm.close(), tgi.close()]);
    },
  };
}

export async function runDemo(flags: { listen: string; interval: string; restartEvery: string; units: string; gpus: string }, signals: Signals): Promise<void> {
  const restartMs = parseDuration(flags.restartEvery);
  if (restartMs === undefined) throw new Error(`--restart-every: not a duration: ${flags.restartEvery}`);
  const engines = await startSimulatedEngines(restartMs);
  const config = validateConfig({
    listen: flags.listen,
    interval: flags.interval,
    units: flags.units,
    upstreams: [{ url: `${engines.vllm.url}/metrics`, flavor: 'auto' }, { url: `${engines.tgi.url}/metrics`, flavor: 'auto' }],
    gpu: { simulate: Number(flags.gpus) },
  });
  const deps = agentDeps(config);
  const agent = new Agent(config, deps);
  await agent.start().catch(async (err: Error) => {
    await engines.close();
    throw err;
  });
  const base = `http://${flags.listen}`;
  process.stderr.write([
    '',
    'infertel demo is running.',
    `  simulated vLLM V1 (2 engines): ${engines.vllm.url}/metrics`,
    `  simulated TGI v3 (restarts every ${flags.restartEvery}): ${engines.tgi.url}/metrics`,
    `  agent, Prometheus text:  ${base}/metrics`,
    `  agent, JSON summary:     ${base}/metrics?format=json`,
    `  agent, readiness:        ${base}/readyz`,
    '  Ctrl-C stops it.',
    '',
  ].join('\n') + '\n');
  await stopOnSignal(signals, async () => {
    await agent.stop();
    await engines.close();
  });
}
