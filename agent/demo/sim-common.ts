// Shared pieces of the simulated engines: a seeded RNG, cumulative histograms and an HTTP server.

import http from 'node:http';

/** Deterministic RNG (mulberry32) so demo runs and tests see the same traffic shape. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function poisson(mean: number, random: () => number): number {
  if (mean > 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian(random)));
  const l = Math.exp(-mean);
  let k = 0,
    p = 1;
  do {
    k++;
    p *= random();
  } while (p > l);
  return k - 1;
}

export function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

export function logNormal(median: number, sigma: number, random: () => number): number {
  return median * Math.exp(sigma * gaussian(random));
}

export class Hist {
  readonly counts: number[];
  count = 0;
  sum = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = bounds.map(() => 0);
  }
  observe(v: number): void {
    this.bounds.forEach((bound, i) => {
      if (v <= bound) this.counts[i] = (this.counts[i] ?? 0) + 1;
    });
    this.count++;
    this.sum += v;
  }
}

/** Python's repr() of a float, as prometheus_client prints values ("1.0", "1e-05"). */
export function pyFloat(v: number): string {
  if (v === Infinity) return '+Inf';
  if (Number.isInteger(v) && Math.abs(v) < 1e16) return `${v}.0`;
  const abs = Math.abs(v);
  if (abs !== 0 && (abs < 1e-4 || abs >= 1e16)) {
    return v.toExponential().replace(/e([+-])(\d)$/, 'e$10$2');
  }
  return String(v);
}

export interface SimServer {
  url: string;
  close(): Promise<void>;
}

export function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void, port = 0): Promise<SimServer> {
  const server = http.createServer(handler);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const addr = server.address() as { port: number };
      resolve({
        url: `http://127.0.0.1:${addr.port}`,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}
