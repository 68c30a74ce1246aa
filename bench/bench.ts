// `npm run bench`: parser throughput, cycle CPU, /metrics latency and RSS, each next to an anchor
// measured in the same run. Prints a Markdown report (the README quotes it).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import axios from 'axios';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../agent/config/load.js';
import { createLogger } from '../agent/logger.js';
import { parseExposition } from '../agent/parse/exposition.js';
import { asOpenMetrics, payload, sglangPayload, type Payload } from './payloads.js';
import { benchGpu } from './gpu.js';
import { IMAGE_NODE_FLAGS } from './node-flags.js';
import { pct, spawnNode } from './stats.js';
import { benchProxy } from './proxy.js';
import { benchLimits } from './limits.js';
import { agentDeps } from '../agent/runtime.js';
import { EfficiencyJoin } from '../agent/normalize/efficiency.js';

const CLI = fileURLToPath(new URL('../agent/main.js', import.meta.url));
const HERE = fileURLToPath(new URL('.', import.meta.url));
const lines: string[] = [];
const say = (s = '') => {
  lines.push(s);
  process.stdout.write(`${s}\n`);
};

const f1 = (v: number) => v.toFixed(1);
const f2 = (v: number) => v.toFixed(2);

/** The casual approach, as an anchor: split lines, one regex per sample, split labels. */
function regexParse(text: string): number {
  const re = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  let n = 0;
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = re.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2])
      for (const kv of m[2].split('",')) {
        const i = kv.indexOf('=');
        labels[kv.slice(0, i)] = kv.slice(i + 2).replace(/"$/, '');
      }
    if (Number.isFinite(Number(m[3]))) n++;
  }
  return n;
}

function throughput(buf: Buffer, fn: (b: Buffer) => unknown, ms = 2000): number {
  for (let i = 0; i < 5; i++) fn(buf);
  let iters = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    fn(buf);
    iters++;
  }
  return (buf.length * iters) / ((performance.now() - t0) / 1000) / 1e6;
}

async function servePayload(p: Payload): Promise<{ url: string; child: ChildProcess }> {
  const dir = mkdtempSync(join(tmpdir(), 'infertel-bench-'));
  const file = join(dir, 'payload.prom');
  writeFileSync(file, p.text);
  const { child, line } = await spawnNode([join(HERE, 'serve-payload.js'), file]);
  return { url: `http://127.0.0.1:${line}/metrics`, child };
}

async function benchParse(): Promise<void> {
  const medium = payload('medium', 5, 6);
  const buf = Buffer.from(medium.text);
  const samples = parseExposition(medium.text).sampleCount;
  say(`### Parser (medium preset: ${(buf.length / 1e6).toFixed(2)} MB, ${samples} samples; ${medium.source})`);
  say();
  const ours = throughput(buf, (b) => parseExposition(b.toString('utf8')));
  const decode = throughput(buf, (b) => b.toString('utf8'));
  const regex = throughput(buf, (b) => regexParse(b.toString('utf8')));
  const omBuf = Buffer.from(asOpenMetrics(medium.text));
  const om = throughput(omBuf, (b) => parseExposition(b.toString('utf8'), 'openmetrics'));
  const sglang = Buffer.from(sglangPayload(8).text);
  const sg = throughput(sglang, (b) => parseExposition(b.toString('utf8')));
  say('| parser (UTF-8 decode included) | MB/s | ratio to ours (text) |');
  say('|---|---|---|');
  say(`| infertel parseExposition, text 0.0.4 | ${f1(ours)} | 1.00 |`);
  say(`| infertel parseExposition, the same payload as OpenMetrics | ${f1(om)} | ${f2(om / ours)} |`);
  say(`| infertel parseExposition, SGLang with 8 TP ranks (${(sglang.length / 1e3).toFixed(0)} kB) | ${f1(sg)} | ${f2(sg / ours)} |`);
  say(`| anchor: decode only (ceiling) | ${f1(decode)} | ${f2(decode / ours)} |`);
  say(`| anchor: split + regex per line | ${f1(regex)} | ${f2(regex / ours)} |`);
  say();
}

/** Cycles run before measuring: in the medium rows the JIT is still settling over the first ~50. */
const WARM_UP_CYCLES = 60;

