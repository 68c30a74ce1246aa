// The HTTP engine source, the thin edge of the pipeline, against real misbehaving servers on
// loopback: each way an engine can fail comes back as one outcome, never as a throw. What the
// agent does with those outcomes (health, readiness, logs, recovery) is tested in-process in
// test/agent.test.ts.

import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { validateConfig } from '../../agent/config/load.js';
import { createEngineSource } from '../../agent/sources/engine.js';
import type { ScrapeOutcome } from '../../agent/sources/source.js';
import { startServer, type TestServer } from '../helpers.js';

const GOOD = '# TYPE tgi_request_success counter\ntgi_request_success 7\n# TYPE tgi_queue_size gauge\ntgi_queue_size 1\n';

const behaviours: Record<string, { outcome: ScrapeOutcome; serve: (res: http.ServerResponse) => void }> = {
  timeout: {
    outcome: 'timeout',
    serve: () => {
      /* never answers */
    },
  },
  status5xx: { outcome: 'http_status', serve: (res) => res.writeHead(503).end('overloaded') },
  html: {
    outcome: 'not_prometheus',
    serve: (res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end('<!DOCTYPE html><html><body>login</body></html>'),
  },
  garbage: { outcome: 'parse', serve: (res) => res.writeHead(200).end('\u0000\u0001 not metrics at all\n{{{{\n!!!\n') },
  truncated: {
    outcome: 'error',
    serve: (res) => {
      res.writeHead(200, { 'Content-Length': '5000' });
      res.write('# TYPE tgi_request_success counter\ntgi_request_success 5\ntgi_que');
      setTimeout(() => res.socket?.destroy(), 20);
    },
  },
  oversized: { outcome: 'body_too_large', serve: (res) => res.writeHead(200).end('x_total 1\n'.repeat(20_000)) },
  slowloris: {
    outcome: 'timeout',
    serve: (res) => {
      res.writeHead(200);
      const t = setInterval(() => {
        if (res.destroyed) clearInterval(t);
        else res.write('#');
      }, 50);
    },
  },
};

function sourceFor(url: string, extra: Record<string, unknown> = {}) {
  const [cfg] = validateConfig({
    listen: '127.0.0.1:0',
    upstreams: [{ url, flavor: 'tgi', model: 'm', timeout: '400ms', interval: '1s', ...extra }],
  }).upstreams;
  assert.ok(cfg);
  return createEngineSource(cfg);
}

describe('HTTP engine source against misbehaving engines', () => {
  const servers = new Map<string, TestServer>();
  let healthy = false;
  before(async () => {
    for (const [name, b] of Object.entries(behaviours))
      servers.set(
        name,
        await startServer((_req, res) => {
          if (healthy) res.writeHead(200).end(GOOD);
          else b.serve(res);
        }),
      );
  });
  after(async () => {
    for (const s of servers.values()) {
      s.server.closeAllConnections();
      await s.close();
    }
  });

  for (const [name, { outcome }] of Object.entries(behaviours)) {
    it(`${name}: outcome ${outcome}, with a detail and no families`, async () => {
      const server = servers.get(name);
      assert.ok(server);
      const source = sourceFor(`${server.url}/metrics`, name === 'oversized' ? { maxBodyBytes: 100_000 } : {});
      const t0 = performance.now();
      const r = await source.scrape(new AbortController().signal);
      source.close?.();
      assert.equal(r.outcome, outcome, `${name}: ${r.detail}`);
      assert.ok(r.detail, 'a failure says why');
      assert.deepEqual(r.families, []);
      if (outcome === 'timeout') assert.ok(performance.now() - t0 < 2000, 'cut at the deadline, not held by the body');
      if (name === 'garbage') assert.ok(r.parseErrors >= 3, `${r.parseErrors} rejected lines`);
    });
  }

  it('a closed port is refused', async () => {
    const s = await startServer(() => {});
    await s.close();
    const r = await sourceFor(`${s.url}/metrics`).scrape(new AbortController().signal);
    assert.equal(r.outcome, 'refused');
  });

  it('the same servers, once they answer properly, scrape ok (no state kept from the failures)', async () => {
    healthy = true;
    for (const [name, server] of servers) {
      const source = sourceFor(`${server.url}/metrics`);
      const r = await source.scrape(new AbortController().signal);
      source.close?.();
      assert.equal(r.outcome, 'ok', name);
      assert.deepEqual(
        r.families.map((f) => f.name),
        ['tgi_request_success', 'tgi_queue_size'],
      );
    }
  });
});
