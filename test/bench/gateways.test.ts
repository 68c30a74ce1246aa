// The proxy bench's reference gateways (`bench/gateways.ts`). Their rows stand for "what a production
// proxy adds here" only if each is set up as an operator sets it up for a streaming engine: every
// event passed on as it comes (no buffering, no waiting for more bytes), the request delivered
// whole, and engine connections kept alive and reused.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { findGateway, type Gateway, type GatewayName, startGateway } from '../../bench/gateways.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

for (const name of ['nginx', 'haproxy'] as GatewayName[]) {
  const found = findGateway(name);
  describe(`bench reference gateway: ${name}`, { skip: 'why' in found ? found.why : false }, () => {
    let engine: http.Server;
    let gateway: Gateway;
    const engineSockets = new Set<net.Socket>();
    let handle: (req: http.IncomingMessage, res: http.ServerResponse) => void = (_req, res) => res.end();

    before(async () => {
      engine = http.createServer((req, res) => handle(req, res));
      engine.on('connection', (s) => engineSockets.add(s));
      await new Promise<void>((r) => engine.listen(0, '127.0.0.1', r));
      gateway = await startGateway(name, (found as { path: string }).path, (engine.address() as net.AddressInfo).port);
    });

    after(() => {
      gateway?.stop();
      engine.closeAllConnections();
      engine.close();
    });

    it('passes each event on before the engine sends the next', async () => {
      // The engine sends event i+1 only once the client has event i, so a gateway that buffers
      // the answer, or holds a small write for more, stalls the stream.
      let clientHas: (i: number) => void = () => undefined;
      handle = (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        let i = 0;
        const next = () => {
          if (i === 5) res.end('data: [DONE]\n\n');
          else res.write(`data: {"i":${i++}}\n\n`);
        };
        clientHas = next;
        next();
      };
      const gaps: number[] = [];
      await new Promise<void>((resolve, reject) => {
        const req = http.request(`${gateway.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
          let seen = '';
          let last = performance.now();
          res.on('data', (d: Buffer) => {
            seen += d.toString();
            const events = seen.split('\n\n').length - 1;
            const now = performance.now();
            gaps.push(now - last);
            last = now;
            if (events <= 5) clientHas(events);
          });
          res.on('end', () => (seen.endsWith('data: [DONE]\n\n') ? resolve() : reject(new Error(`stream ended as ${JSON.stringify(seen)}`))));
        });
        req.setTimeout(5000, () => req.destroy(new Error('the stream stalled')));
        req.once('error', reject);
        req.end('{"stream":true}');
      });
      // Nagle's timer or a flush on a full buffer holds an event for 40-200 ms; a stream passed on
      // as it comes crosses loopback in well under that.
      assert.ok(Math.max(...gaps) < 30, `an event waited ${Math.max(...gaps).toFixed(1)} ms in the gateway`);
    });

    it('delivers the request unchanged: method, path and a 1 MiB body', async () => {
      let got: { method?: string; url?: string; body: Buffer } = { body: Buffer.alloc(0) };
      handle = (req, res) => {
        const parts: Buffer[] = [];
        req.on('data', (d: Buffer) => parts.push(d));
        req.on('end', () => {
          got = { method: req.method, url: req.url, body: Buffer.concat(parts) };
          res.end('ok');
        });
      };
      const body = randomBytes(1 << 20);
      const res = await fetch(`${gateway.url}/v1/completions?x=1`, { method: 'PUT', body });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'ok');
      assert.equal(got.method, 'PUT');
      assert.equal(got.url, '/v1/completions?x=1');
      assert.equal(sha(got.body), sha(body));
    });

    it('keeps engine connections alive and reuses them', async () => {
      handle = (_req, res) => res.end('ok');
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const before = engineSockets.size;
      for (let i = 0; i < 20; i++)
        await new Promise<void>((resolve, reject) => {
          http
            .get(`${gateway.url}/v1/models`, { agent }, (res) => {
              res.resume();
              res.on('end', resolve);
            })
            .once('error', reject);
        });
      agent.destroy();
      // One client connection, one request at a time: a gateway that reuses its engine connections
      // needs one (two if it opened a spare), one that does not needs twenty.
      assert.ok(engineSockets.size - before <= 2, `${engineSockets.size - before} engine connections for 20 sequential requests`);
    });
  });
}
