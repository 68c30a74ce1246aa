// `infertel demo`: simulated engines on loopback (by default vLLM V1 with two data-parallel
// engines and TGI v3; `--engines` adds SGLang and llama.cpp) and the agent scraping them. TGI
// restarts every few minutes, so its counters reset.

import { Agent } from '../agent.js';
import { validateConfig } from '../config/load.js';
import { parseDuration } from '../config/duration.js';
import { agentDeps } from '../runtime.js';
import { stopOnSignal, type Signals } from '../signals.js';
import { serve, type SimServer } from './sim-common.js';
import { LlamacppSim } from './sim-llamacpp.js';
import { SglangSim } from './sim-sglang.js';
import { TgiSim } from './sim-tgi.js';
import { VllmSim } from './sim-vllm.js';
import { openAiHandler } from './sim-openai.js';
import { DEMO_TENANTS, demoTenantConfig, startLoad } from './load.js';
import { startTraceViewer } from './traces.js';

export const DEMO_VLLM_MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
export const DEMO_TGI_MODEL = 'mistralai/Mistral-7B-Instruct-v0.3';
export const DEMO_SGLANG_MODEL = 'Qwen/Qwen2.5-7B-Instruct';
export const DEMO_LLAMACPP_MODEL = 'qwen2.5-1.5b-instruct-q4_k_m.gguf';

/** The GPU process of each simulated engine, by the name the real engine's process has. */
const DEMO_PROCESSES: Record<DemoEngine, { name: string; model: string }> = {
  vllm: { name: 'VLLM::EngineCore', model: DEMO_VLLM_MODEL },
  tgi: { name: 'text-generation-server', model: DEMO_TGI_MODEL },
  sglang: { name: 'sglang::scheduler', model: DEMO_SGLANG_MODEL },
  llamacpp: { name: 'llama-server', model: DEMO_LLAMACPP_MODEL },
};

/** Engines the demo can simulate. */
export const DEMO_ENGINES = ['vllm', 'tgi', 'sglang', 'llamacpp'] as const;
type DemoEngine = (typeof DEMO_ENGINES)[number];

const TEXT = 'text/plain; version=0.0.4; charset=utf-8';
const json = (res: import('node:http').ServerResponse, doc: unknown) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(doc));

/** The simulated SGLang (tensor-parallel over 4 ranks) and llama.cpp servers. */
async function startExtraEngine(name: 'sglang' | 'llamacpp'): Promise<{ server: SimServer; title: string }> {
  if (name === 'sglang') {
    const sim = new SglangSim({ model: DEMO_SGLANG_MODEL, tpSize: 4, rate: 3, seed: 13 });
    const server = await serve((req, res) => {
      if (req.url?.startsWith('/metrics')) {
        sim.advance();
        res.writeHead(200, { 'Content-Type': TEXT }).end(sim.render());
      } else if (req.url === '/v1/models') json(res, { object: 'list', data: [{ id: DEMO_SGLANG_MODEL, object: 'model' }] });
      else if (req.url === '/get_server_info') json(res, { version: '0.5.4' });
      else res.writeHead(404).end();
    });
    return { server, title: 'simulated SGLang (TP=4)' };
  }
  const sim = new LlamacppSim({ rate: 1, seed: 17, slots: 4 });
  const server = await serve((req, res) => {
    if (req.url?.startsWith('/metrics')) {
      sim.advance();
      res.writeHead(200, { 'Content-Type': TEXT }).end(sim.render());
    } else if (req.url === '/props') json(res, { model_path: `/models/${DEMO_LLAMACPP_MODEL}`, build_info: 'b7000-demo' });
    else if (req.url === '/v1/models') json(res, { object: 'list', data: [{ id: DEMO_LLAMACPP_MODEL, object: 'model' }] });
    else res.writeHead(404).end();
  });
  return { server, title: 'simulated llama.cpp llama-server' };
}

/** `--engines vllm,sglang`: the names, checked against what the demo can simulate. */
export function parseDemoEngines(list: string): DemoEngine[] {
  const names = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = names.filter((n) => !(DEMO_ENGINES as readonly string[]).includes(n));
  if (bad.length || !names.length)
    throw new Error(`--engines: ${bad.length ? `unknown ${bad.join(', ')}` : 'none given'}; choose from ${DEMO_ENGINES.join(', ')}`);
  return [...new Set(names)] as DemoEngine[];
}

