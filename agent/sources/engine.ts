// Scrapes an inference engine's Prometheus /metrics over HTTP(S): bounded body, total deadline
// (a slow-loris body cannot hold a scrape past its timeout), optional auth and TLS from files.

import { setImmediate as nextTurn } from 'node:timers/promises';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { detectFormat, ParserState, type InputFormat, type ParseResult } from '../parse/exposition.js';
import type { UpstreamConfig } from '../config/schema.js';
import { boundedGet, type FetchError } from '../net/http-client.js';
import type { ScrapeResult, Source } from './source.js';

/** Parse this many characters between yields, so one large body never blocks the loop for long. */
const PARSE_CHUNK_CHARS = 192 * 1024;

/** Whether a URL's host is the loopback interface, by address (a name like 127.evil.example is not). */
export function isLoopback(url: string): boolean {
  let host = new URL(url).hostname;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === 'localhost') return true;
  const family = isIP(host);
  if (family === 4) return host.split('.')[0] === '127';
  // IPv4-mapped loopback, as the URL parser writes it (::ffff:7f00:1) or as typed (::ffff:127.0.0.1).
  if (family === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1' || /^::ffff:(7f[0-9a-f]{2}:|127\.)/i.test(host);
  return false;
}

/**
 * Parse a body in newline-aligned chunks, yielding to the event loop between them, and give up
 * when `signal` aborts (the scrape deadline), so no body holds the loop or the scrape longer.
 */
export async function parseChunked(text: string, format: InputFormat = 'text', signal?: AbortSignal): Promise<ParserState | undefined> {
  const state = new ParserState(format);
  let pos = 0;
  while (pos < text.length) {
    let end = Math.min(text.length, pos + PARSE_CHUNK_CHARS);
    if (end < text.length) {
      const nl = text.indexOf('\n', end);
      end = nl < 0 ? text.length : nl + 1;
    }
    state.feed(text, pos, end);
    pos = end;
    if (pos < text.length) {
      await nextTurn();
      if (signal?.aborted) return undefined;
    }
  }
  return state;
}

/** A parsed body as a scrape result: mostly rejected lines make it a failed scrape (`parse`). */
export function resultOfParse(parsed: ParseResult, bytes: number): ScrapeResult {
  return {
    outcome: parsed.errors > 0 && parsed.errors >= parsed.sampleCount ? 'parse' : 'ok',
    families: parsed.families,
    bytes,
    parseErrors: parsed.errors,
    rejected: parsed.rejected,
    detail: parsed.firstError ? `rejected ${parsed.errors} line(s), first at ${parsed.firstError}` : undefined,
  };
}

function fail(outcome: ScrapeResult['outcome'], detail: string, bytes = 0): ScrapeResult {
  return { outcome, families: [], bytes, parseErrors: 0, rejected: {}, detail };
}

/**
 * Text 0.0.4 is asked for: prometheus_client answers OpenMetrics whenever the word appears in
 * Accept at all. A body that comes back as OpenMetrics anyway is detected and parsed as such.
 */
const ACCEPT = 'text/plain;version=0.0.4;q=1,*/*;q=0.1';

export function createEngineSource(cfg: UpstreamConfig): Source {
  const loopback = isLoopback(cfg.url);
  const tls = cfg.tls;
  const httpsAgent = tls
    ? new https.Agent({
        keepAlive: true,
        ca: tls.caFile ? readFileSync(tls.caFile) : undefined,
        cert: tls.certFile ? readFileSync(tls.certFile) : undefined,
        key: tls.keyFile ? readFileSync(tls.keyFile) : undefined,
        rejectUnauthorized: !tls.insecureSkipVerify,
      })
    : new https.Agent({ keepAlive: true });
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });

  return {
    name: cfg.name,
    close(): void {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
    async scrape(signal: AbortSignal): Promise<ScrapeResult> {
      const headers: Record<string, string> = {
        Accept: ACCEPT,
        // Measured: vLLM spends 1.5-38 ms of its own CPU gzipping each scrape; on loopback the
        // bytes are free, the engine's CPU is not.
        'Accept-Encoding': loopback ? 'identity' : 'gzip',
      };
      try {
        if (cfg.auth?.bearerTokenFile) headers.Authorization = `Bearer ${readFileSync(cfg.auth.bearerTokenFile, 'utf8').trim()}`;
        else if (cfg.auth?.basic) {
          const pw = readFileSync(cfg.auth.basic.passwordFile, 'utf8').trim();
          headers.Authorization = `Basic ${Buffer.from(`${cfg.auth.basic.username}:${pw}`).toString('base64')}`;
        }
      } catch (err) {
        return fail('error', `cannot read credentials (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
      const deadline = AbortSignal.timeout(cfg.timeoutMs);
      let body: Buffer;
      let contentType: string;
      try {
        const res = await boundedGet(cfg.url, {
          signal: AbortSignal.any([signal, deadline]),
          timeoutMs: cfg.timeoutMs,
          maxBytes: cfg.maxBodyBytes,
          headers,
          httpAgent,
          httpsAgent,
          decompress: !loopback,
        });
        body = res.body;
        contentType = res.contentType;
        if (res.status < 200 || res.status >= 300) return fail('http_status', `HTTP ${res.status}`, body.length);
      } catch (err) {
        const e = err as FetchError;
        if (deadline.aborted || e.kind === 'timeout') return fail('timeout', `no complete answer within ${cfg.timeoutMs} ms`);
        if (e.kind === 'stopped') return fail('error', 'stopped');
        if (e.kind === 'refused' || e.kind === 'body_too_large') return fail(e.kind, e.message);
        return fail('error', e.message);
      }
      const text = body.toString('utf8');
      const head = text.trimStart().slice(0, 64).toLowerCase();
      if (contentType.includes('text/html') || head.startsWith('<!doctype') || head.startsWith('<html') || head.startsWith('{')) {
        return fail('not_prometheus', `content-type ${contentType.slice(0, 64) || 'unknown'}`, body.length);
      }
      const parsed = await parseChunked(text, detectFormat(contentType, text), AbortSignal.any([signal, deadline]));
      if (!parsed) return fail('timeout', `parse not finished within ${cfg.timeoutMs} ms`, body.length);
      return resultOfParse(parsed.finish(), body.length);
    },
  };
}
