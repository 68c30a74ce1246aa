// A simulated vLLM V1 (~0.11) API server with data-parallel engines: names, label order
// (alphabetical, so `le` sits between engine and model_name), bucket layouts, `_created`
// families and Python float formatting as prometheus_client renders them.

import { Hist, logNormal, poisson, pyFloat, rng } from './sim-common.js';

const TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0];
const ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const REQUEST = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0];
const ITERATION_TOKENS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];

/** vLLM's build_1_2_5_buckets(max_model_len). */
export function buckets125(max: number): number[] {
  const out: number[] = [];
  for (let exp = 0; ; exp++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** exp;
      if (v > max) return out;
      out.push(v);
    }
  }
}

const REASONS = ['abort', 'error', 'length', 'stop'] as const;

interface Engine {
  id: string;
  created: number;
  running: number;
  waiting: number;
  kvUsage: number;
  prefixQueries: number;
  prefixHits: number;
  preemptions: number;
  promptTokens: number;
  generationTokens: number;
  /** --enable-mfu-metrics estimates, per GPU (one GPU per engine here): the work done so far. */
  flops: number;
  readBytes: number;
  writeBytes: number;
  /** Work of the requests that arrived, not done yet: a GPU does it at a bounded rate. */
  todo: { flops: number; readBytes: number; writeBytes: number };
  success: Record<(typeof REASONS)[number], number>;
  hist: Record<string, Hist>;
}

export interface VllmSimOptions {
  model: string;
  engines: number;
  maxModelLen: number;
  /** Requests per second per engine. */
  rate: number;
  seed: number;
}

/**
 * What one simulated GPU sustains: 60% of an H100's dense BF16 peak and 75% of its HBM bandwidth.
 * A request's work is counted as it is done, never faster: one long prompt counted whole when it
 * arrived would show a 300 ms window with more FLOPs than the GPU can do. The traffic averages
 * about a fifth of this, so the work waiting to be done drains between bursts.
 */
const SUSTAINED_FLOPS_PER_S = 0.6 * 989e12;
const SUSTAINED_BYTES_PER_S = 0.75 * 3.35e12;

/** Moves `dt` seconds of the engine's waiting work into its counters. */
function doWork(e: Engine, dt: number): void {
  const flops = Math.min(e.todo.flops, SUSTAINED_FLOPS_PER_S * dt);
  e.flops += flops;
  e.todo.flops -= flops;
  const waiting = e.todo.readBytes + e.todo.writeBytes;
  if (waiting <= 0) return;
  // Reads and writes share the bandwidth in the proportion they wait.
  const share = Math.min(1, (SUSTAINED_BYTES_PER_S * dt) / waiting);
  const read = e.todo.readBytes * share;
  const write = e.todo.writeBytes * share;
  e.readBytes += read;
  e.writeBytes += write;
  e.todo.readBytes -= read;
  e.todo.writeBytes -= write;
}

export class VllmSim {
  private readonly random: () => number;
  private readonly engines: Engine[];
  private readonly http: Record<string, number> = {};
  private httpCreated: number;
  private last: number;

  constructor(
    private readonly opts: VllmSimOptions,
    now = Date.now(),
  ) {
    this.random = rng(opts.seed);
    this.last = now;
    this.httpCreated = now / 1000;
    this.engines = Array.from({ length: opts.engines }, (_, i) => this.newEngine(String(i), now));
  }

  private newEngine(id: string, now: number): Engine {
    const tokens = buckets125(this.opts.maxModelLen);
    return {
      id,
      created: now / 1000,
      running: 0,
      waiting: 0,
      kvUsage: 0,
      prefixQueries: 0,
      prefixHits: 0,
      preemptions: 0,
      promptTokens: 0,
      generationTokens: 0,
      flops: 0,
      readBytes: 0,
      writeBytes: 0,
      todo: { flops: 0, readBytes: 0, writeBytes: 0 },
      success: { abort: 0, error: 0, length: 0, stop: 0 },
      hist: {
        time_to_first_token_seconds: new Hist(TTFT),
        inter_token_latency_seconds: new Hist(ITL),
        request_time_per_output_token_seconds: new Hist(ITL),
        e2e_request_latency_seconds: new Hist(REQUEST),
        request_queue_time_seconds: new Hist(REQUEST),
        request_inference_time_seconds: new Hist(REQUEST),
        request_prefill_time_seconds: new Hist(REQUEST),
        request_decode_time_seconds: new Hist(REQUEST),
        request_prompt_tokens: new Hist(tokens),
        request_generation_tokens: new Hist(tokens),
        iteration_tokens_total: new Hist(ITERATION_TOKENS),
      },
    };
  }