/** `--gpus`: a count of NVIDIA GPUs ("2"), or a vendor with an optional count ("amd", "amd:4", "nvidia:1"); 0 for none. */
export function parseDemoGpus(spec: string): { simulate: number; simulateVendor: 'nvidia' | 'amd' } {
  const m = /^(?:(nvidia|amd)(?::(\d+))?|(\d+))$/.exec(spec.trim());
  if (!m) throw new Error(`--gpus: ${spec} is not a count or nvidia[:N] / amd[:N]`);
  const count = Number(m[2] ?? m[3] ?? 2);
  if (count > 16) throw new Error('--gpus: at most 16 simulated GPUs');
  return { simulate: count, simulateVendor: m[1] === 'amd' ? 'amd' : 'nvidia' };
}

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
  // The OpenAI-compatible API the proxy forwards to: ~40 tokens/s streams, like a loaded 8B model.
  const openAi = openAiHandler({ models: [DEMO_VLLM_MODEL], ttftMs: 120, itlMs: 25, tokens: 48 });
  const vllm = await serve((req, res) => {
    if (req.url?.startsWith('/metrics')) {
      vllmSim.advance();
      res.writeHead(200, { 'Content-Type': text }).end(vllmSim.render());
    } else if (req.url === '/version') json(res, { version: '0.11.0' });
    else openAi(req, res);
  }, ports.vllm);
  const tgi = await serve((req, res) => {
    if (req.url?.startsWith('/metrics')) {
      tgiSim.advance();
      res.writeHead(200, { 'Content-Type': text }).end(tgiSim.render());
    } else if (req.url === '/info') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ model_id: DEMO_TGI_MODEL, version: '3.3.6' }));
    } else res.writeHead(404).end();
  }, ports.tgi);
  const timer =
    restartEveryMs > 0
      ? setInterval(() => {
          tgiSim.reset();
          tgiSim.restarts++;
        }, restartEveryMs)
      : undefined;
  timer?.unref();
  return {
    vllm,
    tgi,
    tgiSim,
    async close() {
      if (timer) clearInterval(timer);
      await Promise.all([vllm.close(), tgi.close()]);
    },
  };
}

