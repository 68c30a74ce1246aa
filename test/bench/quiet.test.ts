// The proxy bench's quiet setting: the C stand-in engine (`bench/native/engine.c`) and the C load
// (`bench/native/load.c`), built with cc as the bench builds them. Their rows mean what the bench
// says only if the engine streams what the Node stand-in streams, on time, over keep-alive, and the
// load counts every request, every event and the time to each first body byte.

import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { CLoadReport } from '../../bench/proxy.js';
import { buildTool, removeTool } from '../../bench/relay.js';
import { firstLine } from '../../bench/stats.js';
import { readEvent, sseData } from '../../agent/proxy/stream.js';

const engineBuilt = buildTool('engine');
const loadBuilt = buildTool('load');
const skip = 'why' in engineBuilt ? engineBuilt.why : 'why' in loadBuilt ? loadBuilt.why : false;

after(() => {
  if ('path' in engineBuilt) removeTool(engineBuilt.path);
  if ('path' in loadBuilt) removeTool(loadBuilt.path);
});

function runLoad(port: number, clients: number, staggerMs: number, windowMs: number, tokens: number): Promise<CLoadReport> {
  return new Promise((resolve, reject) => {
    const args = [String(port), String(clients), String(staggerMs), String(windowMs), String(tokens)];
    execFile((loadBuilt as { path: string }).path, args, { maxBuffer: 1 << 24 }, (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout))));
  });
}

/** A streamed chat completion from `port` over `agent`: when it was sent, and its events' data, each with its arrival time. */
function chat(
  port: number,
  agent: http.Agent,
  body: object,
  tokens: number,
): Promise<{ sentAt: number; events: Array<{ data: string; at: number }>; socket: unknown }> {
  return new Promise((resolve, reject) => {
    const sentAt = performance.now();
    const req = http.request(
      {
        port,
        host: '127.0.0.1',
        path: '/v1/chat/completions',
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'x-sim-tokens': String(tokens) },
      },
      (res) => {
        const events: Array<{ data: string; at: number }> = [];
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          buf += d;
          for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
            events.push({ data: sseData(buf.slice(0, end)) ?? '', at: performance.now() });
            buf = buf.slice(end + 2);
          }
        });
        res.on('end', () => resolve({ sentAt, events, socket: req.socket }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe('bench: the C stand-in engine', { skip }, () => {
  let engine: ChildProcess;
  let port = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

  before(async () => {
    engine = spawn((engineBuilt as { path: string }).path, [], { stdio: ['ignore', 'pipe', 'inherit'] });
    port = Number(new URL(await firstLine(engine)).port);
  });

  after(() => {
    agent.destroy();
    engine.kill();
  });

  it('lists its model as an OpenAI server does', async () => {
    const models = (await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json()) as { data: Array<{ id: string }> };
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['bench-model'],
    );
  });

  it('streams a role chunk, N content chunks 20 ms apart, a finish chunk and [DONE], as the proxy reads them', async () => {
    const { sentAt, events } = await chat(port, agent, { model: 'bench-model', stream: true }, 3);
    assert.equal(events.length, 6);
    assert.equal(events.at(-1)?.data, '[DONE]');
    const docs = events.slice(0, -1).map((e) => JSON.parse(e.data));
    const content = docs.map((d) => readEvent('/v1/chat/completions', d).content);
    assert.deepEqual(content, [false, true, true, true, false]);
    assert.equal(docs[0].choices[0].delta.role, 'assistant');
    assert.equal(docs[4].choices[0].finish_reason, 'length');
    // The timer may be late, never early: content chunk i is due 20 * i ms after the request came.
    // (Gaps between arrivals can be shorter when one chunk was read late, so they are not checked.)
    for (let i = 1; i <= 3; i++) assert.ok((events[i]?.at ?? 0) - sentAt >= 20 * i - 1, `chunk ${i} came early`);
  });

  it('adds the usage chunk only when the request asks for it, with the tokens it sent', async () => {
    const asked = await chat(port, agent, { model: 'bench-model', stream: true, stream_options: { include_usage: true } }, 2);
    const usage = asked.events.map((e) => (e.data === '[DONE]' ? undefined : readEvent('/v1/chat/completions', JSON.parse(e.data)))).find((f) => f?.usage);
    assert.deepEqual(usage?.usage, { promptTokens: 12, completionTokens: 2 });
    assert.equal(usage?.usageOnly, true);
    const notAsked = await chat(port, agent, { model: 'bench-model', stream: true }, 2);
    assert.equal(notAsked.events.length, asked.events.length - 1);
  });

  it('catches up on a stream it fell behind on (stopped for 200 ms) with no other request to wake it, and ends it', async () => {
    const streamed = chat(port, agent, { model: 'bench-model', stream: true }, 20);
    await new Promise((r) => setTimeout(r, 50));
    engine.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 200));
    engine.kill('SIGCONT');
    // Resumed, each chunk is several gaps overdue: an engine that then waited on its sockets alone held the stream until another request came.
    const ended = await Promise.race([streamed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000))]);
    assert.ok(ended, 'the stream did not end within 3 s of the engine resuming');
    assert.equal(ended.events.length, 1 + 20 + 2);
    assert.equal(ended.events.at(-1)?.data, '[DONE]');
  });

  it('answers one request after another on one keep-alive connection', async () => {
    const a = await chat(port, agent, { model: 'bench-model', stream: true }, 1);
    const b = await chat(port, agent, { model: 'bench-model', stream: true }, 1);
    assert.equal(a.socket, b.socket);
    assert.equal(b.events.length, 4);
  });
});