async function benchCycle(): Promise<void> {
  say('### One collection cycle (fetch over loopback, parse, normalise, render), CPU per cycle');
  say();
  say(
    'The agent runs a cycle every few seconds for days, so the rows are measured after 60 warm-up cycles (the JIT has settled by then); the first 20 cycles of a fresh agent are reported apart.',
  );
  say();
  say('| payload | samples | cycle CPU p50 | cycle CPU p99 | first 20 cycles p50 | anchor: bare fetch CPU p50 | cycle / fetch | max event-loop delay |');
  say('|---|---|---|---|---|---|---|---|');
  const medium = payload('medium', 5, 6);
  const rows: Array<[string, Payload, 'vllm' | 'sglang', number]> = [
    ['single', payload('single', 1, 1), 'vllm', 300],
    ['medium', medium, 'vllm', 100],
    // Served with a text content type: the body's closing # EOF is what tells the format.
    ['medium as OpenMetrics', { ...medium, text: asOpenMetrics(medium.text) }, 'vllm', 100],
    ['SGLang, 8 TP ranks', sglangPayload(8), 'sglang', 300],
  ];
  for (const [name, p, flavor, n] of rows) {
    const { url, child } = await servePayload(p);
    const agent = new Agent(validateConfig({ listen: '127.0.0.1:0', upstreams: [{ url, flavor, interval: '1h', timeout: '10s' }] }), {
      log: createLogger('error'),
    });
    const u = agent.upstreams[0]!;
    const ac = new AbortController();
    const cpu: number[] = [];
    const fetchCpu: number[] = [];
    const loop = monitorEventLoopDelay({ resolution: 1 });
    const cold: number[] = [];
    for (let i = 0; i < WARM_UP_CYCLES; i++) {
      const c0 = process.cpuUsage();
      await agent.collect(u, ac.signal);
      const c = process.cpuUsage(c0);
      if (i < 20) cold.push((c.user + c.system) / 1000);
    }
    loop.enable();
    for (let i = 0; i < n; i++) {
      const c0 = process.cpuUsage();
      await agent.collect(u, ac.signal);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
    }
    loop.disable();
    const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < n; i++) {
      const c0 = process.cpuUsage();
      await axios.get(url, { responseType: 'arraybuffer', httpAgent, headers: { 'Accept-Encoding': 'identity' } });
      const c = process.cpuUsage(c0);
      fetchCpu.push((c.user + c.system) / 1000);
    }
    const samples = parseExposition(p.text, name.includes('OpenMetrics') ? 'openmetrics' : 'text').sampleCount;
    say(
      `| ${name} | ${samples} | ${f2(pct(cpu, 50))} ms | ${f2(pct(cpu, 99))} ms | ${f2(pct(cold, 50))} ms | ${f2(pct(fetchCpu, 50))} ms | ${f1(pct(cpu, 50) / pct(fetchCpu, 50))}x | ${f1(loop.max / 1e6)} ms |`,
    );
    child.kill();
    httpAgent.destroy();
  }
  say();
}

async function load(url: string, concurrency: number, ms: number): Promise<number[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const lat: number[] = [];
  const end = performance.now() + ms;
  const worker = async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await new Promise<void>((resolve, reject) => {
        http
          .get(url, { agent }, (res) => {
            res.on('data', () => {});
            res.on('end', () => resolve());
          })
          .on('error', reject);
      });
      lat.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return lat;
}

async function startAgentProcess(upstream: string): Promise<{ base: string; child: ChildProcess }> {
  const port = 19000 + Math.floor(Math.random() * 5000);
  // As the Dockerfile runs it: a small young generation keeps RSS down under scrape load.
  const child = spawn(
    process.execPath,
    ['--max-semi-space-size=2', CLI, 'run', '--listen', `127.0.0.1:${port}`, '--upstream', `vllm=${upstream}`, '--interval', '2s', '--log-level', 'error'],
    { stdio: 'ignore' },
  );
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) break;
    } catch {
      /* starting */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 2500));
  return { base, child };
}

/** RSS of a process that loads the same libraries as the agent and does nothing else. */
async function libraryFloorRss(): Promise<number> {
  const code =
    "for (const m of ['express','prom-client','axios','pino','zod','yaml','commander','@opentelemetry/api']) await import(m); setTimeout(() => { process.stdout.write(String(process.memoryUsage().rss) + '\\n'); }, 500);";
  const { child, line } = await spawnNode([...IMAGE_NODE_FLAGS, '--input-type=module', '-e', code]);
  child.kill();
  return Number(line) / 1048576;
}

