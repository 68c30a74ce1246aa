// HTTPS edge of the injection webhook: POST /mutate takes an AdmissionReview and answers a
// JSONPatch; GET /healthz. The serving certificate is reloaded when its files change (Kubernetes
// updates mounted Secrets in place).

import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.js';
import { review, type InjectionConfig } from './mutate.js';

export interface WebhookOptions {
  listen: string;
  certFile: string;
  keyFile: string;
  config: InjectionConfig;
  log: Logger;
  /** How often the certificate files are checked for changes. */
  reloadIntervalMs?: number;
}

const MAX_BODY = 4 * 1024 * 1024;

export interface Webhook {
  port: number;
  close(): Promise<void>;
}

export async function startWebhook(opts: WebhookOptions): Promise<Webhook> {
  const { log } = opts;
  const tls = () => ({ cert: readFileSync(opts.certFile), key: readFileSync(opts.keyFile) });
  const server = https.createServer(tls(), (req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') return void res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
    if (req.method !== 'POST' || !req.url?.startsWith('/mutate')) return void res.writeHead(404).end();
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      let body: unknown = null;
      try {
        body = size <= MAX_BODY ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : null;
      } catch {
        body = null;
      }
      const { response, result } = review(body, opts.config);
      const pod = (body as { request?: { namespace?: string; object?: { metadata?: { name?: string; generateName?: string } } } } | null)?.request;
      log.info({ component: 'webhook', uid: response.response.uid, namespace: pod?.namespace, pod: pod?.object?.metadata?.name ?? pod?.object?.metadata?.generateName,
        injected: result.skipped === undefined, skipped: result.skipped, warnings: result.warnings.length ? result.warnings : undefined }, 'admission review');
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(response));
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
    close: () => new Promise<void>((r) => {
      unwatchFile(opts.certFile);
      unwatchFile(opts.keyFile);
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
