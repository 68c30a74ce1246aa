// The native data path (native/src/edge.rs) against loopback engines that a test controls, through
// Node's own HTTP client: framing, the fields it forwards and drops, the body cap, aborts both
// ways, backpressure, keep-alive and 1,000 streams.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type EdgeRequest, type EdgeSeen, type EdgeStats, type EdgeTaps, loadAddon, requestsOf, seenOf, TAP_DATA } from '../../agent/gpu/addon.js';
import { openAiHandler, type SeenRequest } from '../../agent/demo/sim-openai.js';
import { inspectBody, routeOf } from '../../agent/proxy/routes.js';
import { eventually, sleep, threadsOf } from '../helpers.js';

const loaded = loadAddon();
const skip = !loaded.ok && 'the native addon is not built (no cargo)';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A loopback engine whose behaviour each test sets; it counts requests and connections. */
class Engine {
  handler: Handler = (_req, res) => res.end('ok');
  requests = 0;
  connections = 0;
  readonly server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    this.requests++;
    this.handler(req, res);
  });
  async start(): Promise<number> {
    this.server.on('connection', () => this.connections++);
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as net.AddressInfo).port;
  }
}

function edgeStart(
  target: string,
  maxBody = 32 * 1024 * 1024,
  timeoutMs = 30_000,
  policy?: (requests: EdgeRequest[], seen: EdgeSeen[]) => void,
  mode: 'wait' | 'tell' | 'tell:prompt' = 'wait',
  maxConcurrent = 4096,
): { id: number; base: string } {
  if (!loaded.ok) throw new Error('no addon');
  const e = loaded.addon.edgeStart(
    `127.0.0.1:0 ${target} ${maxBody} ${timeoutMs} ${mode} ${maxConcurrent}`,
    policy && ((requests, taps) => policy(requests, seenOf(taps))),
  );
  return { id: e.id, base: `http://${e.address}` };
}

/** This process's loop threads (native/src/edge.rs names each infertel-edge). */
function loopThreads(): string[] {
  return threadsOf('self')
    .filter((t) => t.name === 'infertel-edge')
    .map((t) => t.tid);
}

/** A thread's CPU time (ns) and how many times it was put on a CPU, from the kernel's schedstat. */
function schedstat(tid: string): { cpuNs: number; runs: number } {
  const fields = readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').trim().split(' ').map(Number);
  return { cpuNs: fields[0] ?? Number.NaN, runs: fields[2] ?? Number.NaN };
}

/** This machine's TCP sockets to `port` on loopback in CLOSE_WAIT (the engine closed, the local side not yet), by local port. */
function halfClosedTo(port: number): string[] {
  const CLOSE_WAIT = '08';
  const remote = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[2] === remote && f[3] === CLOSE_WAIT)
    .map((f) => f[1] ?? '');
}

function stats(id: number): EdgeStats {
  if (!loaded.ok) throw new Error('no addon');
  const s = loaded.addon.edgeStats(id);
  assert.ok(s);
  return s;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** ms from the request's start to the head, and to each piece of body. */
  headAt: number;
  pieces: Array<{ at: number; text: string }>;
  ended: 'end' | 'aborted';
}

function request(base: string, path: string, opts: http.RequestOptions & { body?: string | Buffer } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request(`${base}${path}`, opts, (res) => {
      const headAt = performance.now() - t0;
      const parts: Buffer[] = [];
      const pieces: Answer['pieces'] = [];
      res.on('data', (d: Buffer) => {
        parts.push(d);
        pieces.push({ at: performance.now() - t0, text: d.toString() });
      });
      const done = (ended: Answer['ended']) => () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), headAt, pieces, ended });
      res.on('end', done('end'));
      res.on('aborted', done('aborted'));
      res.on('error', () => undefined);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('native data path: packed requests', () => {
  // Two requests as the addon packs them (native/src/lib.rs call_policy), written out by hand.
  const batch = {
    index: Float64Array.from([7, 1000.5, 2, 2, 8, 1001.25, 1 | 4, 0]),
    strings: ['req-7', 'POST', '/v1/chat/completions', 'Authorization', 'Bearer k', 'X-Tag', 'a, b', '', 'GET', '/v1/models'],
    bodies: [Buffer.from('{"stream":true}'), Buffer.alloc(0)],
  };
  const want: EdgeRequest[] = [
    {
      token: 7,
      at: 1000.5,
      waits: false,
      requestId: 'req-7',
      usageInjected: true,
      answered: false,
      method: 'POST',
      target: '/v1/chat/completions',
      headers: ['Authorization', 'Bearer k', 'X-Tag', 'a, b'],
      body: Buffer.from('{"stream":true}'),
    },
    {
      token: 8,
      at: 1001.25,
      waits: true,
      requestId: null,
      usageInjected: false,
      answered: true,
      method: 'GET',
      target: '/v1/models',
      headers: [],
      body: Buffer.alloc(0),
    },
  ];
  it('come out as EdgeRequest objects: flags, fields and the id of a request that waits', () => assert.deepEqual(requestsOf(batch), want));
  it('an empty batch is no requests', () => assert.deepEqual(requestsOf({ index: new Float64Array(0), strings: [], bodies: [] }), []));
});