async function benchServe(): Promise<void> {
  say('### `/metrics` latency under concurrent scrapers (agent in its own process; 3 s per row)');
  say();
  const floor = await libraryFloorRss();
  say(
    `RSS floor: a Node process that only imports the agent's runtime libraries (express, prom-client, axios, pino, zod, yaml, commander, OTel API) uses ${f1(floor)} MiB.`,
  );
  say();
  say(
    '| output series | scrapers | infertel p50 | infertel p99 | anchor: prom-client per request p50 | anchor p99 | anchor p99 / infertel p99 | agent RSS after the load |',
  );
  say('|---|---|---|---|---|---|---|---|');
  for (const [models, engines, concurrencies] of [
    [1, 5, [4, 16]],
    [5, 5, [4]],
  ] as const) {
    const p = payload('serve', models, engines);
    const { url, child } = await servePayload(p);
    const agent = await startAgentProcess(url);
    const body = await (await fetch(`${agent.base}/metrics`)).text();
    const series = body.split('\n').filter((l) => l && !l.startsWith('#')).length;
    const anchor = await spawnNode([join(HERE, 'anchor-promclient.js'), String(series)]);
    const anchorUrl = `http://127.0.0.1:${anchor.line}/metrics`;
    for (const c of concurrencies) {
      const ours = await load(`${agent.base}/metrics`, c, 3000);
      const theirs = await load(anchorUrl, c, 3000);
      const after = await (await fetch(`${agent.base}/metrics`)).text();
      const rss = Number(/\ninfertel_process_resident_memory_bytes (\S+)/.exec(after)?.[1] ?? NaN) / 1048576;
      say(
        `| ${series} | ${c} | ${f2(pct(ours, 50))} ms | ${f2(pct(ours, 99))} ms | ${f2(pct(theirs, 50))} ms | ${f2(pct(theirs, 99))} ms | ${f1(pct(theirs, 99) / pct(ours, 99))}x | ${f1(rss)} MiB |`,
      );
    }
    agent.child.kill();
    anchor.child.kill();
    child.kill();
  }
  say();
}

/**
 * The worst cases the memory budget is set from: an engine that brings 100,000 label values
 * never seen before every second, and one that exports 200 families of 2,000 series (400,000,
 * eight times the total cap). The agent runs as the image runs it; RSS is sampled every 500 ms.
 */
async function benchWorst(): Promise<void> {
  say(`### Worst case (agent in its own process with the image's Node flags \`${IMAGE_NODE_FLAGS.join(' ')}\`, 4 scrapers on /metrics, 20 s per row)`);
  say();
  say('| upstream | body per scrape | peak RSS | RSS at the end | /metrics p50 | /metrics p99 | upstream up at the end |');
  say('|---|---|---|---|---|---|---|');
  const rows = [
    ['bomb: 100k new label values per second', ['bomb', '100000'], '1s'],
    ['wide: 125 families x 2,000 series (just under the 8 MiB body cap), 5 s interval', ['wide', '125', '2000'], '5s'],
  ] as const;
  for (const [label, args, interval] of rows) {
    const server = await spawnNode([join(HERE, 'serve-bomb.js'), ...args]);
    const url = `http://127.0.0.1:${server.line}/metrics`;
    const size = (await (await fetch(url)).arrayBuffer()).byteLength;
    const port = 19000 + Math.floor(Math.random() * 5000);
    const child = spawn(
      process.execPath,
      [
        ...IMAGE_NODE_FLAGS,
        CLI,
        'run',
        '--listen',
        `127.0.0.1:${port}`,
        '--upstream',
        `tgi=${url}`,
        '--model',
        'm',
        '--interval',
        interval,
        '--log-level',
        'error',
      ],
      { stdio: 'ignore' },
    );
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 100; i++) {
      try {
        if ((await fetch(`${base}/healthz`)).ok) break;
      } catch {
        /* starting */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const rss: number[] = [];
    const sampler = setInterval(() => {
      try {
        rss.push(Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024);
      } catch {
        /* exited */
      }
    }, 500);
    const lat = await load(`${base}/metrics`, 4, 20_000);
    clearInterval(sampler);
    const last = await (await fetch(`${base}/metrics`)).text();
    const up = /\ninfertel_upstream_up\{[^}]*\} (\S+)/.exec(last)?.[1] ?? '?';
    say(
      `| ${label} | ${f1(size / 1048576)} MiB | ${f1(Math.max(...rss))} MiB | ${f1(rss[rss.length - 1] ?? NaN)} MiB | ${f2(pct(lat, 50))} ms | ${f2(pct(lat, 99))} ms | ${up} |`,
    );
    child.kill();
    server.child.kill();
  }
  say();
}

/** CPU seconds a process has used (utime + stime from /proc). */
function processCpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** `pollers` clients each asking `path` once a second (as the page's fallback would), for `ms`. */
async function poll(url: string, pollers: number, ms: number): Promise<number[]> {
  const lat: number[] = [];
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: pollers }, async (_, i) => {
      await new Promise((r) => setTimeout(r, (1000 / pollers) * i));
      while (performance.now() < end) {
        const t0 = performance.now();
        await (await fetch(url)).arrayBuffer();
        lat.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }),
  );
  return lat;
}

