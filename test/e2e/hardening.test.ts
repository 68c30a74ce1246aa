// Every outbound request is bounded, and no secret reaches a log line, /readyz or /metrics.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FetchError } from '../../agent/net/http-client.js';
import { tgi } from '../../agent/sources/engines/tgi.js';
import { eventually, getText, sampleValue, spawnAgent, startServer, tempDir } from '../helpers.js';

async function lookupFails(handler: Parameters<typeof startServer>[0]): Promise<{ err: unknown; ms: number; rssGrowth: number }> {
  const server = await startServer(handler);
  const rss0 = process.memoryUsage().rss;
  const t0 = Date.now();
  try {
    await tgi.info(`${server.url}/metrics`, new AbortController().signal);
    return { err: undefined, ms: Date.now() - t0, rssGrowth: process.memoryUsage().rss - rss0 };
  } catch (err) {
    return { err, ms: Date.now() - t0, rssGrowth: process.memoryUsage().rss - rss0 };
  } finally {
    await server.close();
  }
}

describe('e2e: every outbound request is guarded (TGI /info as the example)', () => {
  it('a gzip bomb stops at the body cap, counted after decompression', async () => {
    const bomb = gzipSync(Buffer.alloc(200 * 1024 * 1024, 32));
    const r = await lookupFails((_req, res) => res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' }).end(bomb));
    assert.ok(r.err instanceof FetchError && r.err.kind === 'body_too_large', String(r.err));
    assert.ok(r.rssGrowth < 64 * 1024 * 1024, `RSS grew ${Math.round(r.rssGrowth / 1048576)} MiB`);
  });

  it('a slow drip is cut at the overall deadline', async () => {
    const r = await lookupFails((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      const t = setInterval(() => res.write(' '), 100);
      res.on('close', () => clearInterval(t));
    });
    assert.ok(r.err instanceof FetchError && r.err.kind === 'timeout', String(r.err));
    assert.ok(r.ms < 3500, `${r.ms} ms`);
  });

  it('a redirect to another port is not followed', async () => {
    let hits = 0;
    const elsewhere = await startServer((_req, res) => {
      hits++;
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"model_id":"evil"}');
    });
    try {
      const r = await lookupFails((_req, res) => res.writeHead(302, { Location: `${elsewhere.url}/info` }).end());
      assert.ok(r.err instanceof FetchError && r.err.kind === 'redirect', String(r.err));
      assert.equal(hits, 0);
    } finally {
      await elsewhere.close();
    }
  });
});

describe('e2e: secrets stay out of logs, /readyz and /metrics', () => {
  it('URL credentials and the content of rejected lines are never shown', async () => {
    const leaky = await startServer((_req, res) =>
      res
        .writeHead(200, { 'Content-Type': 'text/plain' })
        .end('# TYPE tgi_queue_size gauge\ntgi_queue_size 1\nleak{api_key="sk-CANARY-1"} 0x1F\nleak2{note="sk-CANARY-2"} 1 # {trace_id="x"} 1\n'),
    );
    const closed = await startServer(() => {});
    const closedUrl = `http://admin:s3cret-CANARY@127.0.0.1:${closed.port}/metrics`;
    await closed.close();
    const dir = tempDir('infertel-sec-');
    const file = join(dir, 'c.yaml');
    writeFileSync(
      file,
      JSON.stringify({
        interval: '300ms',
        upstreams: [
          { name: 'leaky', url: `http://user:s3cret-CANARY@127.0.0.1:${leaky.port}/metrics`, flavor: 'tgi', model: 'm' },
          { url: closedUrl, flavor: 'tgi', model: 'm' },
        ],
      }),
    );
    const agent = await spawnAgent(['--config', file]);
    try {
      const body = await eventually(
        async () => {
          const b = (await getText(`${agent.base}/metrics`)).body;
          return sampleValue(b, 'infertel_rejected_lines_total', 'upstream="leaky"', 'reason="bad_value"') ? b : undefined;
        },
        8000,
        'rejected lines counted',
      );
      assert.equal(
        sampleValue(body, 'infertel_rejected_lines_total', 'upstream="leaky"', 'reason="exemplar_in_text"'),
        sampleValue(body, 'infertel_rejected_lines_total', 'upstream="leaky"', 'reason="bad_value"'),
      );
      const readyz = (await getText(`${agent.base}/readyz`)).body;
      await new Promise((r) => setTimeout(r, 500));
      for (const [where, text] of [
        ['logs', agent.output()],
        ['/readyz', readyz],
        ['/metrics', body],
      ] as const) {
        for (const secret of ['s3cret-CANARY', 'sk-CANARY-1', 'sk-CANARY-2']) assert.ok(!text.includes(secret), `${secret} in ${where}`);
      }
      assert.match(agent.output(), /"url":"http:\/\/127\.0\.0\.1:\d+\/metrics"/, 'the URL is logged without its credentials');
      assert.match(agent.output(), /first at line 3: bad_value/, 'the position and reason are logged');
    } finally {
      await agent.stop();
      await leaky.close();
    }
  });
});
