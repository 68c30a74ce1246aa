// A simulated llama.cpp llama-server: no labels, the two mistyped families declared as counters,
// and the throughput gauges that each /metrics call resets.

import { logNormal, poisson, pyFloat, rng } from './sim-common.js';

export class LlamacppSim {
  private readonly random: () => number;
  private last: number;
  private readonly c = { prompt: 0, promptSeconds: 0, predicted: 0, predictedSeconds: 0, decodes: 0, maxTokens: 0 };
  private bucket = { prompt: 0, promptSeconds: 0, predicted: 0, predictedSeconds: 0 };
  private processing = 0;
  private deferred = 0;

  constructor(
    private readonly opts: { rate: number; seed: number; slots: number },
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
      const prompt = Math.max(1, Math.round(logNormal(300, 0.8, this.random)));
      const gen = Math.max(1, Math.round(logNormal(120, 0.5, this.random)));
      const promptSeconds = prompt / 900;
      const genSeconds = gen / 35;
      for (const t of [this.c, this.bucket]) {
        t.prompt += prompt;
        t.promptSeconds += promptSeconds;
        t.predicted += gen;
        t.predictedSeconds += genSeconds;
      }
      this.c.decodes += gen + 1;
      this.c.maxTokens = Math.max(this.c.maxTokens, prompt + gen);
    }
    this.processing = Math.min(this.opts.slots, poisson(this.opts.rate * 2, this.random));
    this.deferred = this.processing === this.opts.slots ? poisson(1, this.random) : 0;
  }

  /** Renders the metrics page and, as llama-server does, resets the throughput bucket. */
  render(): string {
    const b = this.bucket;
    const rows: Array<[string, string, string, number]> = [
      ['prompt_tokens_total', 'counter', 'Number of prompt tokens processed.', this.c.prompt],
      ['prompt_seconds_total', 'counter', 'Prompt process time', Math.round(this.c.promptSeconds * 1000) / 1000],
      ['tokens_predicted_total', 'counter', 'Number of generation tokens processed.', this.c.predicted],
      ['tokens_predicted_seconds_total', 'counter', 'Predict process time', Math.round(this.c.predictedSeconds * 1000) / 1000],
      ['n_decode_total', 'counter', 'Total number of llama_decode() calls', this.c.decodes],
      ['n_tokens_max', 'counter', 'Largest observed n_tokens.', this.c.maxTokens],
      [
        'n_busy_slots_per_decode',
        'counter',
        'Average number of busy slots per llama_decode() call',
        1 + Math.round((this.processing * 100) / this.opts.slots) / 100,
      ],
      ['prompt_tokens_seconds', 'gauge', 'Average prompt throughput in tokens/s.', b.promptSeconds ? Math.round(b.prompt / b.promptSeconds) : 0],
      [
        'predicted_tokens_seconds',
        'gauge',
        'Average generation throughput in tokens/s.',
        b.predictedSeconds ? Math.round(b.predicted / b.predictedSeconds) : 0,
      ],
      ['requests_processing', 'gauge', 'Number of requests processing.', this.processing],
      ['requests_deferred', 'gauge', 'Number of requests deferred.', this.deferred],
    ];
    this.bucket = { prompt: 0, promptSeconds: 0, predicted: 0, predictedSeconds: 0 };
    return rows.map(([n, t, h, v]) => `# HELP llamacpp:${n} ${h}\n# TYPE llamacpp:${n} ${t}\nllamacpp:${n} ${pyFloat(v)}\n`).join('');
  }
}