describe('bench: the C load', { skip }, () => {
  let server: http.Server;
  let port = 0;
  let served = 0;
  let delayMs = 0;
  let tailMs = 0;

  before(async () => {
    // Odd requests get a chunked body, even ones a Content-Length body: two events each, after a
    // delay; a chunked body's second write comes tailMs after its first.
    server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const n = ++served;
        setTimeout(() => {
          const body = 'data: {"a":1}\n\ndata: [DONE]\n\n';
          if (n % 2) {
            res.writeHead(200, { 'content-type': 'text/event-stream' });
            res.write(body.slice(0, 9));
            setTimeout(() => res.end(body.slice(9)), tailMs);
          } else {
            res.writeHead(200, { 'content-type': 'text/event-stream', 'content-length': Buffer.byteLength(body) });
            res.end(body);
          }
        }, delayMs);
      });
    });
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });

  after(() => server.close());

  it('counts every request and every event, in both framings, with no errors', async () => {
    served = 0;
    delayMs = 5;
    const out = await runLoad(port, 10, 50, 300, 16);
    assert.equal(out.errors, 0);
    assert.ok(served >= 10, `only ${served} requests`);
    assert.equal(out.ttfb.length, served);
    assert.equal(out.chunks, 2 * served);
    assert.ok(out.chunksInWindow > 0 && out.chunksInWindow <= out.chunks);
  });

  it('measures the time to the first body byte from the request', async () => {
    delayMs = 40;
    const out = await runLoad(port, 4, 0, 100, 16);
    assert.equal(out.errors, 0);
    for (const t of out.ttfb) assert.ok(t >= 39 && t < 1000, `ttfb ${t} ms for a 40 ms delay`);
    assert.ok(out.slowestRequestMs >= 39, `slowest request ${out.slowestRequestMs} ms`);
    assert.ok(out.slowestConnectMs >= 0 && out.slowestConnectMs < 1000, `slowest connect ${out.slowestConnectMs} ms`);
  });

  it('gives the slowest request from its first byte sent to its last received, past its first byte', async () => {
    delayMs = 0;
    tailMs = 200;
    const out = await runLoad(port, 2, 0, 50, 16);
    tailMs = 0;
    assert.equal(out.errors, 0);
    assert.ok(out.slowestRequestMs >= 199, `slowest request ${out.slowestRequestMs} ms for a 200 ms tail`);
    assert.ok(Math.min(...out.ttfb) < 150, `ttfb ${out.ttfb.join(', ')} ms`);
  });

  it('counts a status other than 200 as an error', async () => {
    const refusing = http.createServer((req, res) => {
      req.resume();
      res.writeHead(503, { 'content-length': '0' }).end();
    });
    await new Promise<void>((r) => refusing.listen(0, '127.0.0.1', r));
    const out = await runLoad((refusing.address() as { port: number }).port, 2, 0, 50, 16);
    refusing.close();
    assert.ok(out.errors >= 2, `${out.errors} errors`);
  });
});
