// The models the engine serves, from its /v1/models (TGI: /info), refreshed in the background.
// A request's `model` field becomes a label value only when it names one of them, so a client
// cannot mint label values.

import http from 'node:http';
import https from 'node:https';

const REFRESH_MS = 30_000;
/** A name not in the list triggers a refresh at most this often (a new model loaded). */
const MISS_REFRESH_MS = 5_000;
const MAX_MODELS = 256;
const MAX_BODY = 1024 * 1024;

function getJson(url: string, timeoutMs: number, onAnswer: () => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { timeout: timeoutMs, headers: { accept: 'application/json' } }, (res) => {
      onAnswer();
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`status ${res.statusCode}`));
        return;
      }
      const parts: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n > MAX_BODY) req.destroy(new Error('body too large'));
        else parts.push(c);
      });
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(parts).toString('utf8')));
        } catch (err) {
          reject(err);
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Served model ids from a /v1/models or TGI /info document. */
export function servedModels(doc: unknown): string[] {
  if (!doc || typeof doc !== 'object') return [];
  const d = doc as Record<string, unknown>;
  if (Array.isArray(d.data))
    return d.data
      .map((m) => (m && typeof m === 'object' ? (m as Record<string, unknown>).id : undefined))
      .filter((id): id is string => typeof id === 'string' && id.length > 0 && id.length <= 256)
      .slice(0, MAX_MODELS);
  if (typeof d.model_id === 'string' && d.model_id) return [d.model_id];
  return [];
}

export class ServedModels {
  private models: string[] = [];
  private fetchedAt = -Infinity;
  /** When the engine last answered any HTTP response (readiness: the engine is up). */
  answeredAt: number | undefined;
  /** When a connection to the engine last failed (refused, reset, timed out). */
  private failedAt: number | undefined;
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The first fetch, until it has settled: before it, a requested name cannot be judged. */
  private first: Promise<void> | undefined;

  constructor(
    private readonly target: string,
    /** The model label when the body names none the engine serves (the scrape's model, config's, or unknown). */
    private readonly fallback: () => string,
    private readonly now: () => number = Date.now,
  ) {}

  start(): Promise<void> {
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.timer.unref();
    const first = this.refresh().finally(() => {
      this.first = undefined;
    });
    this.first = first;
    return first;
  }

  /**
   * While the first fetch is out (the proxy listens before it answers, at most two 2 s timeouts),
   * the promise of it: a request that named a model is labelled once the list is known.
   */
  firstFetch(): Promise<void> | undefined {
    return this.first;
  }

  /** Whether the engine serves a model of this name (as its list last said). */
  serves(name: string): boolean {
    return this.models.includes(name);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  refresh(): Promise<void> {
    this.inFlight ??= (async () => {
      const base = this.target.replace(/\/+$/, '');
      try {
        const answered = () => {
          this.answeredAt = this.now();
        };
        const failed = (err: Error) => {
          if (!/^status /.test(err.message)) this.failedAt = this.now();
          return undefined;
        };
        let list = servedModels(await getJson(`${base}/v1/models`, 2000, answered).catch(failed));
        if (!list.length) list = servedModels(await getJson(`${base}/info`, 2000, answered).catch(failed));
        if (list.length) this.models = list;
      } finally {
        this.fetchedAt = this.now();
        this.inFlight = undefined;
      }
    })();
    return this.inFlight;
  }

  /** Whether the engine answered HTTP lately (a stale answer starts a refresh for the next check). */
  engineAnswering(): boolean {
    const age = this.answeredAt === undefined ? Infinity : this.now() - this.answeredAt;
    const failedSince = this.failedAt !== undefined && (this.answeredAt === undefined || this.failedAt >= this.answeredAt);
    if (age > MISS_REFRESH_MS || failedSince) void this.refresh();
    return age <= REFRESH_MS + MISS_REFRESH_MS && !failedSince;
  }

  /** The proxy saw the engine answer a request. */
  noteAnswer(): void {
    this.answeredAt = this.now();
  }

  /** The proxy could not reach the engine. */
  noteFailure(): void {
    this.failedAt = this.now();
  }

  list(): readonly string[] {
    return this.models;
  }

  /** The label for a request's model field. */
  resolve(requested: string | undefined): string {
    if (requested !== undefined && this.serves(requested)) return requested;
    if (requested !== undefined && this.now() - this.fetchedAt > MISS_REFRESH_MS) void this.refresh();
    return this.models[0] ?? this.fallback();
  }
}
