// A simulated SGLang server with tensor parallelism: scheduler series once per rank (the ranks
// of the group report the same requests), tokenizer series split by is_streaming, the `sglang:`
// prefix and prometheus_client's sorted label order.

import { Hist, logNormal, poisson, pyFloat, rng } from './sim-common.js';

const TTFT = [0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400];
const ITL = [0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8];
const E2E = [0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400];
const QUEUE = [0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300, 3000];

export interface SglangSimOptions {
  model: string;
  tpSize: number;
  rate: number;
  seed: number;
}

export class SglangSim {
  private readonly random: () => number;
  private last: number;
  private readonly tokens = { true: { prompt: 0, gen: 0, requests: 0 }, false: { prompt: 0, gen: 0, requests: 0 } };
  private readonly ttft = { true: new Hist(TTFT), false: new Hist(TTFT) };
  private readonly e2e = { true: new Hist(E2E), false: new Hist(E2E) };
  private readonly itl = new Hist(ITL);
  private readonly queue = new Hist(QUEUE);
  private running = 0;
  private waiting = 0;
  private usage = 0;
  private retracted = 0;

  constructor(
    private readonly opts: SglangSimOptions,
    now = Date.now(),
  ) {
    this.random = rng(opts.seed);
    this.last = now;
  }

  advance(now = Date.now()): void {
    const dt = Math.max(0, (now - this.last) / 1000);
    this.last = now;
    const n = poisson(this.opts.rate * dt, this.random);
    for (let i = 0; i < n; i++) {
      const streaming = this.random() < 0.8 ? 'true' : 'false';
      const prompt = Math.max(1, Math.round(logNormal(900, 0.9, this.random)));
      const gen = Math.max(1, Math.round(logNormal(180, 0.6, this.random)));
      const ttft = logNormal(0.35, 0.5, this.random);
      const itl = logNormal(0.018, 0.25, this.random);
      const t = this.tokens[streaming];
      t.prompt += prompt;
      t.gen += gen;
      t.requests++;
      this.ttft[streaming].observe(ttft);
      this.e2e[streaming].observe(ttft + gen * itl);
      this.queue.observe(logNormal(0.02, 1, this.random));
      // SGLang puts the interval in _sum and one count per token (upstream-metrics.md §3.2).
      for (let k = 0; k < gen; k += 16) this.itl.observe(itl);
    }
    this.running = poisson(this.opts.rate * 2, this.random);
    this.waiting = poisson(this.opts.rate / 4, this.random);
    this.usage = Math.min(0.98, 0.1 + this.running / 40);
    if (this.random() < 0.05) this.retracted++;
  }

  render(): string {
    const M = this.opts.model;
    const ranks = Array.from({ length: this.opts.tpSize }, (_, r) => `engine_type="unified",model_name="${M}",moe_ep_rank="${r}",pp_rank="0",tp_rank="${r}"`);
    const out: string[] = [];
    const family = (name: string, type: string, help: string) => out.push(`# HELP sglang:${name} ${help}`, `# TYPE sglang:${name} ${type}`);
    const perRank = (name: string, type: string, help: string, value: number) => {
      family(name, type, help);
      for (const r of ranks) out.push(`sglang:${name}{${r}} ${pyFloat(value)}`);
    };
    const hist = (name: string, help: string, series: Array<[string, Hist]>) => {
      family(name, 'histogram', help);
      for (const [labels, h] of series) {
        const sep = labels ? ',' : '';
        let cum = 0;
        h.bounds.forEach((b, i) => {
          cum = h.counts[i] ?? cum;
          out.push(`sglang:${name}_bucket{${labels}${sep}le="${pyFloat(b)}"} ${pyFloat(cum)}`);
        });
        out.push(
          `sglang:${name}_bucket{${labels}${sep}le="+Inf"} ${pyFloat(h.count)}`,
          `sglang:${name}_count{${labels}} ${pyFloat(h.count)}`,
          `sglang:${name}_sum{${labels}} ${pyFloat(h.sum)}`,
        );
      }
    };
    perRank('num_running_reqs', 'gauge', 'The number of running requests.', this.running);
    perRank('num_queue_reqs', 'gauge', 'The number of requests in the waiting queue.', this.waiting);
    perRank('token_usage', 'gauge', 'The token usage.', Math.round(this.usage * 1000) / 1000);
    // Each rank's KV pool in GiB, constant from start-up (a 7B model at TP=4 on 80 GB GPUs).
    perRank('kv_cache_memory_usage_gb', 'gauge', 'KV cache memory usage in GB.', 52.31);
    perRank('cache_hit_rate', 'gauge', 'The prefix cache hit rate.', 0.42);
    perRank('num_retracted_requests_total', 'counter', 'Retracted requests.', this.retracted);
    hist(
      'queue_time_seconds',
      'Histogram of queueing time in seconds.',
      ranks.map((r) => [r, this.queue]),
    );
    for (const [name, key, help] of [
      ['prompt_tokens_total', 'prompt', 'Number of prefill tokens processed.'],
      ['generation_tokens_total', 'gen', 'Number of generation tokens processed.'],
      ['num_requests_total', 'requests', 'Number of requests processed.'],
    ] as const) {
      family(name, 'counter', help);
      for (const s of ['false', 'true'] as const) out.push(`sglang:${name}{is_streaming="${s}",model_name="${M}"} ${pyFloat(this.tokens[s][key])}`);
    }
    hist(
      'time_to_first_token_seconds',
      'Histogram of time to first token in seconds.',
      (['false', 'true'] as const).map((s) => [`is_streaming="${s}",model_name="${M}"`, this.ttft[s]]),
    );
    hist('inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', [[`model_name="${M}"`, this.itl]]);
    hist(
      'e2e_request_latency_seconds',
      'Histogram of End-to-end request latency in seconds',
      (['false', 'true'] as const).map((s) => [`is_streaming="${s}",model_name="${M}"`, this.e2e[s]]),
    );
    return `${out.join('\n')}\n`;
  }
}