  /** Advance simulated traffic to `now`. */
  advance(now = Date.now()): void {
    const dt = Math.max(0, (now - this.last) / 1000);
    this.last = now;
    const r = this.random;
    for (const e of this.engines) {
      const n = poisson(this.opts.rate * dt, r);
      let busy = 0;
      for (let i = 0; i < n; i++) {
        const prompt = Math.min(this.opts.maxModelLen - 1, Math.max(4, Math.round(r() < 0.1 ? logNormal(9000, 0.6, r) : logNormal(700, 0.9, r))));
        const gen = Math.max(1, Math.round(logNormal(180, 0.7, r)));
        const queue = r() < 0.8 ? r() * 0.05 : logNormal(0.4, 0.8, r);
        const prefill = 0.01 + prompt / 25000;
        const itl = logNormal(0.022, 0.25, r);
        const decode = gen * itl;
        const e2e = queue + prefill + decode;
        const cached = Math.floor(prompt * (0.3 + 0.5 * r()));
        const h = e.hist;
        h.time_to_first_token_seconds!.observe(queue + prefill);
        for (let k = 0; k < Math.min(gen, 16); k++) h.inter_token_latency_seconds!.observe(logNormal(itl, 0.15, r));
        h.request_time_per_output_token_seconds!.observe(itl);
        h.e2e_request_latency_seconds!.observe(e2e);
        h.request_queue_time_seconds!.observe(queue);
        h.request_inference_time_seconds!.observe(prefill + decode);
        h.request_prefill_time_seconds!.observe(prefill);
        h.request_decode_time_seconds!.observe(decode);
        h.request_prompt_tokens!.observe(prompt);
        h.request_generation_tokens!.observe(gen);
        h.iteration_tokens_total!.observe(Math.min(16384, prompt + 32));
        e.promptTokens += prompt;
        e.generationTokens += gen;
        // An 8B model: 2 x 8e9 FLOP a token; decode reads the 16 GB of weights once a step for a
        // batch of ~32; each token's KV (128 KiB) is written once.
        e.todo.flops += 2 * 8e9 * (prompt + gen);
        e.todo.readBytes += gen * 5e8 + prompt * 1e6;
        e.todo.writeBytes += (prompt + gen) * 131072;
        e.prefixQueries += prompt;
        e.prefixHits += cached;
        const reason = r() < 0.02 ? 'abort' : r() < 0.25 ? 'length' : 'stop';
        e.success[reason]++;
        if (r() < 0.01) e.preemptions++;
        busy += e2e;
        const handler = r() < 0.7 ? '/v1/chat/completions' : '/v1/completions';
        const status = r() < 0.005 ? '5xx' : r() < 0.02 ? '4xx' : '2xx';
        const key = `${handler}|POST|${status}`;
        this.http[key] = (this.http[key] ?? 0) + 1;
      }
      doWork(e, dt);
      e.running = Math.round(dt > 0 ? busy / dt : 0);
      e.waiting = Math.max(0, Math.round(e.running > 24 ? (e.running - 24) * r() * 2 : r() < 0.1 ? 1 : 0));
      e.kvUsage = Math.min(1, 0.05 + e.running * 0.018 + r() * 0.02);
    }
  }

