// End to end: the built CLI against real HTTP servers on loopback.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { startSimulatedEngines, type DemoUpstreams } from '../../agent/demo/demo.js';
import { TGI_DURATION_LE } from '../../agent/demo/sim-tgi.js';
import { parseExposition } from '../../agent/parse/exposition.js';
import {
  eventually,
  getText,
  promtoolCheckMetrics,
  promtoolPath,
  sampleValue,
  REPO_ROOT,
  sleep,
  spawnAgent,
  startServer,
  type AgentProcess,
  type TestServer,
  tempDir,
} from '../helpers.js';

function writeConfig(obj: unknown): string {
  const dir = tempDir('infertel-e2e-');
  const f = join(dir, 'config.yaml');
  writeFileSync(f, JSON.stringify(obj));
  return f;
}

/** NODE_OPTIONS of the image (Dockerfile), read from it so the two cannot drift apart. */
const IMAGE_NODE_OPTIONS = /NODE_OPTIONS="([^"]+)"/.exec(readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8'))![1]!;

describe('e2e: demo engines (vLLM V1 with 2 engines, TGI v3)', () => {
  let engines: DemoUpstreams;
  let agent: AgentProcess;
  before(async () => {
    engines = await startSimulatedEngines(0);
    agent = await spawnAgent(['--upstream', `${engines.vllm.url}/metrics`, '--upstream', `auto=${engines.tgi.url}/metrics`, '--interval', '300ms']);
    await eventually(async () => (await getText(`${agent.base}/readyz`)).status === 200, 10_000, 'readyz');
    await sleep(800);
  });
  after(async () => {
    await agent?.stop();
    await engines?.close();
  });

  it('serves canonical series from both engines with the explicit text content type', async () => {
    const r = await getText(`${agent.base}/metrics`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    assert.ok(sampleValue(r.body, 'inference_active_streams', 'model="meta-llama/Llama-3.1-8B-Instruct"') !== undefined);
    assert.ok(
      sampleValue(r.body, 'inference_requests_total', 'model="mistralai/Mistral-7B-Instruct-v0.3"', 'code="2xx"')! >= 0,
      'TGI model learned from /info',
    );
    assert.match(r.body, /\ninfertel_upstream_info\{upstream="127\.0\.0\.1:\d+",flavor="vllm",version="0\.11\.0"\} 1\n/);
    assert.match(r.body, /\ninfertel_upstream_info\{upstream="127\.0\.0\.1:\d+",flavor="tgi",version="3\.3\.6"\} 1\n/);
    assert.match(r.body, /\nvllm:num_requests_running\{engine="0",model_name=/, 'passthrough keeps upstream names');
    assert.match(r.body, new RegExp(`\\ntgi_request_duration_bucket\\{le="${TGI_DURATION_LE[0]}"\\}`), 'passthrough keeps le strings');
    assert.match(r.body, /\ninfertel_build_info\{version="\d+\.\d+\.\d+"\} 1\n/);
    assert.match(r.body, /\ninfertel_process_resident_memory_bytes /);
    assert.equal(parseExposition(r.body).errors, 0);
  });

  it('canonical part passes promtool check metrics except the _ms unit note', { skip: !promtoolPath() && 'promtool not on PATH' }, async () => {
    const body = (await getText(`${agent.base}/metrics`)).body;
    const canonicalOnly = body
      .split(/(?=^# HELP )/m)
      .filter((block) => !/^# HELP (vllm:|tgi_|http_)/.test(block))
      .join('');
    const r = promtoolCheckMetrics(canonicalOnly);
    for (const f of r.findings) assert.match(f, /abbreviated units$/, f);
    // 3: lint findings only; 0: none; 1 would be a parse error.
    assert.ok(r.code === (r.findings.length ? 3 : 0), `promtool exited ${r.code}`);
  });

  it('gzip when accepted', async () => {
    const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${agent.base}/metrics`, { headers: { 'Accept-Encoding': 'gzip' } }, resolve));
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    assert.equal(res.headers['content-encoding'], 'gzip');
    assert.match(gunzipSync(Buffer.concat(chunks)).toString(), /inference_active_streams/);
  });

  it('OpenMetrics when Accept asks for it, ending in one # EOF', async () => {
    const r = await getText(`${agent.base}/metrics`, { Accept: 'application/openmetrics-text; version=1.0.0' });
    assert.equal(r.headers.get('content-type'), 'application/openmetrics-text; version=1.0.0; charset=utf-8');
    assert.ok(r.body.endsWith('# EOF\n'));
    assert.equal(r.body.match(/# EOF/g)!.length, 1);
    assert.match(r.body, /\n# TYPE tokens_generated counter\ntokens_generated_total\{/);
    assert.ok(!/ untyped$/m.test(r.body));
  });

  it('JSON summary by Accept or ?format=json', async () => {
    for (const r of [await getText(`${agent.base}/metrics?format=json`), await getText(`${agent.base}/metrics`, { Accept: 'application/json' })]) {
      const s = JSON.parse(r.body);
      for (const k of [
        'requests_total',
        'errors_total',
        'tokens_generated_total',
        'prompt_tokens_total',
        'average_latency_ms',
        'p95_latency_ms',
        'average_tokens_per_second',
        'last_request_at',
      ])
        assert.ok(k in s, k);
      assert.ok(s.requests_total > 0);
      assert.ok(s.p95_latency_ms > 0);
      assert.deepEqual(s.gpu.devices, []);
      assert.equal(s.gpu.nvml_unavailable, true);
    }
  });

  it('healthz and readyz', async () => {
    assert.equal((await getText(`${agent.base}/healthz`)).status, 200);
    const r = await getText(`${agent.base}/readyz`);
    assert.equal(r.status, 200);
    assert.equal(Object.keys(JSON.parse(r.body).upstreams).length, 2);
  });

  it('logs state changes as JSON lines', () => {
    const lines = agent
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    assert.ok(lines.length > 0);
    const parsed = lines.map((l) => JSON.parse(l));
    assert.ok(parsed.some((l) => l.msg === 'upstream up'));
    // Only changes are logged: each upstream is up once, and again only after a logged down (a
    // scrape can time out on a loaded machine; that is a change too).
    for (const upstream of new Set(parsed.filter((l) => l.msg === 'upstream up').map((l) => l.upstream))) {
      const ups = parsed.filter((l) => l.upstream === upstream && l.msg === 'upstream up').length;
      const downs = parsed.filter((l) => l.upstream === upstream && l.msg === 'upstream down').length;
      assert.ok(ups >= 1 && ups <= downs + 1, `${upstream}: ${ups} up, ${downs} down`);
    }
    assert.equal(new Set(parsed.filter((l) => l.msg === 'upstream up').map((l) => l.upstream)).size, 2);
  });

  it('SIGTERM stops the agent within 1 s', async () => {
    const r = await agent.stop('SIGTERM');
    assert.equal(r.code, 0);
    assert.ok(r.ms < 1000, `${r.ms} ms`);
  });
});

// How the agent treats each kind of failing upstream is tested in-process (test/agent.test.ts,
// "bad upstreams never take the agent down") and each failure's outcome against real servers
// (test/sources/engine-source.test.ts). What needs the process is its memory under the image's
// heap flags while an upstream keeps bringing new label values.
describe('e2e: a label bomb under the image heap flags', () => {
  let agent: AgentProcess;
  let engines: DemoUpstreams;
  let bombServer: TestServer;
  let rounds = 0;
  before(async () => {
    engines = await startSimulatedEngines(0);
    bombServer = await startServer((req, res) => {
      if (req.url === '/info') return void res.writeHead(404).end();
      rounds++;
      const lines: string[] = ['# TYPE tgi_request_success counter', `tgi_request_success ${rounds}`, '# TYPE tgi_batch_concat counter'];
      for (let i = 0; i < 50_000; i++) lines.push(`tgi_batch_concat{reason="r${rounds}-${i}"} 1`);
      res.writeHead(200).end(`${lines.join('\n')}\n`);
    });
    const upstreams = [
      { name: 'healthy', url: `${engines.vllm.url}/metrics` },
      // A 2 MB scrape of 50,000 new label values takes about 0.26 s on an idle machine: at the
      // agent's 500 ms interval its timeout would be 450 ms, which a loaded CI machine has passed.
      { name: 'bomb', url: `${bombServer.url}/metrics`, flavor: 'tgi', model: 'm', interval: '1s', timeout: '900ms' },
    ];
    const file = writeConfig({ interval: '500ms', upstreams, limits: { seriesPerMetric: 500 } });
    // The image's heap flags (Dockerfile NODE_OPTIONS): the RSS bound below is the one the chart's
    // memory limit is set from, on any Node version.
    agent = await spawnAgent(['--config', file], { NODE_OPTIONS: IMAGE_NODE_OPTIONS });
    await sleep(6000);
  });
  after(async () => {
    await agent?.stop();
    await bombServer?.close();
    await engines?.close();
  });

  it('series capped, overflow counted, RSS bounded, the healthy upstream still served', async () => {
    const body = (await getText(`${agent.base}/metrics`)).body;
    const bombSeries = body.split('\n').filter((l) => l.startsWith('tgi_batch_concat{'));
    assert.ok(bombSeries.length <= 501, `${bombSeries.length} series`);
    assert.ok(sampleValue(body, 'tgi_batch_concat', 'otel_metric_overflow="true"')! >= 49_000);
    assert.ok(sampleValue(body, 'infertel_series_overflow_total', 'metric="tgi_batch_concat"')! >= 49_500);
    const rss = sampleValue(body, 'infertel_process_resident_memory_bytes')!;
    assert.ok(rounds >= 4, `${rounds} bomb scrapes`);
    assert.ok(rss < 300 * 1024 * 1024, `RSS ${Math.round(rss / 1048576)} MiB after ${rounds} bomb scrapes of 50k new label values`);
    assert.equal(sampleValue(body, 'infertel_upstream_up', 'upstream="bomb"'), 1);
    assert.equal(sampleValue(body, 'infertel_upstream_up', 'upstream="healthy"'), 1);
    assert.ok(sampleValue(body, 'inference_active_streams', 'model="meta-llama/Llama-3.1-8B-Instruct"') !== undefined);
  });
});

describe('e2e: tracing', () => {
  it('exports an infertel.scrape span per cycle over OTLP/HTTP', async () => {
    const bodies: string[] = [];
    const collector = await startServer((req, res) => {
      let b = '';
      req.on('data', (d) => (b += d));
      req.on('end', () => {
        bodies.push(`${req.url} ${b}`);
        res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
      });
    });
    const engine = await startServer((_req, res) => res.writeHead(200).end('# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n'));
    const agent = await spawnAgent(['--upstream', `tgi=${engine.url}/metrics`, '--model', 'm', '--interval', '200ms'], {
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
    });
    try {
      const got = await eventually(async () => bodies.find((b) => b.includes('infertel.scrape')), 8000, 'a span at the collector');
      assert.match(got, /^\/v1\/traces /);
      for (const attr of ['infertel.upstream', 'infertel.flavor', 'infertel.series', 'infertel.bytes', 'infertel.outcome']) assert.ok(got.includes(attr), attr);
    } finally {
      await agent.stop();
      await engine.close();
      await collector.close();
    }
  });
});

describe('e2e: environment', () => {
  it('INFERTEL_UPSTREAMS and INFERTEL_MODEL configure the agent', async () => {
    const engine = await startServer((_req, res) => res.writeHead(200).end('# TYPE tgi_request_success counter\ntgi_request_success 7\n'));
    const agent = await spawnAgent([], { INFERTEL_UPSTREAMS: `tgi=${engine.url}/metrics`, INFERTEL_MODEL: 'env-model', INFERTEL_INTERVAL: '200ms' });
    try {
      const v = await eventually(
        async () => sampleValue((await getText(`${agent.base}/metrics`)).body, 'inference_requests_total', 'model="env-model"'),
        5000,
        'series',
      );
      assert.equal(v, 7);
    } finally {
      await agent.stop();
      await engine.close();
    }
  });
});

describe('e2e: scraping manners', () => {
  it('sends Accept-Encoding: identity to loopback upstreams and a bearer token read from a file', async () => {
    const seen: Array<{ enc: string | undefined; auth: string | undefined }> = [];
    const engine = await startServer((req, res) => {
      seen.push({ enc: req.headers['accept-encoding'], auth: req.headers.authorization });
      if (req.headers.authorization !== 'Bearer s3cret') return void res.writeHead(401).end('no');
      res.writeHead(200).end('# TYPE tgi_queue_size gauge\ntgi_queue_size 4\n');
    });
    const dir = tempDir('infertel-auth-');
    writeFileSync(join(dir, 'token'), 's3cret\n');
    const file = writeConfig({
      interval: '200ms',
      upstreams: [{ name: 'tgi', url: `${engine.url}/metrics`, flavor: 'tgi', model: 'm', auth: { bearerTokenFile: join(dir, 'token') } }],
    });
    const agent = await spawnAgent(['--config', file]);
    try {
      await eventually(
        async () => sampleValue((await getText(`${agent.base}/metrics`)).body, 'inference_queue_depth', 'model="m"') === 4,
        5000,
        'authorised scrape',
      );
      assert.equal(seen[0]!.enc, 'identity');
      assert.equal(seen[0]!.auth, 'Bearer s3cret');
      writeFileSync(join(dir, 'token'), 'rotated');
      await eventually(
        async () => sampleValue((await getText(`${agent.base}/metrics`)).body, 'infertel_scrape_errors_total', 'upstream="tgi"', 'reason="http_status"')! >= 1,
        5000,
        'a rotated token is read again',
      );
    } finally {
      await agent.stop();
      await engine.close();
    }
  });
});

describe('e2e: TLS and basic auth toward the upstream', { skip: spawnSync('openssl', ['version']).status !== 0 && 'openssl not on PATH' }, () => {
  it('scrapes an HTTPS upstream with a CA file and basic auth read from a file', async () => {
    const dir = tempDir('infertel-tls-');
    const r = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    writeFileSync(join(dir, 'password'), 'hunter2\n');
    const server = https.createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (req, res) => {
      if (req.headers.authorization !== `Basic ${Buffer.from('infertel:hunter2').toString('base64')}`) return void res.writeHead(401).end();
      res.writeHead(200).end('# TYPE tgi_request_success counter\ntgi_request_success 9\n');
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    const port = (server.address() as { port: number }).port;
    const file = writeConfig({
      interval: '200ms',
      upstreams: [
        {
          name: 'secure',
          url: `https://127.0.0.1:${port}/metrics`,
          flavor: 'tgi',
          model: 'm',
          auth: { basic: { username: 'infertel', passwordFile: join(dir, 'password') } },
          tls: { caFile: join(dir, 'cert.pem') },
        },
      ],
    });
    const agent = await spawnAgent(['--config', file]);
    try {
      const v = await eventually(
        async () => sampleValue((await getText(`${agent.base}/metrics`)).body, 'inference_requests_total', 'model="m"', 'code="2xx"'),
        5000,
        'TLS scrape',
      );
      assert.equal(v, 9);
    } finally {
      await agent.stop();
      server.closeAllConnections();
      server.close();
    }
  });
});
