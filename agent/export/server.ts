// HTTP edge: /metrics (text 0.0.4, OpenMetrics, JSON summary; gzip), /healthz, /readyz.
// Holds no logic beyond content negotiation; bodies come from the exposition cache.

import type { Server } from 'node:http';
import express from 'express';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
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
  /** The status page's data; absent when the page is off (ui.enabled: false). */
  status?: () => unknown;
  /** Pushes each new status document (serialised) to a listener; returns the unsubscribe. */
  subscribeStatus?: (listener: (json: string) => void) => () => void;
  /** Told when a status stream is refused because MAX_STATUS_STREAMS are open. */
  onStreamRefused?: () => void;
  /**
   * Resolves once every proxied request whose answer is complete is recorded (the native data
   * path records a moment after the answer): a scrape then counts every request answered before it.
   */
  settled?: () => Promise<void>;
}

/** Open status streams at most (each is a socket and a listener; the page needs one per tab). */
export const MAX_STATUS_STREAMS = 16;

const UI_DIR = fileURLToPath(new URL('../../../ui/', import.meta.url));
const requireFromHere = createRequire(import.meta.url);

/** The page's files, read once: no CDN, no build-time download (uPlot comes from node_modules). */
function uiAssets(): Record<string, { type: string; body: Buffer }> {
  const uplot = dirname(requireFromHere.resolve('uplot/dist/uPlot.iife.min.js'));
  return {
    '/': { type: 'text/html; charset=utf-8', body: readFileSync(`${UI_DIR}index.html`) },
    '/ui/app.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(`${UI_DIR}app.js`) },
    '/ui/app.css': { type: 'text/css; charset=utf-8', body: readFileSync(`${UI_DIR}app.css`) },
    '/ui/uplot.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(`${uplot}/uPlot.iife.min.js`) },
    '/ui/uplot.css': { type: 'text/css; charset=utf-8', body: readFileSync(`${uplot}/uPlot.min.css`) },
  };
}

/** Only the agent's own files and its own API: no inline script, nothing from elsewhere. */
export const UI_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
    await deps.settled?.();
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
  if (deps.status) {
    const status = deps.status;
    let assets: ReturnType<typeof uiAssets>;
    try {
      assets = uiAssets();
    } catch (err) {
      // An install without the page's files still serves /metrics; the page says what is missing.
      const reason = `status page files missing (${(err as NodeJS.ErrnoException).code ?? 'error'})\n`;
      assets = {};
      app.get('/', (_req, res) => {
        res.status(503).type('text/plain').send(reason);
      });
    }
    for (const [path, asset] of Object.entries(assets)) {
      app.get(path, (_req, res) => {
        res.setHeader('Content-Security-Policy', UI_CSP);
        res.setHeader('X-Content-Type-Options', 'nosniff');
        res.setHeader('Cache-Control', 'no-cache');
        res.type(asset.type).send(asset.body);
      });
    }
    // Browsers ask for it unprompted; no icon, no 404 in the console.
    app.get('/favicon.ico', (_req, res) => {
      res.status(204).end();
    });
    let streams = 0;
    const subscribe = deps.subscribeStatus;
    if (subscribe) {
      // Server-sent events: the document again after every collection cycle.
      app.get('/api/v1/status/stream', (req, res) => {
        if (streams >= MAX_STATUS_STREAMS) {
          deps.onStreamRefused?.();
          res.status(503).type('text/plain').send(`at most ${MAX_STATUS_STREAMS} status streams; poll /api/v1/status instead\n`);
          return;
        }
        streams++;
        res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'Content-Security-Policy': UI_CSP });
        res.write(`data: ${JSON.stringify(status())}\n\n`);
        const unsubscribe = subscribe((json) => res.write(`data: ${json}\n\n`));
        req.on('close', () => {
          streams--;
          unsubscribe();
        });
      });
    }
    app.get('/api/v1/status', (_req, res) => {
      res.setHeader('Cache-Control', 'no-store');
      res.setHeader('Content-Security-Policy', UI_CSP);
      res.json(status());
    });
  }
  app.get('/healthz', (_req, res) => {
    res.type('text/plain').send('ok\n');
  });
  app.get('/readyz', (_req, res) => {
    const r = deps.readiness();
    res.status(r.ready ? 200 : 503).json(r);
  });
  app.use((_req, res) => {
    res
      .status(404)
      .type('text/plain')
      .send(`not found: try ${deps.status ? '/ (status page), ' : ''}/metrics, /healthz or /readyz\n`);
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
