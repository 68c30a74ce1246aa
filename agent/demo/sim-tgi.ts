// A simulated Hugging Face TGI v3 router: no `_total` on counters, blank lines between families,
// no HELP on the undescribed families, `le` last, the 35 geometric duration buckets printed as
// Rust prints them, linear token buckets with their float artefacts. It can restart (its
// counters go back to zero), as a router restart does.

import { Hist, logNormal, poisson, rng } from './sim-common.js';

/** 0.0001 x 1.5^k, k = 1..35, exactly as the Rust exporter prints them (upstream-metrics.md §2). */
export const TGI_DURATION_LE = [
  '0.00015000000000000001',
  '0.00022500000000000002',
  '0.0003375',
  '0.00050625',
  '0.000759375',
  '0.0011390624999999999',
  '0.0017085937499999998',
  '0.0025628906249999996',
  '0.0038443359374999994',
  '0.00576650390625',
  '0.008649755859375',
  '0.0129746337890625',
  '0.01946195068359375',
  '0.029192926025390625',
  '0.043789389038085935',
  '0.0656840835571289',
  '0.09852612533569335',
  '0.14778918800354002',
  '0.22168378200531003',
  '0.33252567300796504',
  '0.49878850951194753',
  '0.7481827642679213',
  '1.122274146401882',
  '1.683411219602823',
  '2.5251168294042348',
  '3.787675244106352',
  '5.681512866159528',
  '8.52226929923929',
  '12.783403948858936',
  '19.175105923288406',
  '28.76265888493261',
  '43.143988327398915',
  '64.71598249109837',
  '97.07397373664756',
  '145.61096060497135',
];

function linear(max: number, n: number): string[] {
  return Array.from({ length: n }, (_, i) => String((max / n) * (i + 1)));
}

interface StrHist {
  le: string[];
  h: Hist;
}
function strHist(le: string[]): StrHist {
  return { le, h: new Hist(le.map(Number)) };
}

const FAILURES = ['validation', 'overloaded', 'generation'];

export interface TgiSimOptions {
  maxInputTokens: number;
  maxTotalTokens: number;
  rate: number;
  seed: number;
}

export class TgiSim {
  private readonly random: () => number;
  private last: number;
  private s!: ReturnType<TgiSim['fresh']>;
  restarts = 0;

  constructor(
    private readonly opts: TgiSimOptions,
    now = Date.now(),
  ) {
    this.random = rng(opts.seed);
    this.last = now;
    this.reset();
  }

  private fresh() {
    return {
      count: 0,
      success: 0,
      failure: Object.fromEntries(FAILURES.map((f) => [f, 0])) as Record<string, number>,
      concat: { backpressure: 0, wait_exceeded: 0, chunking: 0 } as Record<string, number>,
      batchCount: { prefill: 0, decode: 0 } as Record<string, number>,
      queueSize: 0,
      batchSize: 0,
      batchMaxTokens: 0,
      duration: strHist(TGI_DURATION_LE),
      validation: strHist(TGI_DURATION_LE),
      queue: strHist(TGI_DURATION_LE),
      inference: strHist(TGI_DURATION_LE),
      meanTpt: strHist(TGI_DURATION_LE),
      input: strHist(linear(this.opts.maxInputTokens, 100)),
      maxNew: strHist(linear(this.opts.maxTotalTokens, 100)),
      generated: strHist(linear(this.opts.maxTotalTokens, 100)),
      batchNext: strHist(Array.from({ length: 1024 }, (_, i) => String(i + 1))),
      batchInference: { prefill: strHist(TGI_DURATION_LE), decode: strHist(TGI_DURATION_LE) } as Record<string, StrHist>,
      skippedCount: 0,
    };
  }

  /** The router process restarted: every counter starts again from zero. */
  reset(): void {
    this.s = this.fresh();
  }

  advance(now = Date.now()): void {
    const dt = Math.max(0, (now - this.last) / 1000);
    this.last = now;
    const r = this.random;
    const s = this.s;
    const n = poisson(this.opts.rate * dt, r);
    let busy = 0;
    for (let i = 0; i < n; i++) {
      s.count++;
      const validation = logNormal(0.0008, 0.4, r);
      s.validation.h.observe(validation);
      if (r() < 0.03) {
        const kind = FAILURES[Math.floor(r() * FAILURES.length)] ?? 'generation';
        s.failure[kind] = (s.failure[kind] ?? 0) + 1;
        continue;
      }
      s.success++;
      const input = Math.min(this.opts.maxInputTokens, Math.max(1, Math.round(logNormal(300, 0.7, r))));
      const gen = Math.min(this.opts.maxTotalTokens - input, Math.max(1, Math.round(logNormal(120, 0.6, r))));
      const queue = r() * 0.03;
      const prefill = 0.02 + input / 8000;
      const tpt = logNormal(0.03, 0.2, r);
      const inference = prefill + gen * tpt;
      s.input.h.observe(input);
      s.maxNew.h.observe(Math.min(this.opts.maxTotalTokens, gen + 50));
      s.generated.h.observe(gen);
      s.queue.h.observe(queue);
      s.inference.h.observe(inference);
      s.meanTpt.h.observe(tpt);
      s.duration.h.observe(validation + queue + inference);
      s.batchInference.prefill!.h.observe(prefill);
      s.batchCount.prefill!++;
      for (let k = 0; k < Math.min(gen, 8); k++) {
        s.batchInference.decode!.h.observe(logNormal(tpt, 0.1, r));
        s.batchCount.decode!++;
      }
      s.batchNext.h.observe(1 + Math.floor(r() * 8));
      if (r() < 0.2) s.concat.backpressure!++;
      if (r() < 0.05) s.concat.chunking!++;
      s.skippedCount++;
      busy += inference;
    }
    s.batchSize = Math.round(dt > 0 ? busy / dt : 0);
    s.queueSize = r() < 0.15 ? 1 + Math.floor(r() * 3) : 0;
    s.batchMaxTokens = s.batchSize * 512;
  }