async function benchStatus(): Promise<void> {
  say('### Status page (agent in its own process, medium payload, 2 s interval, 10 s per row)');
  say();
  const ui = join(HERE, '../../ui');
  const uplot = join(HERE, '../../node_modules/uplot/dist');
  const files = [join(ui, 'index.html'), join(ui, 'app.js'), join(ui, 'app.css'), join(uplot, 'uPlot.iife.min.js'), join(uplot, 'uPlot.min.css')];
  const raw = files.reduce((a, f) => a + readFileSync(f).length, 0);
  const gz = files.reduce((a, f) => a + gzipSync(readFileSync(f)).length, 0);
  say(`Bundle: ${(raw / 1024).toFixed(1)} KiB (${(gz / 1024).toFixed(1)} KiB gzipped): the page, its script and style, uPlot 1.6.32.`);
  say();
  const { url, child: upstream } = await servePayload(payload('medium', 5, 6));
  const { base, child } = await startAgentProcess(url);
  say('| load on the agent | agent CPU | request p50 | request p99 |');
  say('|---|---|---|---|');
  for (const [name, path, pollers] of [
    ['idle (scrapes only)', '', 0],
    ['10 pollers of /api/v1/status, 1/s each', '/api/v1/status', 10],
    ['anchor: 10 pollers of /metrics, 1/s each', '/metrics', 10],
  ] as const) {
    const c0 = processCpuSeconds(child.pid!);
    const t0 = performance.now();
    const idle = async () => {
      await new Promise((r) => setTimeout(r, 10_000));
      return [] as number[];
    };
    const lat = pollers ? await poll(`${base}${path}`, pollers, 10_000) : await idle();
    const cpu = (processCpuSeconds(child.pid!) - c0) / ((performance.now() - t0) / 1000);
    say(`| ${name} | ${f1(cpu * 100)}% of a core | ${lat.length ? `${f2(pct(lat, 50))} ms` : '–'} | ${lat.length ? `${f2(pct(lat, 99))} ms` : '–'} |`);
  }
  say();
  child.kill();
  upstream.kill();
}

/** What the efficiency joins cost: one advance over a medium payload's canonical series and 8 simulated GPUs, next to a whole cycle. */
async function benchJoins(): Promise<void> {
  say('### Efficiency joins (medium payload, 8 simulated GPUs): one advance next to one collection cycle');
  say();
  const { url, child } = await servePayload(payload('medium', 5, 6));
  const config = validateConfig({
    listen: '127.0.0.1:0',
    upstreams: [{ url, flavor: 'vllm', interval: '1h', timeout: '10s' }],
    gpu: { simulate: 8, interval: '100ms', timeout: '50ms' },
  });
  const agent = new Agent(config, { ...agentDeps(config), log: createLogger('error') });
  await agent.start();
  await new Promise((r) => setTimeout(r, 500));
  const u = agent.upstreams[0]!;
  const ac = new AbortController();
  for (let i = 0; i < 5; i++) await agent.collect(u, ac.signal);
  const cycle: number[] = [];
  for (let i = 0; i < 40; i++) {
    const c0 = process.cpuUsage();
    await agent.collect(u, ac.signal);
    const c = process.cpuUsage(c0);
    cycle.push((c.user + c.system) / 1000);
  }
  const families = agent.canonical();
  const join = new EfficiencyJoin(agent.catalogue, { peakTflops: undefined, peakMemoryBandwidthGBs: undefined });
  const advance: number[] = [];
  let now = 0;
  for (let i = 0; i < 2000; i++) {
    now += 10_000;
    const t0 = performance.now();
    join.advance(now, families, 1);
    advance.push((performance.now() - t0) * 1000);
  }
  say('| canonical families | one advance p50 | p99 | anchor: cycle CPU p50 | advance / cycle |');
  say('|---|---|---|---|---|');
  say(
    `| ${families.length} | ${f1(pct(advance, 50))} µs | ${f1(pct(advance, 99))} µs | ${f2(pct(cycle, 50))} ms | ${((pct(advance, 50) / 1000 / pct(cycle, 50)) * 100).toFixed(3)}% |`,
  );
  say();
  await agent.stop();
  child.kill();
}

async function main(): Promise<void> {
  const only = process.argv[2];
  say(
    `## Benchmark (${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${(await import('node:os')).cpus().length} CPUs: ${(await import('node:os')).cpus()[0]?.model ?? '?'})`,
  );
  say();
  if (!only || only === 'parse') await benchParse();
  if (!only || only === 'cycle') await benchCycle();
  if (!only || only === 'serve') await benchServe();
  if (!only || only === 'worst') await benchWorst();
  if (!only || only === 'status') await benchStatus();
  if (!only || only === 'gpu') await benchGpu(say);
  if (!only || only === 'proxy') await benchProxy(say);
  if (!only || only === 'limits') await benchLimits(say);
  if (!only || only === 'joins') await benchJoins();
}

await main();