  render(): string {
    const model = this.opts.model;
    const out: string[] = [];
    const labels = (e: Engine) => `engine="${e.id}",model_name="${model}"`;
    const family = (name: string, type: string, help: string, lines: string[]) => {
      out.push(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`, ...lines);
    };
    const created = (base: string, help: string) => {
      family(
        `${base}_created`,
        'gauge',
        help,
        this.engines.map((e) => `${base}_created{${labels(e)}} ${pyFloat(e.created)}\n`),
      );
    };
    const gauge = (name: string, help: string, get: (e: Engine) => number) =>
      family(
        `vllm:${name}`,
        'gauge',
        help,
        this.engines.map((e) => `vllm:${name}{${labels(e)}} ${pyFloat(get(e))}\n`),
      );
    const counter = (name: string, help: string, get: (e: Engine) => number) => {
      family(
        `vllm:${name}_total`,
        'counter',
        help,
        this.engines.map((e) => `vllm:${name}_total{${labels(e)}} ${pyFloat(get(e))}\n`),
      );
      created(`vllm:${name}`, help);
    };
    const histogram = (name: string, help: string) => {
      const lines: string[] = [];
      for (const e of this.engines) {
        const h = e.hist[name];
        if (!h) continue;
        h.bounds.forEach((b, i) => {
          lines.push(`vllm:${name}_bucket{engine="${e.id}",le="${pyFloat(b)}",model_name="${model}"} ${pyFloat(h.counts[i] ?? 0)}\n`);
        });
        lines.push(`vllm:${name}_bucket{engine="${e.id}",le="+Inf",model_name="${model}"} ${pyFloat(h.count)}\n`);
        lines.push(`vllm:${name}_count{${labels(e)}} ${pyFloat(h.count)}\n`, `vllm:${name}_sum{${labels(e)}} ${pyFloat(h.sum)}\n`);
      }
      family(`vllm:${name}`, 'histogram', help, lines);
      created(`vllm:${name}`, help);
    };
    gauge('num_requests_running', 'Number of requests in model execution batches.', (e) => e.running);
    gauge('num_requests_waiting', 'Number of requests waiting to be processed.', (e) => e.waiting);
    gauge('kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', (e) => e.kvUsage);
    counter('prefix_cache_queries', 'Prefix cache queries, in terms of number of queried tokens.', (e) => e.prefixQueries);
    counter('prefix_cache_hits', 'Prefix cache hits, in terms of number of cached tokens.', (e) => e.prefixHits);
    counter('num_preemptions', 'Cumulative number of preemption from the engine.', (e) => e.preemptions);
    counter('prompt_tokens', 'Number of prefill tokens processed.', (e) => e.promptTokens);
    counter('generation_tokens', 'Number of generation tokens processed.', (e) => e.generationTokens);
    counter('estimated_flops_per_gpu', 'Estimated number of floating point operations per GPU (for Model Flops Utilization calculations).', (e) => e.flops);
    counter(
      'estimated_read_bytes_per_gpu',
      'Estimated number of bytes read from memory per GPU (for Model Bandwidth Utilization calculations).',
      (e) => e.readBytes,
    );
    counter(
      'estimated_write_bytes_per_gpu',
      'Estimated number of bytes written to memory per GPU (for Model Bandwidth Utilization calculations).',
      (e) => e.writeBytes,
    );
    const successLines: string[] = [];
    for (const e of this.engines) {
      for (const r of REASONS)
        successLines.push(`vllm:request_success_total{engine="${e.id}",finished_reason="${r}",model_name="${model}"} ${pyFloat(e.success[r])}\n`);
    }
    family('vllm:request_success_total', 'counter', 'Count of successfully processed requests.', successLines);
    const successCreated: string[] = [];
    for (const e of this.engines) {
      for (const r of REASONS)
        successCreated.push(`vllm:request_success_created{engine="${e.id}",finished_reason="${r}",model_name="${model}"} ${pyFloat(e.created)}\n`);
    }
    family('vllm:request_success_created', 'gauge', 'Count of successfully processed requests.', successCreated);
    histogram('request_prompt_tokens', 'Number of prefill tokens processed.');
    histogram('request_generation_tokens', 'Number of generation tokens processed.');
    histogram('iteration_tokens_total', 'Histogram of number of tokens per engine_step.');
    histogram('time_to_first_token_seconds', 'Histogram of time to first token in seconds.');
    histogram('inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.');
    histogram('request_time_per_output_token_seconds', 'Histogram of time_per_output_token_seconds per request.');
    histogram('e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.');
    histogram('request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.');
    histogram('request_inference_time_seconds', 'Histogram of time spent in RUNNING phase for request.');
    histogram('request_prefill_time_seconds', 'Histogram of time spent in PREFILL phase for request.');
    histogram('request_decode_time_seconds', 'Histogram of time spent in DECODE phase for request.');
    const http = Object.entries(this.http).sort();
    family(
      'http_requests_total',
      'counter',
      'Total number of requests by method, status and handler.',
      http.map(([k, v]) => {
        const [h, m, s] = k.split('|');
        return `http_requests_total{handler="${h}",method="${m}",status="${s}"} ${pyFloat(v)}\n`;
      }),
    );
    family(
      'http_requests_created',
      'gauge',
      'Total number of requests by method, status and handler.',
      http.map(([k]) => {
        const [h, m, s] = k.split('|');
        return `http_requests_created{handler="${h}",method="${m}",status="${s}"} ${pyFloat(this.httpCreated)}\n`;
      }),
    );
    return out.join('');
  }
}