  render(): string {
    const s = this.s;
    const out: string[] = [];
    const fam = (name: string, type: string, help: string | undefined, lines: string[]) => {
      if (help) out.push(`# HELP ${name} ${help}\n`);
      out.push(`# TYPE ${name} ${type}\n`, ...lines, '\n');
    };
    const hist = (name: string, help: string | undefined, parts: Array<[string, StrHist]>) => {
      const lines: string[] = [];
      for (const [labels, { le, h }] of parts) {
        const pre = labels ? `${labels},` : '';
        le.forEach((b, i) => {
          lines.push(`${name}_bucket{${pre}le="${b}"} ${h.counts[i]}\n`);
        });
        lines.push(`${name}_bucket{${pre}le="+Inf"} ${h.count}\n`);
        const lb = labels ? `{${labels}}` : '';
        lines.push(`${name}_sum${lb} ${h.sum}\n`, `${name}_count${lb} ${h.count}\n`);
      }
      fam(name, 'histogram', help, lines);
    };
    fam('tgi_request_success', 'counter', 'Number of successful requests', [`tgi_request_success ${s.success}\n`]);
    fam(
      'tgi_batch_concat',
      'counter',
      undefined,
      Object.entries(s.concat).map(([k, v]) => `tgi_batch_concat{reason="${k}"} ${v}\n`),
    );
    fam('tgi_request_count', 'counter', 'Total number of requests', [`tgi_request_count ${s.count}\n`]);
    fam(
      'tgi_request_failure',
      'counter',
      undefined,
      Object.entries(s.failure).map(([k, v]) => `tgi_request_failure{err="${k}"} ${v}\n`),
    );
    fam(
      'tgi_batch_inference_success',
      'counter',
      'Number of successful inference calls per method (prefill or decode)',
      Object.entries(s.batchCount).map(([k, v]) => `tgi_batch_inference_success{method="${k}"} ${v}\n`),
    );
    fam(
      'tgi_batch_inference_count',
      'counter',
      'Inference calls per method (prefill or decode)',
      Object.entries(s.batchCount).map(([k, v]) => `tgi_batch_inference_count{method="${k}"} ${v}\n`),
    );
    fam('tgi_queue_size', 'gauge', 'Current queue size', [`tgi_queue_size ${s.queueSize}\n`]);
    fam('tgi_batch_current_max_tokens', 'gauge', 'Maximum tokens for the current batch', [`tgi_batch_current_max_tokens ${s.batchMaxTokens}\n`]);
    fam('tgi_batch_current_size', 'gauge', 'Current batch size', [`tgi_batch_current_size ${s.batchSize}\n`]);
    hist('tgi_request_input_length', 'Input token length per request', [['', s.input]]);
    hist('tgi_request_max_new_tokens', 'Maximum new tokens per request', [['', s.maxNew]]);
    hist('tgi_request_inference_duration', 'Request inference duration', [['', s.inference]]);
    const q = ['0', '0.5', '0.9', '0.95', '0.99', '0.999', '1'];
    fam('tgi_request_skipped_tokens', 'summary', 'Speculated tokens per request', [
      ...q.map((x) => `tgi_request_skipped_tokens{quantile="${x}"} 0\n`),
      'tgi_request_skipped_tokens_sum 0\n',
      `tgi_request_skipped_tokens_count ${s.skippedCount}\n`,
    ]);
    hist('tgi_request_duration', 'Request duration', [['', s.duration]]);
    hist('tgi_request_validation_duration', 'Request validation duration', [['', s.validation]]);
    hist('tgi_request_queue_duration', 'Request queue duration', [['', s.queue]]);
    hist('tgi_batch_inference_duration', 'Batch inference duration', [
      ['method="prefill"', s.batchInference.prefill!],
      ['method="decode"', s.batchInference.decode!],
    ]);
    hist('tgi_request_mean_time_per_token_duration', 'Mean time per token per request', [['', s.meanTpt]]);
    hist('tgi_request_generated_tokens', 'Generated tokens per request', [['', s.generated]]);
    hist('tgi_batch_next_size', 'Batch size of the next batch', [['', s.batchNext]]);
    return out.join('');
  }
}