export async function runDemo(
  flags: { listen: string; interval: string; restartEvery: string; units: string; gpus: string; engines: string; proxyListen: string; load: string },
  signals: Signals,
): Promise<void> {
  const restartMs = parseDuration(flags.restartEvery);
  if (restartMs === undefined) throw new Error(`--restart-every: not a duration: ${flags.restartEvery}`);
  const wanted = parseDemoEngines(flags.engines);
  const gpus = parseDemoGpus(flags.gpus);
  const engines = await startSimulatedEngines(restartMs);
  const extras = await Promise.all(wanted.filter((n): n is 'sglang' | 'llamacpp' => n === 'sglang' || n === 'llamacpp').map(startExtraEngine));
  const shown: Array<{ title: string; url: string }> = [
    ...(wanted.includes('vllm') ? [{ title: 'simulated vLLM V1 (2 engines)', url: engines.vllm.url }] : []),
    ...(wanted.includes('tgi') ? [{ title: `simulated TGI v3 (restarts every ${flags.restartEvery})`, url: engines.tgi.url }] : []),
    ...extras.map((e) => ({ title: e.title, url: e.server.url })),
  ];
  const closeAll = async () => {
    await engines.close();
    await Promise.all(extras.map((e) => e.server.close()));
  };
  const proxyOn = flags.proxyListen !== 'off' && wanted.includes('vllm');
  const loadPerSecond = Number(flags.load);
  if (!Number.isFinite(loadPerSecond) || loadPerSecond < 0 || loadPerSecond > 200)
    throw new Error(`--load: requests per second from 0 to 200, got ${flags.load}`);
  // Traces go to the user's collector when OTEL_EXPORTER_OTLP_ENDPOINT is set, else to a viewer
  // that prints one line per trace; one request in ten is traced unless the sampler is set.
  const viewer = proxyOn && !process.env.OTEL_EXPORTER_OTLP_ENDPOINT ? await startTraceViewer((line) => process.stderr.write(`${line}\n`)) : undefined;
  if (proxyOn && !process.env.OTEL_TRACES_SAMPLER) {
    process.env.OTEL_TRACES_SAMPLER = 'parentbased_traceidratio';
    process.env.OTEL_TRACES_SAMPLER_ARG = '0.1';
  }
  const otel = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const config = validateConfig({
    listen: flags.listen,
    interval: flags.interval,
    units: flags.units,
    upstreams: shown.map((e) => ({ url: `${e.url}/metrics`, flavor: 'auto' })),
    // Each simulated engine's process, named as the real one is, mapped to its model: the
    // simulated GPUs share their memory between them, so energy per token splits by it.
    gpu: { ...gpus, processRoles: Object.fromEntries(wanted.map((e) => [DEMO_PROCESSES[e].name, DEMO_PROCESSES[e].model])) },
    // A canary on the simulated vLLM every 10 s (30 s is the default), judged against 003's
    // streaming SLO; it goes straight to the engine, so it is in no tenant's numbers.
    ...(wanted.includes('vllm')
      ? {
          canaryTarget: engines.vllm.url,
          canaries: [{ model: DEMO_VLLM_MODEL, prompt: 'Count from 1 to 20.', interval: '10s', sloClass: 'streaming', mustMatch: '\\b20\\.' }],
        }
      : {}),
    ...(proxyOn
      ? {
          proxy: { listen: flags.proxyListen, target: engines.vllm.url },
          tenants: demoTenantConfig(),
          // 002 samples successful request logs at 10%.
          requestLog: { sampleSuccess: 0.1, sampleError: 1 },
          tracing: otel ? { endpoint: otel } : { endpoint: viewer!.url, protocol: 'http/json' },
        }
      : {}),
  });
  const deps = agentDeps(config);
  const agent = new Agent(config, deps);
  await agent.start().catch(async (err: Error) => {
    await closeAll();
    throw err;
  });
  // The bound addresses, not the flags: with port 0 the system chooses the ports.
  const base = `http://${agent.address()}`;
  const proxyBase = `http://${agent.proxyAddress()}`;
  const load = proxyOn && loadPerSecond > 0 ? startLoad(proxyBase, DEMO_VLLM_MODEL, loadPerSecond) : undefined;
  const proxyLines = proxyOn
    ? [
        `  inline proxy (request-level mode) in front of the simulated vLLM: ${proxyBase}/v1/chat/completions`,
        `    ${loadPerSecond > 0 ? `built-in load: ${loadPerSecond} requests/s from ${DEMO_TENANTS.map((t) => t.name).join(', ')} and anonymous` : 'no built-in load (--load 0)'}`,
        `    try: curl -N ${proxyBase}/v1/chat/completions -H 'Authorization: Bearer ${DEMO_TENANTS[0].key}' -H 'Content-Type: application/json' \\`,
        `           -d '{"model":"${DEMO_VLLM_MODEL}","stream":true,"messages":[{"role":"user","content":"hi"}]}'`,
        `    per-tenant series:      ${base}/metrics (inference_requests_total{tenant=...}, tokens_generated_total{tenant=...})`,
        '    rate limits:            initech is held to 12 requests/minute: rate_limited_requests_total{tenant="initech"}, 429s in the request log',
        `    canaries:               every 10 s, straight to the engine: canary_runs_total{result=...}, canary_ttft_ms, canary_tokens_per_second`,
        '    stream validator:       inference_stream_violations_total{kind=...} (stall after 10 s, invalid_json, out_of_order, after_done)',
        '    request logs:           this terminal, lines with "event":"inference" (10% of successes, every error)',
        `    traces:                 ${otel ? `sent to ${otel}` : 'this terminal, lines starting "trace" (one request in ten)'}`,
      ]
    : [];
  process.stderr.write(
    `${[
      '',
      'infertel demo is running.',
      `  status page:             ${base}/`,
      ...shown.map((e) => `  ${e.title}: ${e.url}/metrics`),
      `  agent, Prometheus text:  ${base}/metrics`,
      `  agent, JSON summary:     ${base}/metrics?format=json`,
      `  agent, readiness:        ${base}/readyz`,
      ...proxyLines,
      '  Ctrl-C stops it.',
      '',
    ].join('\n')}\n`,
  );
  await stopOnSignal(signals, async () => {
    await load?.stop();
    await agent.stop();
    await closeAll();
    await viewer?.close();
  });
}
