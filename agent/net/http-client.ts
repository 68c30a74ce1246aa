// The one outbound HTTP client configuration: every request infertel makes (scrapes, engine info
// endpoints, and later canaries) goes through boundedGet, so each has a body cap counted after
// decompression, one overall deadline (a slow drip cannot hold it), and follows no redirect.

import type http from 'node:http';
import type https from 'node:https';
import axios, { type AxiosError } from 'axios';

export interface RequestLimits {
  /** Whole-request deadline, connect to last byte. */
  timeoutMs: number;
  /** Largest body accepted, counted after decompression (a gzip bomb stops here). */
  maxBytes: number;
}

export interface BoundedGetOptions extends RequestLimits {
  signal?: AbortSignal;
  headers?: Record<string, string>;
  httpAgent?: http.Agent;
  httpsAgent?: https.Agent;
  /** Let the client gunzip (off on loopback, where asking for identity saves the engine's CPU). */
  decompress?: boolean;
}

export type FetchFailure = 'refused' | 'timeout' | 'body_too_large' | 'redirect' | 'stopped' | 'error';

export class FetchError extends Error {
  constructor(
    readonly kind: FetchFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface BoundedResponse {
  status: number;
  contentType: string;
  body: Buffer;
}

/** Limits for small JSON look-ups (`/info`, `/v1/models`, `/props`): they never need more. */
export const LOOKUP_LIMITS: RequestLimits = { timeoutMs: 2000, maxBytes: 1024 * 1024 };

/** Removes `user:password@` from URLs inside any text (logs, spans, readiness reasons). */
export function redactUrl(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]{0,20}:\/\/)[^/@\s]{1,256}@/gi, '$1');
}

/** GET with the limits above. Throws FetchError; a 3xx is an error (no redirect is followed). */
export async function boundedGet(url: string, opts: BoundedGetOptions): Promise<BoundedResponse> {
  const deadline = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
  try {
    const res = await axios.get<Buffer>(url, {
      signal,
      headers: opts.headers,
      responseType: 'arraybuffer',
      maxContentLength: opts.maxBytes,
      maxRedirects: 0,
      validateStatus: () => true,
      httpAgent: opts.httpAgent,
      httpsAgent: opts.httpsAgent,
      decompress: opts.decompress ?? true,
      proxy: false,
    });
    if (res.status >= 300 && res.status < 400) throw new FetchError('redirect', `HTTP ${res.status} redirect not followed`);
    const body = Buffer.isBuffer(res.data) ? res.data : Buffer.from(res.data);
    return { status: res.status, contentType: String(res.headers['content-type'] ?? ''), body };
  } catch (err) {
    if (err instanceof FetchError) throw err;
    if (deadline.aborted) throw new FetchError('timeout', `no complete answer within ${opts.timeoutMs} ms`);
    if (opts.signal?.aborted) throw new FetchError('stopped', 'stopped');
    const e = err as AxiosError;
    if (e.code === 'ECONNREFUSED') throw new FetchError('refused', redactUrl(e.message));
    if (/maxContentLength/.test(e.message)) throw new FetchError('body_too_large', `body over ${opts.maxBytes} bytes`);
    throw new FetchError('error', redactUrl(e.message || String(err)));
  }
}

/** GET a small JSON document from an engine's info endpoint; undefined unless it is a 200 JSON object. */
export async function lookupJson(url: string, signal: AbortSignal, limits: RequestLimits = LOOKUP_LIMITS): Promise<Record<string, unknown> | undefined> {
  const res = await boundedGet(url, { ...limits, signal, headers: { Accept: 'application/json' } });
  if (res.status !== 200) return undefined;
  try {
    const doc: unknown = JSON.parse(res.body.toString('utf8'));
    return doc && typeof doc === 'object' && !Array.isArray(doc) ? (doc as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
