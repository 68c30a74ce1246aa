// The proxy as a newcomer runs it (the built CLI, env vars, stdout), and the edges of its
// forwarding: hop-by-hop headers, other routes and methods, per-event delivery, the file sink
// with rotation, the keyed prompt hash, and a malformed request line.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSimOpenAi } from '../../agent/demo/sim-openai.js';
import { hashKey } from '../../agent/proxy/tenants.js';
import { eventually, getText, spawnAgent, startServer, tempDir } from '../helpers.js';
import { ACME_KEY, post, startHarness, sumOf, type Harness } from './harness.js';

/** The first request line (`"event":"inference"`) the agent wrote on stdout. */
function requestLine(agent: { output(): string }): Promise<string> {
  return eventually(
    async () =>
      agent
        .output()
        .split('\n')
        .find((l) => l.includes('"event":"inference"')),
    5000,
    'a request line on stdout',
  );
}

describe('proxy from the built CLI', () => {
  it('INFERTEL_PROXY_LISTEN and INFERTEL_PROXY_TARGET turn it on; request lines on stdout carry event and request_id', async () => {
    const engine = await startSimOpenAi({ models: ['cli-model'], ttftMs: 5, itlMs: 2, tokens: 4 });
    const dir = tempDir('infertel-proxy-');
    const config = join(dir, 'config.yaml');
    writeFileSync(config, `tenants:\n  - name: acme\n    keys: ["${hashKey(ACME_KEY)}"]\nrequestLog:\n  sampleSuccess: 1\n`);
    const agent = await spawnAgent(['--config', config], { INFERTEL_PROXY_LISTEN: '127.0.0.1:0', INFERTEL_PROXY_TARGET: engine.url });
    try {
      const r = await post(
        `${agent.proxyBase}/v1/chat/completions`,
        { model: 'cli-model', stream: true, messages: [{ role: 'user', content: 'x' }] },
        { authorization: `Bearer ${ACME_KEY}` },
      );
      assert.equal(r.status, 200);
      const line = await requestLine(agent);
      const doc = JSON.parse(line);
      assert.equal(doc.request_id, r.headers.get('x-request-id'));
      assert.equal(doc.tenant, 'acme');
      assert.equal(doc.tokens_generated, 4);
      const metrics = (await getText(`${agent.base}/metrics`)).body;
      assert.equal(sumOf(metrics, 'inference_requests_total', { tenant: 'acme', model: 'cli-model' }), 1);
      assert.ok(!agent.output().includes(ACME_KEY));
    } finally {
      await agent.stop();
      await engine.close();
    }
  });

  it('a request that arrives before the engine has listed its models is labelled by the list once it comes', async () => {
    // The engine lists its models 1.5 s late (inside the proxy's 2 s fetch timeout); the proxy listens before the list comes, as at a pod's start.
    let listed = false;
    const engine = await startServer((req, res) => {
      if (req.url === '/v1/models') {
        setTimeout(() => {
          listed = true;
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ object: 'list', data: [{ id: 'slow-model' }] }));
        }, 1500);
        return;
      }
      req.resume();
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ choices: [{ text: 'a' }], usage: { prompt_tokens: 3, completion_tokens: 1 } }));
      });
    });
    const dir = tempDir('infertel-early-');
    const config = join(dir, 'config.yaml');
    writeFileSync(config, 'requestLog:\n  sampleSuccess: 1\n');
    const agent = await spawnAgent(['--config', config, '--proxy-listen', '127.0.0.1:0', '--proxy-target', engine.url]);
    try {
      const answered = await eventually(
        async () => {
          try {
            return await post(`${agent.proxyBase}/v1/completions`, { model: 'slow-model', prompt: 'x' });
          } catch {
            return undefined;
          }
        },
        1400,
        'the proxy answering',
      );
      assert.equal(answered.status, 200);
      assert.equal(listed, false, 'the request was answered before the engine listed its models');
      const line = await requestLine(agent);
      assert.equal(JSON.parse(line).model, 'slow-model');
      const metrics = (await getText(`${agent.base}/metrics`)).body;
      assert.equal(sumOf(metrics, 'inference_requests_total', { model: 'slow-model' }), 1);
    } finally {
      await agent.stop();
      await engine.close();
    }
  });

  it('--proxy-listen without --proxy-target is a configuration error naming the key', async () => {
    const { runCli } = await import('../helpers.js');
    const r = runCli(['run', '--proxy-listen', '127.0.0.1:0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /proxy\.target: required when proxy\.listen is set/);
  });
});

