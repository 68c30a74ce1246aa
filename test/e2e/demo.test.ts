// The README's main job: `infertel demo` as a newcomer runs it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CLI, eventually, getText, SHARED_FIXTURES, sampleValue, sharedFixturesPresent, spawnAgent, spawnDemo, startServer } from '../helpers.js';

describe('infertel demo', () => {
  it('serves canonical series of both simulated engines and simulated GPUs, and stops on SIGTERM', async () => {
    const demo = await spawnDemo(['--interval', '300ms', '--load', '20']);
    const out = () => demo.output();
    try {
      const body = await eventually(
        async () => {
          const b = (await getText(`${demo.base}/metrics`)).body;
          return b.includes('flavor="tgi"') && b.includes('flavor="vllm"') && b.includes('tokens_per_second{') && b;
        },
        15_000,
        'demo metrics',
      );
      assert.ok(sampleValue(body, 'inference_active_streams', 'model="meta-llama/Llama-3.1-8B-Instruct"') !== undefined);
      assert.ok(sampleValue(body, 'inference_requests_total', 'model="mistralai/Mistral-7B-Instruct-v0.3"', 'code="2xx"') !== undefined);
      assert.equal(sampleValue(body, 'gpu_telemetry_source', 'source="simulated"'), 1);
      assert.match(out(), /infertel demo is running/);
      // Request-level mode: the proxy in front of the simulated vLLM, with several tenants of load.
      const withTenants = await eventually(
        async () => {
          const b = (await getText(`${demo.base}/metrics`)).body;
          return ['acme', 'globex'].every((t) => b.includes(`tenant="${t}"`)) && /\ntokens_generated_total\{[^}]*tenant="acme"\} [1-9]/.test(b) && b;
        },
        15_000,
        'tenant series',
      );
      assert.ok(
        sampleValue(withTenants, 'inference_requests_total', 'model="mistralai/Mistral-7B-Instruct-v0.3"', 'code="2xx"') !== undefined,
        'TGI, not behind the proxy, keeps its own',
      );
      // A request log line and a trace line (one request in ten is traced, at 20 a second).
      await eventually(
        async () =>
          out()
            .split('\n')
            .some((l) => l.includes('"event":"inference"')),
        15_000,
        'request logs',
      );
      await eventually(
        async () =>
          out()
            .split('\n')
            .some((l) => l.startsWith('trace ') && l.includes('router.admission')),
        15_000,
        'trace lines',
      );
      // initech is the demo's rate-limited tenant (12 a minute; the load sends it about 2 a second).
      await eventually(
        async () => /\nrate_limited_requests_total\{tenant="initech",limit="requests"\} [1-9]/.test((await getText(`${demo.base}/metrics`)).body),
        20_000,
        'initech rate-limited',
      );
      // The demo's canary counts to 20 on the simulated vLLM every 10 s and passes its checks.
      const withCanary = await eventually(
        async () => {
          const b = (await getText(`${demo.base}/metrics`)).body;
          return /\ncanary_runs_total\{[^}]*result="ok"\} [1-9]/.test(b) && b;
        },
        20_000,
        'a passing canary run',
      );
      // A loaded CI machine can make a run late (the stand-in decodes at 40 tokens/s against the 30
      // floor); an error or a wrong answer would be a bug in the demo.
      for (const m of withCanary.matchAll(/\ncanary_runs_total\{[^}]*result="([a-z_]+)"\}/g))
        assert.ok(['ok', 'timeout', 'ttft_exceeded', 'too_slow'].includes(m[1]!), `canary result ${m[1]}`);
      assert.equal(sampleValue(withCanary, 'canary_endpoint_up', 'endpoint="health"'), 1);
      assert.match(out(), /canaries: +every 10 s/);
      const streamed = await fetch(`${demo.proxyBase}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer sk-demo-acme-0001' },
        body: JSON.stringify({ model: 'meta-llama/Llama-3.1-8B-Instruct', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(streamed.status, 200);
      assert.match(await streamed.text(), /data: \[DONE\]/);
      assert.match(out(), /JSON summary: +http:\/\/127\.0\.0\.1:\d+\/metrics\?format=json/);
    } finally {
      const t0 = Date.now();
      const code = await demo.stop();
      assert.equal(code, 0, out().slice(-3000));
      assert.ok(Date.now() - t0 < 1500);
    }
  });
});

describe('infertel demo --engines', () => {
  it('adds simulated SGLang (tensor-parallel) and llama.cpp, each detected, with its model learned', async () => {
    const demo = await spawnDemo(['--engines', 'vllm,sglang,llamacpp', '--interval', '300ms', '--gpus', '0', '--proxy-listen', 'off']);
    try {
      const body = await eventually(
        async () => {
          const b = (await getText(`${demo.base}/metrics`)).body;
          return ['vllm', 'sglang', 'llamacpp'].every((f) => b.includes(`flavor="${f}"`)) && b.includes('model="qwen2.5-1.5b-instruct-q4_k_m.gguf"') && b;
        },
        15_000,
        'three engines',
      );
      assert.ok(!body.includes('flavor="tgi"'));
      assert.match(body, /\ninfertel_upstream_info\{upstream="[^"]+",flavor="sglang",version="0\.5\.4"\} 1\n/);
      // Four TP ranks report the same running requests: the canonical gauge is one rank's value.
      const ranks = [...body.matchAll(/\nsglang:num_running_reqs\{[^}]*tp_rank="(\d)"\} (\S+)/g)];
      assert.equal(ranks.length, 4);
      assert.equal(sampleValue(body, 'inference_active_streams', 'model="Qwen/Qwen2.5-7B-Instruct"'), Number(ranks[0]![2]));
      assert.ok(sampleValue(body, 'tokens_input_total', 'model="qwen2.5-1.5b-instruct-q4_k_m.gguf"') !== undefined);
      // llama-server's per-scrape throughput gauges are not re-exported; its mistyped counter is a gauge.
      assert.ok(!body.includes('llamacpp:predicted_tokens_seconds'));
      assert.match(body, /# TYPE llamacpp:n_tokens_max gauge\n/);
    } finally {
      await demo.stop();
    }
  });

  it('vLLM alone on simulated H100s: energy per token, MFU and bandwidth utilisation are joined from GPU and engine counters', async () => {
    const demo = await spawnDemo(['--engines', 'vllm', '--interval', '300ms', '--proxy-listen', 'off']);
    const model = 'model="meta-llama/Llama-3.1-8B-Instruct"';
    try {
      const body = await eventually(
        async () => {
          const b = (await getText(`${demo.base}/metrics`)).body;
          // MFU is per engine window, and one in which the stand-in generated nothing truly reads 0: wait for a positive one.
          return (
            ['energy_per_token_joules', 'memory_bandwidth_utilization_ratio'].every((n) => sampleValue(b, n, model) !== undefined) &&
            (sampleValue(b, 'model_flops_utilization_ratio', model) ?? 0) > 0 &&
            b
          );
        },
        15_000,
        'the efficiency joins',
      );
      assert.ok(sampleValue(body, 'gpu_energy_joules_total', 'device="nvidia0"')! > 0);
      // Simulated power is 90-650 W and the simulated engines generate tokens: joules per token is positive and finite.
      const jpt = sampleValue(body, 'energy_per_token_joules', model)!;
      assert.ok(jpt > 0 && Number.isFinite(jpt), String(jpt));
      const mfu = sampleValue(body, 'model_flops_utilization_ratio', model)!;
      assert.ok(mfu < 1, String(mfu));
    } finally {
      await demo.stop();
    }
  });

  it('--gpus amd: simulated MI300Xs as amd<index>, and with vLLM and TGI sharing them each model gets its share of the energy', async () => {
    const demo = await spawnDemo(['--gpus', 'amd', '--interval', '300ms', '--proxy-listen', 'off']);
    const models = ['model="meta-llama/Llama-3.1-8B-Instruct"', 'model="mistralai/Mistral-7B-Instruct-v0.3"'];
    try {
      const body = await eventually(
        async () => {
          const b = (await getText(`${demo.base}/metrics`)).body;
          return models.every((m) => sampleValue(b, 'energy_per_token_joules', m) !== undefined) && b;
        },
        20_000,
        'energy per token of both models',
      );
      assert.match(body, /gpu_info\{device="amd0",[^}]*name="AMD Instinct MI300X \(simulated\)",[^}]*vendor="amd"\} 1/);
      assert.ok(sampleValue(body, 'gpu_hotspot_temperature_celsius', 'device="amd1"')! > sampleValue(body, 'gpu_temperature_celsius', 'device="amd1"')!);
      for (const m of models) {
        const jpt = sampleValue(body, 'energy_per_token_joules', m)!;
        assert.ok(jpt > 0 && Number.isFinite(jpt), `${m}: ${jpt}`);
      }
      const s = JSON.parse((await getText(`${demo.base}/metrics?format=json`)).body);
      assert.deepEqual(
        s.gpu.devices.map((d: { device: string; vendor: string }) => `${d.device}/${d.vendor}`),
        ['amd0/amd', 'amd1/amd'],
      );
    } finally {
      await demo.stop();
    }
  });

  it('refuses an engine it cannot simulate, naming the choices', async () => {
    const child = spawn(process.execPath, [CLI, 'demo', '--engines', 'vllm,mistralrs', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.notEqual(code, 0);
    assert.match(err, /--engines: unknown mistralrs; choose from vllm, tgi, sglang, llamacpp/);
  });

  it('a bad flag or a taken port is a configuration error naming the key (exit 2), not a stack trace', async () => {
    const taken = await startServer((_req, res) => res.end());
    try {
      for (const [args, key] of [
        [['--interval', 'bogus', '--listen', '127.0.0.1:0'], /interval: must be a duration/],
        [['--listen', taken.url.replace('http://', ''), '--proxy-listen', 'off'], /listen: cannot listen on .* \(EADDRINUSE\)/],
      ] as const) {
        const child = spawn(process.execPath, [CLI, 'demo', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        child.stderr!.on('data', (d) => (err += d));
        const code = await new Promise<number | null>((r) => child.once('exit', r));
        assert.equal(code, 2, err);
        assert.match(err, key);
        assert.doesNotMatch(err, /\n\s+at /, 'a stack trace');
      }
    } finally {
      await taken.close();
    }
  });
});

describe('real captures served as upstreams (../shared/fixtures)', { skip: !sharedFixturesPresent() && 'no ../shared/fixtures' }, () => {
  it('each capture is scraped without errors, detected as its engine and mapped', async () => {
    const files = readdirSync(SHARED_FIXTURES)
      .filter((f) => f.endsWith('.prom'))
      .sort();
    const servers = await Promise.all(
      files.map((f) => {
        const body = readFileSync(SHARED_FIXTURES + f);
        return startServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(body));
      }),
    );
    const agent = await spawnAgent([...servers.flatMap((s) => ['--upstream', `${s.url}/metrics`]), '--interval', '300ms', '--model', 'captured']);
    try {
      const body = await eventually(
        async () => {
          const b = (await getText(`${agent.base}/metrics`)).body;
          return servers.every((s) => sampleValue(b, 'infertel_upstream_up', `upstream="127.0.0.1:${s.port}"`) === 1) && b;
        },
        10_000,
        'all captures up',
      );
      const flavorOf = (f: string) =>
        /flavor="(\w+)"/.exec(body.split('\n').find((l) => l.startsWith('infertel_upstream_info') && l.includes(`:${servers[files.indexOf(f)]!.port}"`))!)![1];
      assert.equal(flavorOf('vllm-v0-2024-06-datadog-opt125m.prom'), 'vllm');
      assert.equal(flavorOf('tgi-3.x-datadog.prom'), 'tgi');
      assert.equal(flavorOf('sglang-docs-example-2024.prom'), 'sglang');
      assert.equal(flavorOf('triton-trtllm-backend-readme-inflight-batcher.prom'), 'trtllm');
      assert.equal(flavorOf('triton-trtllm-backend-readme-core-nv_inference.prom'), 'triton');
      assert.match(body, /\nsglang:num_running_reqs/);
      // Read off the capture itself: its prompt-token counter and TTFT count.
      const sglangModel = 'model="meta-llama/Llama-3.1-8B-Instruct"';
      assert.equal(sampleValue(body, 'tokens_input_total', sglangModel), 8.128902e6);
      assert.equal(sampleValue(body, 'inference_ttft_ms_count', sglangModel), 11008);
      // The backend capture: scheduled requests 1, KV fraction 0.4875.
      assert.equal(sampleValue(body, 'kv_cache_usage_ratio', 'model="tensorrt_llm"'), 0.4875);
      assert.match(body, /\nnv_trt_llm_request_metrics\{/);
      assert.ok(sampleValue(body, 'inference_ttft_ms_count', 'model="facebook/opt-125m"')! > 0);
      assert.ok(sampleValue(body, 'inference_requests_total', 'model="captured"', 'code="2xx"')! > 0);
    } finally {
      await agent.stop();
      for (const s of servers) await s.close();
    }
  });
});