describe('native data path (request-level mode, HTTP/1.1 framing)', { skip }, () => {
  const engine = new Engine();
  let target = '';
  let edge: { id: number; base: string };

  before(async () => {
    target = `127.0.0.1:${await engine.start()}`;
    edge = edgeStart(target);
  });

  /** The engine as the OpenAI-compatible stand-in (three tokens, 5 ms apart); what it was sent. */
  function streamingEngine(): SeenRequest[] {
    const seen: SeenRequest[] = [];
    engine.handler = openAiHandler({ models: ['m'], ttftMs: 5, itlMs: 5, tokens: 3 }, seen);
    return seen;
  }

  after(() => {
    if (loaded.ok) loaded.addon.edgeStop(edge.id);
    engine.server.closeAllConnections();
    engine.server.close();
  });

  it('sends the head when the engine does and each SSE event as it is sent, unbuffered', async () => {
    engine.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.flushHeaders();
      setTimeout(() => res.write('data: {"n":1}\n\n'), 500);
      setTimeout(() => res.end('data: [DONE]\n\n'), 1000);
    };
    const a = await request(edge.base, '/v1/chat/completions', { method: 'POST', body: '{}' });
    assert.equal(a.status, 200);
    assert.equal(a.ended, 'end');
    assert.equal(a.body.toString(), 'data: {"n":1}\n\ndata: [DONE]\n\n');
    // The engine sends its head at once, the first event at 500 ms and the last at 1000 ms.
    assert.ok(a.headAt < 400, `head after ${a.headAt} ms`);
    const first = a.pieces.find((p) => p.text.includes('"n":1'));
    assert.ok(first && first.at < 900, `first event at ${first?.at} ms`);
    assert.equal(a.headers['transfer-encoding'], 'chunked');
  });

  it('forwards method, path, body and status; drops connection-specific fields both ways (and those Connection names); adds Via', async () => {
    let seen: { method?: string; url?: string; headers?: http.IncomingHttpHeaders; body?: string } = {};
    engine.handler = (req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        seen = { method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(parts).toString() };
        res.writeHead(418, {
          connection: 'keep-alive, x-engine-hop',
          'x-engine-hop': '1',
          'keep-alive': 'timeout=5',
          'x-engine-end': '2',
          'content-type': 'text/plain',
        });
        res.end('teapot');
      });
    };
    const a = await request(edge.base, '/v1/embeddings?x=1', {
      method: 'PUT',
      body: 'payload',
      headers: {
        connection: 'keep-alive, x-client-hop',
        'x-client-hop': '1',
        te: 'trailers',
        'proxy-authorization': 'Basic eA==',
        'x-client-end': '2',
        via: '1.0 lb',
      },
    });
    assert.equal(seen.method, 'PUT');
    assert.equal(seen.url, '/v1/embeddings?x=1');
    assert.equal(seen.body, 'payload');
    assert.equal(seen.headers?.host, target);
    assert.equal(seen.headers?.['x-client-end'], '2');
    assert.equal(seen.headers?.['content-length'], '7');
    assert.equal(seen.headers?.via, '1.0 lb, 1.1 infertel');
    for (const f of ['x-client-hop', 'te', 'proxy-authorization']) assert.equal(seen.headers?.[f], undefined, f);
    assert.equal(a.status, 418);
    assert.equal(a.body.toString(), 'teapot');
    assert.equal(a.headers['x-engine-end'], '2');
    assert.equal(a.headers['x-engine-hop'], undefined);
    assert.equal(a.headers['keep-alive'], undefined);
    assert.equal(a.headers.via, '1.1 infertel');
  });

  it('gives the engine a chunked request body with its length', async () => {
    let seen: { length?: string; te?: string; body?: string } = {};
    engine.handler = (req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        seen = { length: req.headers['content-length'], te: req.headers['transfer-encoding'], body: Buffer.concat(parts).toString() };
        res.end();
      });
    };
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${edge.base}/v1/completions`, { method: 'POST' }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.write('{"prompt":');
      setTimeout(() => req.end('"hi"}'), 50);
    });
    const body = '{"prompt":"hi"}';
    assert.deepEqual(seen, { length: String(Buffer.byteLength(body)), te: undefined, body });
  });

  it('answers 413 to a body over the cap and the engine never sees it; the edge goes on answering', async () => {
    const capped = edgeStart(target, 1024 * 1024);
    try {
      const before = engine.requests;
      engine.handler = (_req, res) => res.end('ok');
      const big = Buffer.alloc(5 * 1024 * 1024, 0x61);
      const a = await request(capped.base, '/v1/chat/completions', { method: 'POST', body: big }).catch((e: Error) => e);
      assert.ok(!(a instanceof Error), `the client saw ${a}`);
      assert.equal(a.status, 413);
      assert.match(a.body.toString(), /request body over 1048576 bytes/);
      const id = a.headers['x-request-id'];
      assert.match(String(id), /^[0-9a-f-]{36}$/, 'the refusal carries a request id');
      assert.equal(JSON.parse(a.body.toString()).error.request_id, id);
      const chunked = await new Promise<number>((resolve, reject) => {
        const req = http.request(`${capped.base}/v1/chat/completions`, { method: 'POST' }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        for (let i = 0; i < 40; i++) req.write(Buffer.alloc(64 * 1024, 0x62));
        req.end();
      });
      assert.equal(chunked, 413);
      assert.equal(engine.requests, before);
      assert.equal(stats(capped.id).bodyTooLarge, 2);
      assert.equal((await request(capped.base, '/v1/models')).status, 200);
    } finally {
      if (loaded.ok) loaded.addon.edgeStop(capped.id);
    }
  });

  it('closes the engine request within a second when the client aborts, mid-stream or before the head', async () => {
    for (const when of ['mid-stream', 'before the head'] as const) {
      let engineClosedAt = 0;
      engine.handler = (req, res) => {
        res.on('close', () => (engineClosedAt = performance.now()));
        if (when === 'mid-stream') {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('data: {"n":1}\n\n');
        }
        void req;
      };
      const aborts = stats(edge.id).clientAbort;
      let abortedAt = 0;
      await new Promise<void>((resolve) => {
        const req = http.request(`${edge.base}/v1/chat/completions`, { method: 'POST' }, (res) => {
          res.once('data', () => {
            abortedAt = performance.now();
            req.destroy();
            resolve();
          });
        });
        req.on('error', () => undefined);
        req.end('{}');
        if (when === 'before the head')
          setTimeout(() => {
            abortedAt = performance.now();
            req.destroy();
            resolve();
          }, 200);
      });
      await eventually(async () => engineClosedAt > 0, 1000, `${when}: the engine request to close`);
      assert.ok(engineClosedAt - abortedAt < 1000, `${when}: ${engineClosedAt - abortedAt} ms`);
      assert.equal(stats(edge.id).clientAbort, aborts + 1);
    }
  });

  it('gives the client a clean end of stream when the engine resets mid-stream', async () => {
    engine.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":1}\n\n');
      setTimeout(() => res.socket?.destroy(), 100);
    };
    const resets = stats(edge.id).engineReset;
    const a = await request(edge.base, '/v1/chat/completions', { method: 'POST', body: '{}' });
    assert.equal(a.ended, 'end');
    assert.equal(a.body.toString(), 'data: {"n":1}\n\n');
    assert.equal(stats(edge.id).engineReset, resets + 1);
    engine.handler = (_req, res) => res.end('ok');
    assert.equal((await request(edge.base, '/v1/models')).body.toString(), 'ok');
  });

  it('answers 502 when the engine refuses and 504 when it does not answer in time', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const refused = edgeStart(`127.0.0.1:${port}`);
    const slow = edgeStart(target, 1024, 300);
    try {
      const a = await request(refused.base, '/v1/models');
      assert.equal(a.status, 502);
      assert.equal(stats(refused.id).upstreamRefused, 1);
      engine.handler = () => undefined;
      const t0 = performance.now();
      const b = await request(slow.base, '/v1/models');
      assert.equal(b.status, 504);
      assert.ok(performance.now() - t0 >= 290, 'answered before the timeout');
      assert.equal(stats(slow.id).upstreamTimeout, 1);
    } finally {
      if (loaded.ok) {
        loaded.addon.edgeStop(refused.id);
        loaded.addon.edgeStop(slow.id);
      }
    }
  });

  it('waits for an engine that does not take its connect without holding up its other connections: their answers at once, 504 at the deadline', {
    skip: !existsSync('/usr/bin/python3') && 'no python3',
  }, async () => {
    // An engine whose accept queue is full (listen(0) holds one connection; one is queued and
    // never accepted): the kernel drops further SYNs, so a connect to it waits for retransmissions.
    const full = spawn(
      '/usr/bin/python3',
      [
        '-c',
        [
          'import socket, sys, time',
          "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)",
          'c = socket.create_connection(s.getsockname()); time.sleep(0.05)',
          'print(s.getsockname()[1], flush=True); sys.stdin.read()',
        ].join('\n'),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const port = Number(await new Promise<string>((r) => full.stdout.once('data', (d: Buffer) => r(d.toString().trim()))));
    const stuck = edgeStart(`127.0.0.1:${port}`, 1024, 1500);
    try {
      const t0 = performance.now();
      const waiting = request(stuck.base, '/v1/models');
      await sleep(100);
      // The loop answers this one itself (over the body cap): it must not wait for the connect above.
      const t1 = performance.now();
      const refused = await request(stuck.base, '/v1/chat/completions', { method: 'POST', body: Buffer.alloc(4096, 0x61) });
      const refusedIn = performance.now() - t1;
      assert.equal(refused.status, 413);
      assert.ok(refusedIn < 500, `the 413 took ${refusedIn.toFixed(0)} ms while a connect was pending`);
      const a = await waiting;
      const waited = performance.now() - t0;
      assert.equal(a.status, 504);
      assert.ok(waited >= 1450 && waited < 3000, `504 after ${waited.toFixed(0)} ms for a 1500 ms deadline`);
      assert.equal(stats(stuck.id).upstreamTimeout, 1);
      assert.equal(stats(stuck.id).engineConnections, 0);
    } finally {
      if (loaded.ok) loaded.addon.edgeStop(stuck.id);
      full.kill();
    }
  });

  it('holds the engine back for a client that does not read, and then delivers every byte in order', async () => {
    const total = 64 * 1024 * 1024;
    let written = 0;
    const hash = createHash('sha256');
    engine.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let i = 0;
      const pump = () => {
        while (written < total) {
          const piece = Buffer.alloc(64 * 1024, i++ % 251);
          hash.update(piece);
          written += piece.length;
          if (!res.write(piece)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    };
    const got = createHash('sha256');
    let received = 0;
    const done = new Promise<void>((resolve, reject) => {
      const req = http.request(`${edge.base}/v1/files`, (res) => {
        res.pause();
        let earlier = 0;
        setTimeout(() => {
          earlier = written;
        }, 600);
        setTimeout(() => {
          // The engine is held back: what it wrote stopped growing, well short of the body. How much
          // it got out first is the kernel's (socket buffers autotune up to tcp_rmem's maximum, 32
          // MiB on some machines) plus the edge's own bound of 1 MiB.
          assert.equal(written, earlier, `the engine went on writing to a client that read none (${earlier} then ${written} bytes)`);
          assert.ok(written < total / 2, `the engine wrote ${written} bytes to a client that read none`);
          res.on('data', (d: Buffer) => {
            got.update(d);
            received += d.length;
          });
          res.on('end', resolve);
          res.resume();
        }, 1000);
      });
      req.on('error', reject);
      req.end();
    });
    await done;
    assert.equal(received, total);
    assert.equal(got.digest('hex'), hash.digest('hex'));
  });

  it('keeps connections open both ways: 50 requests on one client connection use one engine connection', async () => {
    const own = edgeStart(target);
    try {
      engine.handler = (_req, res) => res.end('ok');
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      for (let i = 0; i < 50; i++) assert.equal((await request(own.base, '/v1/models', { agent })).body.toString(), 'ok');
      agent.destroy();
      const s = stats(own.id);
      assert.equal(s.requests, 50);
      assert.equal(s.engineConnections, 1);
    } finally {
      if (loaded.ok) loaded.addon.edgeStop(own.id);
    }
  });

  it('drops a pooled engine connection as soon as the engine closes it, and the next request takes a new one', async () => {
    // An engine that closes each connection 100 ms after its answer, as one does at its keep-alive timeout.
    const brief = http.createServer((req, res) => {
      res.on('finish', () => setTimeout(() => req.socket.destroy(), 100));
      res.end('ok');
    });
    await new Promise<void>((r) => brief.listen(0, '127.0.0.1', r));
    const port = (brief.address() as net.AddressInfo).port;
    const own = edgeStart(`127.0.0.1:${port}`);
    try {
      assert.equal((await request(own.base, '/v1/models')).body.toString(), 'ok');
      await sleep(400);
      // A pooled socket that the loop had not seen closed would wait here, half closed, until its next use.
      assert.deepEqual(halfClosedTo(port), [], 'sockets to the engine left in CLOSE_WAIT');
      assert.equal((await request(own.base, '/v1/models')).body.toString(), 'ok');
      assert.equal(stats(own.id).engineConnections, 2);
    } finally {
      if (loaded.ok) loaded.addon.edgeStop(own.id);
      brief.closeAllConnections();
      brief.close();
    }
  });

  it('answers pipelined requests in order, and the loop does not spin on the next request while the first is answered', async (t) => {
    if (!existsSync('/proc/self/schedstat')) return t.skip('this kernel gives no schedstat to read a thread by');
    const others = loopThreads();
    const own = edgeStart(target);
    const [tid] = loopThreads().filter((x) => !others.includes(x));
    assert.ok(tid, 'the new loop thread is listed');
    engine.handler = (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(`start ${req.url}\n`);
      setTimeout(() => res.end(`end ${req.url}\n`), 300);
    };
    const socket = net.connect(Number(new URL(own.base).port), '127.0.0.1');
    try {
      let got = '';
      socket.on('data', (d: Buffer) => (got += d.toString()));
      await new Promise<void>((r) => socket.once('connect', () => r()));
      const from = schedstat(tid);
      socket.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\n');
      // The second request comes while the first is being answered, so the loop does not read it with the first.
      await eventually(async () => got.includes('start /a'), 2000, 'the first answer starting');
      socket.write('GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      await new Promise<void>((r) => socket.once('close', () => r()));
      const to = schedstat(tid);
      const order = [...got.matchAll(/(start|end) \/(a|b)/g)].map((m) => `${m[1]} ${m[2]}`);
      assert.deepEqual(order, ['start a', 'end a', 'start b', 'end b']);
      // The second request waits unread for about 0.3 s of the 0.6 s: a loop woken for it on every turn would use most of that 0.3 s.
      assert.ok(to.cpuNs - from.cpuNs < 50e6, `the loop used ${((to.cpuNs - from.cpuNs) / 1e6).toFixed(2)} ms of CPU`);
    } finally {
      socket.destroy();
      if (loaded.ok) loaded.addon.edgeStop(own.id);
    }
  });

  it('times each request on a kept connection from its own start, not the first one', async () => {
    const own = edgeStart(target, 1024, 600);
    try {
      let delay = 0;
      engine.handler = (_req, res) => void setTimeout(() => res.end('ok'), delay);
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      assert.equal((await request(own.base, '/v1/models', { agent })).status, 200);
      await sleep(300);
      // 450 ms is inside this request's 600 ms, and ends after the first request's would have.
      delay = 450;
      const second = await request(own.base, '/v1/models', { agent });
      agent.destroy();
      assert.equal(second.status, 200);
      assert.equal(stats(own.id).engineConnections, 1);
    } finally {
      if (loaded.ok) loaded.addon.edgeStop(own.id);
    }
  });

  it("lets an answered request's deadline go: an idle loop neither spins nor wakes when that deadline passes", async (t) => {
    if (!existsSync('/proc/self/schedstat')) return t.skip('this kernel gives no schedstat to read a thread by');
    const others = loopThreads();
    const own = edgeStart(target, 1024, 200);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const [tid] = loopThreads().filter((x) => !others.includes(x));
      assert.ok(tid, 'the new loop thread is listed');
      engine.handler = (_req, res) => res.end('ok');
      const started = performance.now();
      for (let i = 0; i < 40; i++) assert.equal((await request(own.base, '/v1/models', { agent })).status, 200);
      const from = schedstat(tid);
      // Every request's 200 ms engine deadline passes in this wait, while its client connection stays open.
      await sleep(Math.max(0, started + 200 - performance.now()) + 300);
      const to = schedstat(tid);
      // Left behind, each passing deadline woke the loop once (at least 40 runs), and one under 1 ms away
      // made it spin until it passed (about 20 ms of CPU). Idle, the loop wakes every 100 ms.
      assert.ok(to.runs - from.runs <= 15, `the loop ran ${to.runs - from.runs} times while idle`);
      assert.ok(to.cpuNs - from.cpuNs < 5e6, `the loop used ${((to.cpuNs - from.cpuNs) / 1e6).toFixed(2)} ms of CPU while idle`);
    } finally {
      agent.destroy();
      if (loaded.ok) loaded.addon.edgeStop(own.id);
    }
  });

  it('closes a connection whose client sent part of a head and then its end', async () => {
    const closedAfter = await new Promise<number>((resolve) => {
      const t0 = performance.now();
      const s = net.connect(Number(new URL(edge.base).port), '127.0.0.1', () => s.end('GET /v1/models HTTP/1.1\r\nHost: x'));
      s.resume();
      s.on('close', () => resolve(performance.now() - t0));
      setTimeout(() => {
        s.destroy();
        resolve(Number.POSITIVE_INFINITY);
      }, 2000);
    });
    assert.ok(closedAfter < 1000, `still open after ${closedAfter} ms`);
  });

  it('answers 503 past proxy.maxConcurrent requests in progress, and again once one ends', async () => {
    const own = edgeStart(target, 1024, 30_000, undefined, 'wait', 1);
    try {
      let finishFirst: () => void = () => undefined;
      engine.handler = (req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: {"n":1}\n\n');
        if (req.url === '/held') finishFirst = () => void res.end('data: [DONE]\n\n');
        else res.end('data: [DONE]\n\n');
      };
      const held = request(own.base, '/held');
      await eventually(async () => stats(own.id).requests === 1, 2000, 'the first request');
      await sleep(100);
      const refused = await request(own.base, '/v1/models');
      assert.equal(refused.status, 503);
      assert.match(refused.body.toString(), /proxy overloaded/);
      assert.equal(stats(own.id).overloaded, 1);
      finishFirst();
      assert.equal((await held).status, 200);
      assert.equal((await request(own.base, '/v1/models')).status, 200);
    } finally {
      if (loaded.ok) loaded.addon.edgeStop(own.id);
    }
  });

  it('answers 503 when the policy does not decide within the timeout, tells it so, and the engine never sees the request', async () => {
    const told: EdgeSeen[] = [];
    const asked: EdgeRequest[] = [];
    const own = edgeStart(
      target,
      1024,
      300,
      (requests, seen) => {
        asked.push(...requests);
        told.push(...seen);
      },
      'wait',
    );
    try {
      const before = engine.requests;
      const t0 = performance.now();
      const a = await Promise.race([
        request(own.base, '/v1/chat/completions', { method: 'POST', body: '{}' }),
        sleep(3000).then(() => Promise.reject(new Error('no answer within 3 s: the request is held for ever'))),
      ]);
      assert.equal(a.status, 503);
      assert.ok(performance.now() - t0 >= 290, 'answered before the timeout');
      assert.equal(engine.requests, before);
      assert.equal(stats(own.id).policyTimeout, 1);
      await eventually(async () => told.some((x) => x.outcome === 'policy_timeout' && x.token === asked[0]?.token), 2000, 'the policy to be told');
    } finally {
      if (loaded.ok) loaded.addon.edgeStop(own.id);
    }
  });

  it('refuses a malformed request head with 400 and goes on answering', async () => {
    const raw = await new Promise<string>((resolve) => {
      const s = net.connect(Number(new URL(edge.base).port), '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nBad Name: x\r\n\r\n'));
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('close', () => resolve(Buffer.concat(parts).toString()));
    });
    assert.match(raw, /^HTTP\/1\.1 400 /);
    engine.handler = (_req, res) => res.end('ok');
    assert.equal((await request(edge.base, '/v1/models')).status, 200);
  });

  it('with a policy, hands it each request once and does what it decides: fields added both ways, a new body, or its own answer', async () => {
    if (!loaded.ok) return;
    const addon = loaded.addon;
    const asked: EdgeRequest[] = [];
    const seenByPolicy: EdgeSeen[] = [];
    let id = -1;
    const policy = (requests: EdgeRequest[], seen: EdgeSeen[]) => {
      seenByPolicy.push(...seen);
      for (const r of requests) {
        asked.push(r);
        if (r.target === '/refused') addon.edgeAnswer(id, r.token, 'HTTP/1.1 429 Too Many Requests\r\ncontent-length: 4\r\n\r\nslow');
        else if (r.target === '/late') setTimeout(() => addon.edgeForward(id, r.token, '', ''), 300);
        else addon.edgeForward(id, r.token, `x-request-id: r-${r.token}\r\nx-tenant: acme`, `x-request-id: r-${r.token}`, Buffer.from('{"replaced":true}'));
      }
    };
    const p = edgeStart(target, 1024, 30_000, policy);
    id = p.id;
    try {
      let seen: { headers?: http.IncomingHttpHeaders; body?: string } = {};
      engine.handler = (req, res) => {
        const parts: Buffer[] = [];
        req.on('data', (d: Buffer) => parts.push(d));
        req.on('end', () => {
          seen = { headers: req.headers, body: Buffer.concat(parts).toString() };
          res.end('ok');
        });
      };
      const a = await request(p.base, '/v1/chat/completions', {
        method: 'POST',
        body: '{"model":"m"}',
        headers: { authorization: 'Bearer k', 'x-request-id': 'crafted' },
      });
      assert.equal(asked.length, 1);
      const first = asked[0];
      assert.ok(first);
      assert.equal(first.method, 'POST');
      assert.equal(first.target, '/v1/chat/completions');
      assert.equal(first.body.toString(), '{"model":"m"}');
      assert.ok(first.headers.includes('Bearer k'), 'the policy sees the key, to find the tenant');
      assert.equal(seen.headers?.['x-request-id'], `r-${first.token}`);
      assert.equal(seen.headers?.['x-tenant'], 'acme');
      assert.equal(seen.body, '{"replaced":true}');
      assert.equal(seen.headers?.['content-length'], String('{"replaced":true}'.length));
      assert.equal(a.headers['x-request-id'], `r-${first.token}`);
      assert.equal(a.body.toString(), 'ok');
      // What the policy is told of the answer, in order, on the clock of process.hrtime.
      const nowMs = Number(process.hrtime.bigint()) / 1e6;
      await eventually(async () => seenByPolicy.some((x) => x.kind === 'end'), 2000, 'the end of the answer');
      const mine = seenByPolicy.filter((x) => x.token === first.token);
      assert.deepEqual(
        mine.map((x) => x.kind),
        ['head', 'data', 'end'],
      );
      assert.equal(mine[0]?.status, 200);
      assert.equal(mine[1]?.data?.toString(), 'ok');
      assert.equal(mine[2]?.outcome, 'complete');
      assert.ok(first.at <= (mine[0]?.at ?? 0) && (mine[0]?.at ?? 0) <= (mine[2]?.at ?? 0));
      assert.ok(Math.abs(nowMs - first.at) < 5000, `${first.at} is not on the clock of process.hrtime (${nowMs})`);

      const before = engine.requests;
      const refused = await request(p.base, '/refused', { method: 'POST', body: '{}' });
      assert.equal(refused.status, 429);
      assert.equal(refused.body.toString(), 'slow');
      assert.equal(engine.requests, before);

      // The client leaves while the policy decides: nothing reaches the engine.
      const aborts = stats(p.id).clientAbort;
      await new Promise<void>((resolve) => {
        const req = http.request(`${p.base}/late`, { method: 'POST' });
        req.on('error', () => undefined);
        req.end('{}');
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 100);
      });
      await sleep(400);
      assert.equal(engine.requests, before);
      assert.equal(stats(p.id).clientAbort, aborts + 1);
      const late = asked.find((r) => r.target === '/late');
      assert.deepEqual(
        seenByPolicy.filter((x) => x.token === late?.token).map((x) => x.outcome),
        ['client_abort'],
      );
    } finally {
      addon.edgeStop(p.id);
    }
  });

  it('takes the usage chunk it asked for out of the stream, and leaves it in for a client that asked', async () => {
    if (!loaded.ok) return;
    const addon = loaded.addon;
    const seen = streamingEngine();
    let id = -1;
    const p = edgeStart(target, 1024 * 1024, 30_000, (requests, _seen) => {
      for (const r of requests) {
        const inspected = inspectBody(routeOf(r.target), r.body, r.method);
        addon.edgeForward(id, r.token, '', '', inspected.body, inspected.facts.usageInjected);
      }
    });
    id = p.id;
    try {
      const events = (a: Answer) => a.body.toString().split('\n\n').filter(Boolean);
      const plain = await request(p.base, '/v1/chat/completions', { method: 'POST', body: '{"model":"m","stream":true,"messages":[]}' });
      assert.deepEqual(JSON.parse(seen.at(-1)?.body ?? '{}').stream_options, { include_usage: true });
      assert.equal(events(plain).filter((e) => e.includes('"usage"')).length, 0);
      assert.equal(events(plain).at(-1), 'data: [DONE]');
      const asked = await request(p.base, '/v1/chat/completions', {
        method: 'POST',
        body: '{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}',
      });
      const usage = events(asked).filter((e) => e.includes('"usage"'));
      assert.equal(usage.length, 1);
      assert.deepEqual(JSON.parse(usage[0]?.slice('data: '.length) ?? '{}').choices, []);
      // Everything else is the same stream.
      assert.deepEqual(
        events(asked).filter((e) => !e.includes('"usage"')),
        events(plain),
      );
    } finally {
      addon.edgeStop(p.id);
    }
  });

  it('hands what it saw packed: four numbers each, every data read end to end in one buffer per batch, a note per head and end', async () => {
    if (!loaded.ok) return;
    const addon = loaded.addon;
    const batches: EdgeTaps[] = [];
    engine.handler = (req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const n = Number(req.url?.slice(1));
      let i = 0;
      const next = () => {
        if (i === 3) return void res.end(`data: ${n}-end\n\n`);
        res.write(`data: ${n}-${i++}\n\n`);
        setTimeout(next, 5);
      };
      next();
    };
    const started = addon.edgeStart(`127.0.0.1:0 ${target} 1024 30000 tell`, (_requests, taps) => batches.push(taps));
    const base = `http://${started.address}`;
    try {
      const answers = await Promise.all([1, 2, 3, 4, 5].map((n) => request(base, `/${n}`)));
      await eventually(async () => batches.flatMap(seenOf).filter((s) => s.kind === 'end').length === 5, 2000, 'five ends');
      for (const b of batches) {
        assert.equal(b.index.length % 4, 0);
        const kinds = [...b.index].filter((_, i) => i % 4 === 0);
        const dataBytes = [...b.index].filter((_, i) => i % 4 === 3).reduce((a, v) => a + v, 0);
        assert.equal(dataBytes, b.bytes.length, 'the data byte counts add up to the batch buffer');
        assert.equal(b.notes.length, kinds.filter((k) => k !== TAP_DATA).length, 'a note for each head and end');
      }
      // Each request's data, put together from the batches in order, is what its client received.
      const seen = batches.flatMap(seenOf);
      const tokens = [...new Set(seen.map((s) => s.token))];
      assert.equal(tokens.length, 5);
      const bodies = tokens.map((t) => Buffer.concat(seen.filter((s) => s.token === t && s.kind === 'data').map((s) => s.data as Buffer)).toString());
      assert.deepEqual(bodies.sort(), answers.map((a) => a.body.toString()).sort());
      for (const t of tokens) {
        const kinds = seen.filter((s) => s.token === t).map((s) => s.kind);
        assert.equal(kinds[0], 'head');
        assert.equal(kinds.at(-1), 'end');
      }
    } finally {
      addon.edgeStop(started.id);
    }
  });

  it('told after: sends each request at once with its request id and include_usage done in the loop, and tells the policy after; a body it cannot rewrite waits', async () => {
    if (!loaded.ok) return;
    const addon = loaded.addon;
    const seen = streamingEngine();
    const told: EdgeRequest[] = [];
    let id = -1;
    const p = edgeStart(
      target,
      1024 * 1024,
      30_000,
      (requests) => {
        for (const r of requests) {
          told.push(r);
          if (!r.waits) continue;
          const inspected = inspectBody(routeOf(r.target), r.body, r.method);
          addon.edgeForward(id, r.token, 'x-request-id: from-js', 'x-request-id: from-js', inspected.body, inspected.facts.usageInjected);
        }
      },
      'tell',
    );
    id = p.id;
    try {
      const events = (a: Answer) => a.body.toString().split('\n\n').filter(Boolean);
      const body = '{"model":"m","stream":true,"messages":[{"role":"user","content":"a long prompt"}],"user":"u-1"}';
      const a = await request(p.base, '/v1/chat/completions', { method: 'POST', body, headers: { 'x-request-id': 'given-1' } });
      assert.equal(a.headers['x-request-id'], 'given-1');
      assert.equal(seen.at(-1)?.headers['x-request-id'], 'given-1');
      assert.deepEqual(JSON.parse(seen.at(-1)?.body ?? '{}').stream_options, { include_usage: true });
      assert.equal(events(a).filter((e) => e.includes('"usage"')).length, 0);
      await eventually(async () => told.length === 1, 2000, 'the policy to be told');
      assert.deepEqual(
        { waits: told[0]?.waits, requestId: told[0]?.requestId, usageInjected: told[0]?.usageInjected, body: told[0]?.body.toString() },
        // The engine had the whole body; the policy gets only the members it reads (no prompt, since this mode hashes none).
        { waits: false, requestId: 'given-1', usageInjected: true, body: '{"model":"m","stream":true}' },
      );
      assert.equal(JSON.parse(seen.at(-1)?.body ?? '{}').messages[0].content, 'a long prompt');
      const crafted = await request(p.base, '/v1/models', { headers: { 'x-request-id': 'has space' } });
      assert.match(String(crafted.headers['x-request-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      // The client's stream_options without include_usage: JS rewrites the body, so the request waits for it.
      const waited = await request(p.base, '/v1/chat/completions', { method: 'POST', body: '{"model":"m","stream":true,"stream_options":{},"messages":[]}' });
      assert.equal(waited.headers['x-request-id'], 'from-js');
      assert.equal(told.at(-1)?.waits, true);
      assert.deepEqual(JSON.parse(seen.at(-1)?.body ?? '{}').stream_options, { include_usage: true });
      assert.equal(events(waited).filter((e) => e.includes('"usage"')).length, 0);
    } finally {
      addon.edgeStop(p.id);
    }
  });

  it('told after, with prompts hashed (tell:prompt): the policy gets the prompt members too; a body that is no JSON object comes whole', async () => {
    if (!loaded.ok) return;
    const addon = loaded.addon;
    const seen = streamingEngine();
    const told: EdgeRequest[] = [];
    const p = edgeStart(target, 1024 * 1024, 30_000, (requests) => told.push(...requests), 'tell:prompt');
    try {
      const bodies = [
        '{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"u-1","temperature":0.5}',
        '{"inputs":"p","parameters":{"max_new_tokens":2},"extra":[1,2]}',
        '{"model":"m",',
      ];
      for (const [path, body] of [
        ['/v1/chat/completions', bodies[0]],
        ['/generate', bodies[1]],
        ['/v1/completions', bodies[2]],
      ] as const) {
        await request(p.base, path, { method: 'POST', body });
        assert.equal(seen.at(-1)?.body, body, 'the engine gets the body as sent');
      }
      await eventually(async () => told.length === 3, 2000, 'the policy to be told');
      assert.deepEqual(
        told.map((r) => r.body.toString()),
        ['{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}', '{"inputs":"p","parameters":{"max_new_tokens":2}}', '{"model":"m",'],
      );
    } finally {
      addon.edgeStop(p.id);
    }
  });

  it('reads event streams in the loop: five ending in one batch each get their own reading, and their heads carry no fields', async () => {
    if (!loaded.ok) return;
    const addon = loaded.addon;
    // Each stream sends its own number of content events and of completion tokens, and holds its end until all five are in, so the ends come together.
    const held: Array<() => void> = [];
    engine.handler = (req, res) => {
      const n = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('n'));
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-engine-field': 'yes' });
      for (let i = 0; i < n; i++) res.write(`data: {"choices":[{"index":0,"delta":{"content":"t${i}"}}]}\n\n`);
      const usage = `data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":${n}}}\n\n`;
      held.push(() => res.end(`${usage}data: [DONE]\n\n`));
      if (held.length === 5) for (const end of held.splice(0)) end();
    };
    const batches: Array<{ heads: EdgeSeen[]; ends: EdgeSeen[] }> = [];
    const tokenOf = new Map<number, number>();
    const started = addon.edgeStart(`127.0.0.1:0 ${target} 1024 30000 tell 4096 read:30000:0:1,10,100`, (requests, taps) => {
      for (const r of requests) tokenOf.set(r.token, Number(new URL(r.target, 'http://x').searchParams.get('n')));
      const seen = seenOf(taps);
      batches.push({ heads: seen.filter((s) => s.kind === 'head'), ends: seen.filter((s) => s.kind === 'end') });
    });
    try {
      const counts = [1, 2, 3, 4, 5];
      await Promise.all(counts.map((n) => request(`http://${started.address}`, `/v1/chat/completions?n=${n}`, { method: 'POST', body: '{"stream":true}' })));
      await eventually(async () => batches.flatMap((b) => b.ends).length === 5, 2000, 'five ends');
      const heads = batches.flatMap((b) => b.heads);
      assert.deepEqual(
        heads.map((h) => [h.read, h.headers]),
        counts.map(() => [true, []]),
      );
      assert.ok(
        batches.some((b) => b.ends.length >= 2),
        'two readings or more in one batch (else the views of one buffer are not tried)',
      );
      // The seventh number of a reading is its usage's completion tokens: each stream's own, from its own view.
      const completions = batches.flatMap((b) => b.ends).map((e) => [tokenOf.get(e.token), (e.read as Float64Array | null)?.[6]]);
      assert.deepEqual(
        completions.sort((a, b) => (a[0] ?? 0) - (b[0] ?? 0)),
        counts.map((n) => [n, n]),
      );
    } finally {
      addon.edgeStop(started.id);
    }
  });

  it('carries 1,000 concurrent streams to their end', async () => {
    engine.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let n = 0;
      const tick = setInterval(() => {
        res.write(`data: {"n":${n}}\n\n`);
        if (++n === 5) {
          clearInterval(tick);
          res.end('data: [DONE]\n\n');
        }
      }, 50);
    };
    const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
    const answers = await Promise.all(Array.from({ length: 1000 }, () => request(edge.base, '/v1/chat/completions', { method: 'POST', body: '{}', agent })));
    agent.destroy();
    assert.equal(answers.filter((a) => a.status === 200 && a.ended === 'end' && a.body.toString().split('\n\n').length === 7).length, 1000);
    await sleep(10);
  });
});
