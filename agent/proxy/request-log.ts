// JSON request logs: one line per sampled request, in the schema of
// config/request-log.schema.json. No prompt, completion, key or header is ever a field; the
// prompt appears only as a keyed hash, and the one free-text field (error) is PII-scrubbed.

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import type { GpuSummary } from '../export/summary.js';

export interface RequestLogConfig {
  sampleSuccess: number;
  sampleError: number;
  path?: string | undefined;
  maxSize: string;
  maxFiles: number;
  hashSecretFile?: string | undefined;
}

export interface RequestLogLine {
  event: 'inference';
  status: 'success' | 'error';
  timestamp: string;
  request_id: string;
  trace_id?: string;
  tenant: string;
  model: string;
  route: string;
  code: number | null;
  stream: boolean;
  latency_ms: number;
  ttft_ms: number | null;
  tpot_ms: number | null;
  queue_ms?: number;
  prompt_tokens: number | null;
  tokens_generated: number | null;
  tokens_per_second: number | null;
  max_new_tokens: number | null;
  temperature: number | null;
  slo_class?: string;
  prompt_hash?: string;
  gpu: { source: string; devices: GpuSummary['devices'] } | 'nvml_unavailable';
  error: string | null;
  stream_violations?: string[];
}

// Scrubbers for free text, most specific first. Each is linear (no nested quantifiers).
const PII: ReadonlyArray<[RegExp, string]> = [
  [/[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}/g, '[email]'],
  [/\b\d{3}-\d{2}-\d{4}\b/g, '[ssn]'],
  [/\b(?:\d[ -]?){12,18}\d\b/g, '[card]'],
  [/\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b/g, '[ip]'],
  // IPv6: eight groups, or any form with a `::` (bounded repetitions only).
  [/(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{0,4}::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{0,4}/g, '[ip]'],
  [/(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}\b/g, '[phone]'],
  [/\b(?:sk|pk|rk|api|key|tok)[-_][A-Za-z0-9_-]{8,}\b/gi, '[secret]'],
  [/\bBearer\s+\S+/gi, 'Bearer [secret]'],
];

/** Free text with emails, SSNs, card numbers, IP addresses, phone numbers and key-like tokens replaced. */
export function scrubPii(text: string): string {
  let out = text.slice(0, 512);
  for (const [re, repl] of PII) out = out.replace(re, repl);
  return out;
}

export function promptHash(secret: Buffer, material: string): string {
  return `hmac-sha256:${createHmac('sha256', secret).update(material, 'utf8').digest('hex')}`;
}

/** The log's `gpu` field: the latest device snapshot, or the string nvml_unavailable. */
export function gpuField(gpu: GpuSummary): RequestLogLine['gpu'] {
  return gpu.devices.length ? { source: gpu.source, devices: gpu.devices } : 'nvml_unavailable';
}

export class RequestLog {
  readonly counts = { written: 0, sampled_out: 0 };
  private readonly logger: Logger;
  private readonly secret: Buffer | undefined;
  /** The file sink's worker thread (pino-roll), ended on close. */
  private readonly transport: ReturnType<typeof pino.transport> | undefined;

  constructor(
    private readonly cfg: RequestLogConfig,
    private readonly random: () => number = Math.random,
    destination?: NodeJS.WritableStream,
  ) {
    // The secret is read once at start: a missing file is a configuration error (thrown here).
    try {
      this.secret = cfg.hashSecretFile ? readFileSync(cfg.hashSecretFile) : undefined;
    } catch (err) {
      throw new Error(`requestLog.hashSecretFile: cannot read ${cfg.hashSecretFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (this.secret && this.secret.length < 16) throw new Error(`requestLog.hashSecretFile: ${cfg.hashSecretFile} holds fewer than 16 bytes`);
    const options = { base: null, timestamp: false, messageKey: 'message', formatters: { level: (label: string) => ({ level: label }) } };
    this.transport =
      destination || !cfg.path
        ? undefined
        : pino.transport({ target: 'pino-roll', options: { file: cfg.path, size: cfg.maxSize, limit: { count: cfg.maxFiles }, mkdir: true } });
    this.logger = pino(options, destination ?? this.transport ?? pino.destination({ fd: 1, sync: false }));
  }

  /** Whether a request with this outcome is logged (errors and successes sampled apart). */
  sampled(error: boolean): boolean {
    const rate = error ? this.cfg.sampleError : this.cfg.sampleSuccess;
    const yes = rate >= 1 || (rate > 0 && this.random() < rate);
    if (yes) this.counts.written++;
    else this.counts.sampled_out++;
    return yes;
  }

  /** Whether prompts are hashed at all (requestLog.hashSecretFile is set). */
  get hashesPrompts(): boolean {
    return this.secret !== undefined;
  }

  hash(material: string | undefined): string | undefined {
    return this.secret && material !== undefined ? promptHash(this.secret, material) : undefined;
  }

  write(line: RequestLogLine): void {
    const out = line.error ? { ...line, error: scrubPii(line.error) } : line;
    if (line.status === 'error') this.logger.warn(out);
    else this.logger.info(out);
  }

  /** Writes out what is buffered and ends the file sink's worker. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.logger.flush(() => resolve()));
    const t = this.transport;
    if (t)
      await new Promise<void>((resolve) => {
        t.once('close', () => resolve());
        t.end();
        setTimeout(resolve, 1000).unref();
      });
  }
}
