// HTTPS edge of the injection webhook: POST /mutate takes an AdmissionReview and answers a
// JSONPatch; GET /healthz. The serving certificate is reloaded when its files change (Kubernetes
// updates mounted Secrets in place).

import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.js';
import { safeReview, type InjectionConfig } from './mutate.js';

export interface WebhookOptions {
  listen: string;
  certFile: string;
  keyFile: string;
  config: InjectionConfig;
  log: Logger;
  /** How often the certificate files are checked for changes. */
  reloadIntervalMs?: number;
}

/**
 * Bounds the webhook's memory: an AdmissionReview carries one pod (the API server's own request
 * limit is 3 MiB), and at most MAX_IN_FLIGHT are read and parsed at once; the next ones wait in
 * a short queue, and past it get 429 (the API server then applies failurePolicy: Ignore).
 */
export const MAX_REVIEW_BYTES = 3 * 1024 * 1024;
export const MAX_IN_FLIGHT = 2;
export const MAX_QUEUED = 32;

export interface Webhook {
  port: number;
  close(): Promise<void>;
}

export async function startWebhook(opts: WebhookOptions): Promise<Webhook> {
  const { log } = opts;
  const tls = () => ({ cert: readFileSync(opts.certFile), key: readFileSync(opts.keyFile) });
  let inFlight = 0;
  const queue: Array<() => void> = [];
  const release = () => {
    inFlight--;
    queue.shift()?.();
  };
  const handle = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (status: number, body: string, type = 'application/json') => {
      if (done) return;
      done = true;
      release();
      res.writeHead(status, { 'Content-Type': type }).end(body);
    };
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REVIEW_BYTES) {
        finish(413, 'AdmissionReview too large\n', 'text/plain');
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => finish(400, 'bad request\n', 'text/plain'));
    // A client gone before the end of its body must not hold its slot.
    req.on('close', () => {
      if (!done && !req.complete) {
        done = true;
        release();
      }
    });
    req.on('end', () => {
      if (done) return;
      let body: unknown = null;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        body = null;
      }
      chunks.length = 0;
      const { response, result, error } = safeReview(body, opts.config);
      if (error) log.error({ component: 'webhook', err: error }, 'review failed; admitted without the sidecar');
      const r = (body as { request?: { namespace?: unknown; object?: { metadata?: { name?: unknown; generateName?: unknown } } } } | null)?.request;
      const str = (v: unknown) => (typeof v === 'string' ? v.slice(0, 253) : undefined);
      log.info(
        {
          component: 'webhook',
          uid: response.response.uid.slice(0, 64),
          namespace: str(r?.namespace),
          pod: str(r?.object?.metadata?.name) ?? str(r?.object?.metadata?.generateName),
          injected: result.skipped === undefined,
          skipped: result.skipped,
          warnings: result.warnings.length ? result.warnings : undefined,
        },
        'admission review',
      );
      finish(200, JSON.stringify(response));
    });
  };
  const server = https.createServer(tls(), (req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') return void res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
    if (req.method !== 'POST' || !req.url?.startsWith('/mutate')) return void res.writeHead(404).end();
    const declared = Number(req.headers['content-length']);
    if (declared > MAX_REVIEW_BYTES) return void res.writeHead(413, { 'Content-Type': 'text/plain', Connection: 'close' }).end('AdmissionReview too large\n');
    if (inFlight < MAX_IN_FLIGHT) {
      inFlight++;
      return handle(req, res);
    }
    if (queue.length >= MAX_QUEUED) return void res.writeHead(429, { 'Content-Type': 'text/plain', 'Retry-After': '1' }).end('busy\n');
    req.pause();
    const start = () => {
      inFlight++;
      req.resume();
      handle(req, res);
    };
    queue.push(start);
    // A client that leaves while waiting gives its place back (it would otherwise take a slot
    // later and never release it).
    req.once('close', () => {
      const at = queue.indexOf(start);
      if (at >= 0) queue.splice(at, 1);
    });
  });
  const idx = opts.listen.lastIndexOf(':');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(opts.listen.slice(idx + 1)), opts.listen.slice(0, idx) || '0.0.0.0', () => resolve());
  });
  const reload = () => {
    try {
      server.setSecureContext(tls());
      log.info({ component: 'webhook', cert: opts.certFile }, 'serving certificate reloaded');
    } catch (err) {
      log.error({ component: 'webhook', err: (err as Error).message }, 'certificate reload failed; keeping the previous one');
    }
  };
  const interval = opts.reloadIntervalMs ?? 2000;
  watchFile(opts.certFile, { interval }, reload);
  watchFile(opts.keyFile, { interval }, reload);
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        unwatchFile(opts.certFile);
        unwatchFile(opts.keyFile);
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