describe('proxy forwarding edges', () => {
  let h: Harness;
  let echo: Awaited<ReturnType<typeof startServer>>;
  let seen: http.IncomingHttpHeaders | undefined;
  let seenBody = '';
  before(async () => {
    echo = await startServer((req, res) => {
      seen = req.headers;
      let b = '';
      req.on('data', (d) => (b += d));
      req.on('end', () => {
        seenBody = b;
        res
          .writeHead(418, { 'x-engine': 'yes', connection: 'x-private', 'x-private': 'hop', 'content-type': 'text/plain' })
          .end(`teapot ${req.method} ${req.url}`);
      });
    });
    h = await startHarness({ proxy: { target: echo.url } });
  });
  after(async () => {
    await h.close();
    await echo.close();
  });

  it('drops hop-by-hop fields both ways (and those Connection names), adds Via, keeps the rest, the method, path, body and status', async () => {
    const res = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.request(
        `${h.proxy}/some/other/path?q=1`,
        {
          method: 'PUT',
          headers: {
            connection: 'keep-alive, x-hop',
            'x-hop': 'must-not-pass',
            'keep-alive': 'timeout=5',
            'proxy-authorization': 'Basic c2VjcmV0',
            te: 'trailers',
            'x-end-to-end': 'kept',
            'content-type': 'application/octet-stream',
          },
        },
        (r) => {
          let body = '';
          r.on('data', (d) => (body += d));
          r.on('end', () => resolve({ status: r.statusCode!, headers: r.headers, body }));
        },
      );
      req.on('error', reject);
      req.end('raw body bytes');
    });
    assert.equal(res.status, 418);
    assert.equal(res.body, 'teapot PUT /some/other/path?q=1');
    assert.equal(res.headers['x-engine'], 'yes');
    assert.equal(res.headers['x-private'], undefined, 'a field the engine named in Connection');
    assert.equal(res.headers.via, '1.1 infertel');
    assert.equal(seenBody, 'raw body bytes');
    for (const hop of ['x-hop', 'keep-alive', 'proxy-authorization', 'te']) assert.equal(seen![hop], undefined, hop);
    assert.equal(seen!['x-end-to-end'], 'kept');
    assert.equal(seen!.via, '1.1 infertel');
    const m = await h.metrics();
    assert.equal(sumOf(m, 'inference_requests_total', { route: 'other', code: '4xx' }), 1);
  });

  it('a malformed request line gets 400 from the HTTP parser and the proxy keeps answering', async () => {
    const reply = await new Promise<string>((resolve) => {
      const s = net.connect(Number(new URL(h.proxy).port), '127.0.0.1', () =>
        s.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\rX-Injected: 1\r\n\r\n'),
      );
      let out = '';
      s.on('data', (d) => (out += d));
      s.on('close', () => resolve(out));
      s.on('error', () => resolve(out));
    });
    assert.match(reply, /^HTTP\/1\.1 400/);
    assert.equal(seen?.['x-injected'], undefined);
    const ok = await post(`${h.proxy}/v1/completions`, { prompt: 'x' });
    assert.equal(ok.status, 418);
  });
});

describe('proxy delivery and sinks', () => {
  it('each SSE event reaches the client as the engine sends it, not at the end', async () => {
    const h = await startHarness({}, { ttftMs: 10, itlMs: 400, tokens: 3 });
    try {
      const res = await fetch(`${h.proxy}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'sim-llama', stream: true, messages: [{ role: 'user', content: 'x' }] }),
      });
      const reader = res.body!.getReader();
      const arrivals: number[] = [];
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const piece = Buffer.from(value).toString();
        text += piece;
        for (let i = 0; i < (piece.match(/"content":"[^"]/g) ?? []).length; i++) arrivals.push(performance.now());
      }
      assert.equal(arrivals.length, 3, text);
      // The engine sends them 400 ms apart; buffered, they would arrive together (the margin is for a loaded machine).
      assert.ok(arrivals[1]! - arrivals[0]! > 150 && arrivals[2]! - arrivals[1]! > 150, JSON.stringify(arrivals));
    } finally {
      await h.close();
    }
  });

  it('requestLog.path writes to a file rotated by size (pino-roll), and prompt_hash is the HMAC under the secret file', async () => {
    const dir = tempDir('infertel-reqlog-');
    const secret = 'a-deployment-secret-of-32-bytes!';
    writeFileSync(join(dir, 'secret'), secret);
    const h = await startHarness({ requestLog: { path: join(dir, 'requests.log'), maxSize: '1k', maxFiles: 3, hashSecretFile: join(dir, 'secret') } });
    try {
      const prompt = 'the same prompt every time';
      for (let i = 0; i < 12; i++) await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt });
      await h.agent.stop();
      const files = await eventually(
        async () => {
          const f = readdirSync(dir).filter((n) => n.startsWith('requests'));
          return f.length >= 2 && f;
        },
        5000,
        'rotated files',
      );
      assert.ok(files.length <= 4, files.join(','));
      const lines = files.flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean)).map((l) => JSON.parse(l));
      assert.ok(lines.length >= 3 && lines.every((l) => l.event === 'inference'));
      const want = `hmac-sha256:${createHmac('sha256', secret).update(prompt).digest('hex')}`;
      assert.ok(lines.every((l) => l.prompt_hash === want));
      assert.ok(!readdirSync(dir).some((f) => readFileSync(join(dir, f), 'utf8').includes(prompt)));
    } finally {
      await h.engine.close();
    }
  });

  it('a missing hash secret file fails at start with the key path', async () => {
    await assert.rejects(startHarness({ requestLog: { hashSecretFile: '/nonexistent/secret' } }), /requestLog\.hashSecretFile/);
  });
});
