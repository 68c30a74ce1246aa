// HTTP edge: /metrics (text 0.0.4, OpenMetrics, JSON summary; gzip), /healthz, /readyz.
// Holds no logic beyond content negotiation; bodies come from the exposition cache.

import type { Server } from 'node:http';
import express from 'express';
import type { ExpositionCache } from './cache.js';

export const TEXT_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

export interface Readiness {
  ready: boolean;
  upstreams: Record<string, { ready: boolean; reason?: string }>;
}

export interface ServerDeps {
  cache: ExpositionCache;
  summary(): unknown;
  readiness(): Readiness;
}

/** Which representation an Accept header asks for, by q-value then order. */
export function negotiate(accept: string | undefined, query: unknown): 'json' | 'openmetrics' | 'text' {
  if (query === 'json') return 'json';
  if (query === 'openmetrics') return 'openmetrics';
  if (!accept) return 'text';
  let best: { kind: 'json' | 'openmetrics' | 'text'; q: number } = { kind: 'text', q: -1 };
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().split(';');
    const qp = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const q = qp ? Number(qp.slice(2)) : 1;
    const t = (type ?? '').trim().toLowerCase();
    const kind =
      t === 'application/json' ? 'json' : t === 'application/openmetrics-text' ? 'openmetrics' : t === 'text/plain' || t === '*/*' ? 'text' : undefined;
    if (kind && q > best.q) best = { kind, q };
  }
  return best.kind;
}

export function createApp(deps: ServerDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.get('/metrics', async (req, res) => {
    const kind = negotiate(req.headers.accept, req.query.format);
    if (kind === 'json') {
      res.setHeader('Content-Type', 'application/json; charset=utf-8');
      res.send(JSON.stringify(deps.summary()));
      return;
    }
    const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const body = await deps.cache.get(kind === 'openmetrics' ? 'openmetrics' : 'text', gzip);
    res.setHeader('Content-Type', kind === 'openmetrics' ? OPENMETRICS_CONTENT_TYPE : TEXT_CONTENT_TYPE);
    res.setHeader('Vary', 'Accept, Accept-Encoding');
    if (gzip) res.setHeader('Content-Encoding', 'gzip');
    res.end(body);
  });
  app.get('/healthz', (_req, res) => {
    res.type('text/plain').send('ok\n');
  });
  app.get('/readyz', (_req, res) => {
    const r = deps.readiness();
    res.status(r.ready ? 200 : 503).json(r);
  });
  app.use((_req, res) => {
    res.status(404).type('text/plain').send('not found: try /metrics, /healthz or /readyz\n');
  });
  return app;
}

export function listen(app: express.Express, hostPort: string): Promise<Server> {
  const idx = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, idx).replace(/^\[|\]$/g, '') || '0.0.0.0';
  const port = Number(hostPort.slice(idx + 1));
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host);
    server.once('listening', () => resolve(server));
    server.once('error', reject);
  });
}
