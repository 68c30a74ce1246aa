// Request-level mode: what the inline proxy adds, measured next to direct access to the same
// stand-in engine in the same run. On the machine: the load (this one), the engine, and the paths
// to it (a C relay, a Node relay, the native loop alone, a bare Node proxy, and the agent's proxy
// on each of its data paths), one in use at a time.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { PROXY_NODE_OPTIONS } from '../agent/webhook/mutate.js';
import { loadAddon } from '../agent/gpu/addon.js';
import { findGateway, type GatewayName, startGateway } from './gateways.js';
import { buildTool, removeTool } from './relay.js';
import { addedMultiple, firstLine, pct, spawnNode } from './stats.js';
import { describeWaiting, type SocketState, watchRound } from './tcp-state.js';

const CLI = fileURLToPath(new URL('../agent/main.js', import.meta.url));
const ENGINE = fileURLToPath(new URL('./serve-openai.js', import.meta.url));
const PIPE_PROXY = fileURLToPath(new URL('./serve-pipe-proxy.js', import.meta.url));
const NODE_RELAY = fileURLToPath(new URL('./serve-net-relay.js', import.meta.url));
const NATIVE_EDGE = fileURLToPath(new URL('./serve-native-edge.js', import.meta.url));

function rssMiB(pid: number): number {
  return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
}

/** CPU time a process has used, in ms (utime + stime from /proc, 10 ms ticks). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const client = new http.Agent({ keepAlive: true, maxSockets: Infinity });

/**
 * One streamed request: ms to the first body byte, and the events received, all of them and those
 * that arrived inside the load's measuring window (`window`, in `performance.now()` time).
 */
function stream(
  base: string,
  headers: Record<string, string>,
  body: string,
  window = { from: -Infinity, to: Infinity },
): Promise<{ ttfb: number; chunks: number; chunksInWindow: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let ttfb = NaN;
    let chunks = 0;
    let chunksInWindow = 0;
    const req = http.request(
      `${base}/v1/chat/completions`,
      { method: 'POST', agent: client, headers: { 'content-type': 'application/json', ...headers } },
      (res) => {
        res.on('data', (d: Buffer) => {
          const now = performance.now();
          if (Number.isNaN(ttfb)) ttfb = now - t0;
          const events = d.toString('latin1').split('\n\n').length - 1;
          chunks += events;
          if (now >= window.from && now <= window.to) chunksInWindow += events;
        });
        res.on('end', () => resolve({ ttfb, chunks, chunksInWindow }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const BODY = JSON.stringify({ model: 'bench-model', stream: true, messages: [{ role: 'user', content: 'Summarise the quarterly report in three lines.' }] });
/** A request whose prompt is 64 KiB (a long retrieval-augmented prompt): what an open stream keeps of its request. */
const LONG_PROMPT_BODY = JSON.stringify({
  model: 'bench-model',
  stream: true,
  messages: [{ role: 'user', content: 'lorem ipsum '.repeat(5462).slice(0, 64 * 1024) }],
});

/**
 * `concurrency` clients each streaming back to back. Client i starts `i / concurrency` of
 * `staggerMs` late; 0 starts them all at once, and since the stand-in engine's timing has no
 * jitter, they then stay in lock-step and every request meets 199 others at the proxy.
 *
 * Throughput is the events received inside a fixed window of `ms` that opens once every client has
 * started, as wrk or k6 count (`chunksPerSecond`). `roundChunksPerSecond` is the older measure: all
 * events over the time until the slowest client has finished its last request, which also charges
 * the path with the ramp-down, when fewer than `concurrency` streams are open.
 */
async function load(base: string, concurrency: number, ms: number, headers: Record<string, string>, staggerMs = 0) {
  const ttfb: number[] = [];
  let chunks = 0;
  let chunksInWindow = 0;
  const t0 = performance.now();
  const window = { from: t0 + staggerMs, to: t0 + staggerMs + ms };
  await Promise.all(
    Array.from({ length: concurrency }, async (_, i) => {
      await new Promise((r) => setTimeout(r, (i / concurrency) * staggerMs));
      while (performance.now() < window.to) {
        const r = await stream(base, headers, BODY, window);
        ttfb.push(r.ttfb);
        chunks += r.chunks;
        chunksInWindow += r.chunksInWindow;
      }
    }),
  );
  const elapsedMs = performance.now() - t0;
  return { ttfb, chunks, chunksPerSecond: chunksInWindow / (ms / 1000), roundChunksPerSecond: chunks / (elapsedMs / 1000), elapsedMs };
}

/**
 * The agent with its proxy on `port + 1`, as the chart runs it in proxy mode (its Node flags, no
 * tracing), on the data path `config` names (none: the default, native where the addon is built).
 */
function startAgent(engineUrl: string, port: number, config?: string): ChildProcess {
  return spawn(
    process.execPath,
    [
      ...PROXY_NODE_OPTIONS.split(' '),
      CLI,
      'run',
      '--listen',
      `127.0.0.1:${port}`,
      '--proxy-listen',
      `127.0.0.1:${port + 1}`,
      '--proxy-target',
      engineUrl,
      '--log-level',
      'error',
      ...(config ? ['--config', config] : []),
    ],
    { stdio: 'ignore', env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: '' } },
  );
}

/** Memory per open stream through `proxyBase`: RSS of `pid` idle, then with 1000 streams open (a chunk every 2.5 s). */
async function memoryPerStream(proxyBase: string, pid: number, body = BODY): Promise<{ idle: number; busy: number; held: Promise<unknown> }> {
  await load(proxyBase, 20, 1000, {});
  await new Promise((r) => setTimeout(r, 1000));
  const idle = rssMiB(pid);
  const held: Array<Promise<unknown>> = [];
  for (let i = 0; i < 1000; i++) held.push(stream(proxyBase, { 'x-sim-tokens': '3', 'x-sim-itl-ms': '2500' }, body).catch(() => undefined));
  await new Promise((r) => setTimeout(r, 2000));
  return { idle, busy: rssMiB(pid), held: Promise.all(held) };
}

const TABLE_HEAD =
  '| concurrent streams | path | time to first byte p50 | p99 | chunks/s received | added p50 | added p99 | added p50 / anchor | proxy CPU per chunk | throughput / direct | whole rounds |';
const TABLE_RULE = '|---|---|---|---|---|---|---|---|---|---|---|';

type PathName = 'direct' | 'directAgain' | 'floor' | 'nodeFloor' | 'nativeEdge' | 'anchor' | GatewayName | 'proxy' | 'proxyNormalThreads' | 'proxyNodePath';
/** Config files for the agents that differ from the default in one key. */
interface BenchConfigs {
  /** proxy.dataPath: node */
  nodePath: string;
  /** proxy.agentThreads: normal */
  normalThreads: string;
}

/** The reference gateways this machine has (`bench/gateways.ts`), with their programs and versions. */
type Gateways = Array<{ name: GatewayName; path: string; version: string }>;

const GATEWAY_LABELS: Record<GatewayName, (version: string) => string> = {
  nginx: (v) => `reference gateway: nginx ${v}, one worker, proxy_buffering off`,
  haproxy: (v) => `reference gateway: HAProxy ${v}, one thread, http-no-delay`,
};
/** A path under test: its name, its base URL, and the pid of the process in the path (none for direct). */
type PathUnderLoad = readonly [PathName, string, number | undefined];
type LoadResult = {
  ttfb: number[];
  chunks: number;
  chunksPerSecond: number;
  roundChunksPerSecond: number;
  /** From the first client's start to the last one's last event. */
  elapsedMs: number;
  /** The C load's longest connect, and its longest request from first byte sent to last received. */
  slowestConnectMs?: number;
  slowestRequestMs?: number;
};
type Load = (base: string, concurrency: number, ms: number, headers: Record<string, string>, staggerMs: number) => Promise<LoadResult>;

/** The JSON line `bench/native/load.c` prints (its header says what each field is). */
export interface CLoadReport {
  ttfb: number[];
  chunks: number;
  chunksInWindow: number;
  elapsedMs: number;
  errors: number;
  slowestConnectMs: number;
  slowestRequestMs: number;
}

/** The load of `bench/native/load.c` (built at `path`), measured as `load` measures. */
function cLoad(path: string): Load {
  return (base, concurrency, ms, headers, staggerMs) =>
    new Promise((resolve, reject) => {
      const args = [new URL(base).port, String(concurrency), String(staggerMs), String(ms), headers['x-sim-tokens'] ?? '16'];
      execFile(path, args, { maxBuffer: 64 << 20 }, (err, stdout) => {
        if (err) return reject(err);
        const r = JSON.parse(stdout) as CLoadReport;
        if (r.errors) return reject(new Error(`${r.errors} failed requests through ${base}`));
        resolve({
          ttfb: r.ttfb,
          chunks: r.chunks,
          chunksPerSecond: r.chunksInWindow / (ms / 1000),
          roundChunksPerSecond: r.chunks / (r.elapsedMs / 1000),
          elapsedMs: r.elapsedMs,
          slowestConnectMs: r.slowestConnectMs,
          slowestRequestMs: r.slowestRequestMs,
        });
      });
    });
}

/**
 * One table's rows: for each [streams, tokens, staggerMs], `rounds` rounds of every path in turn
 * (so a drift of the machine reaches them all alike), then a row per path against direct. Returns, per
 * scenario, the lines for under the table: what infertel added as a multiple of what each reference
 * gateway added, and each path's added p99 round by round.
 */
async function measurePaths(
  paths: PathUnderLoad[],
  scenarios: Array<readonly [number, number, number]>,
  run: Load,
  dataPath: string,
  gateways: Gateways,
  say: (s?: string) => void,
  rounds: number,
): Promise<UnderTable> {
  const againstGateways: string[] = [];
  const roundByRound: string[] = [];
  const longRounds: string[] = [];
  for (const [concurrency, tokens, staggerMs] of scenarios) {
    const ends: Array<{ name: PathName; round: number; r: LoadResult; tcp: Array<[string, number]>; waiting?: SocketState[] }> = [];
    const enginePort = new URL(paths.find(([n]) => n === 'direct')?.[1] ?? 'http://127.0.0.1:0').port;
    const rows = new Map<PathName, { ttfb: number[]; roundP99: number[]; cps: number[]; roundCps: number[]; cpu: number; chunks: number }>();
    for (let round = 0; round < rounds; round++) {
      for (const [name, base, pid] of paths) {
        const c0 = pid ? cpuMs(pid) : 0;
        // A round still running this long after its due end has its sockets looked at, while it waits.
        const {
          result: r,
          tcp,
          waiting,
        } = await watchRound([new URL(base).port, enginePort], 3000 + staggerMs + OVERDUE_LOOK_MS, () =>
          run(base, concurrency, 3000, { authorization: 'Bearer sk-bench', 'x-sim-tokens': String(tokens) }, staggerMs),
        );
        const row = rows.get(name) ?? { ttfb: [], roundP99: [], cps: [], roundCps: [], cpu: 0, chunks: 0 };
        rows.set(name, row);
        row.ttfb.push(...r.ttfb);
        row.roundP99.push(pct(r.ttfb, 99));
        row.cps.push(r.chunksPerSecond);
        row.roundCps.push(r.roundChunksPerSecond);
        row.chunks += r.chunks;
        ends.push({ name, round, r, tcp, ...(waiting ? { waiting } : {}) });
        if (pid) row.cpu += cpuMs(pid) - c0;
      }
    }
    const summary = (name: PathName) => {
      const r = rows.get(name);
      if (!r) return undefined;
      const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
      return { p50: pct(r.ttfb, 50), p99: pct(r.ttfb, 99), cps: mean(r.cps), roundCps: mean(r.roundCps), usPerChunk: (r.cpu * 1000) / r.chunks };
    };
    const staggered = staggerMs ? ', staggered' : '';
    const d = summary('direct');
    if (!d) throw new Error('no direct path measured');
    say(`| ${concurrency}${staggered} | direct | ${d.p50.toFixed(2)} ms | ${d.p99.toFixed(2)} ms | ${d.cps.toFixed(0)} | | | | | | |`);
    const anchor = summary('anchor');
    const labels: Array<readonly [PathName, string]> = [
      ['directAgain', "direct again: the instrument's own spread"],
      ['floor', 'floor: C byte relay'],
      ['nodeFloor', 'Node floor: Node byte relay'],
      ['nativeEdge', 'native data path alone: HTTP/1.1 framing, nothing measured'],
      ['anchor', 'anchor: bare pipe proxy'],
      ...gateways.map((g) => [g.name, GATEWAY_LABELS[g.name](g.version)] as const),
      ['proxy', `through infertel (default: ${dataPath} data path)`],
      ['proxyNormalThreads', 'through infertel, proxy.agentThreads: normal'],
      ['proxyNodePath', 'through infertel, proxy.dataPath: node'],
    ];
    for (const [name, label] of labels) {
      const p = summary(name);
      if (!p) continue;
      // Direct again has no process of its own to charge CPU to, and no anchor ratio to speak of.
      const inPath = name !== 'directAgain';
      const ratio = anchor && inPath ? `${((p.p50 - d.p50) / (anchor.p50 - d.p50)).toFixed(2)}x` : '';
      const cpu = inPath ? `${p.usPerChunk.toFixed(1)} µs` : '';
      say(
        `| ${concurrency}${staggered} | ${label} | ${p.p50.toFixed(2)} ms | ${p.p99.toFixed(2)} ms | ${p.cps.toFixed(0)} | ${(p.p50 - d.p50).toFixed(2)} ms | ${(p.p99 - d.p99).toFixed(2)} ms | ${ratio} | ${cpu} | ${((p.cps / d.cps) * 100).toFixed(1)}% | ${((p.roundCps / d.roundCps) * 100).toFixed(1)}% |`,
      );
    }
    // The pooled p99 above is mostly whether a path drew one of the machine's bad rounds; each round's
    // p99 against direct's in the same round shows how often that happens.
    const directRounds = rows.get('direct')?.roundP99 ?? [];
    const perRound = (name: PathName, shortName: string) => {
      const added = (rows.get(name)?.roundP99 ?? []).map((p99, round) => p99 - (directRounds[round] ?? NaN)).filter(Number.isFinite);
      if (added.length === 0) return undefined;
      const within = added.filter((a) => a <= P99_TARGET_MS).length;
      return `${shortName} ${pct(added, 50).toFixed(2)} ms (${Math.min(...added).toFixed(2)} to ${Math.max(...added).toFixed(2)} ms; ${within} of ${added.length} rounds within ${P99_TARGET_MS} ms)`;
    };
    const roundPaths: Array<readonly [PathName, string]> = [
      ['proxy', 'infertel'],
      ['proxyNormalThreads', 'infertel with proxy.agentThreads: normal'],
      ['nativeEdge', 'the native loop alone'],
      ['floor', 'the C byte relay'],
      ...gateways.map((g) => [g.name, g.name] as const),
    ];
    const perRoundLines = roundPaths.flatMap(([name, shortName]) => perRound(name, shortName) ?? []);
    if (perRoundLines.length > 0)
      roundByRound.push(`${concurrency} stream${concurrency === 1 ? '' : 's'}${staggered}, added p99 per round (median, range): ${perRoundLines.join('; ')}.`);
    // A round that ends late charges its path mostly in "whole rounds"; name it, with where the time went.
    const directEnd = pct(
      ends.filter((e) => e.name === 'direct').map((e) => e.r.elapsedMs),
      50,
    );
    for (const { name, round, r, tcp, waiting } of ends.filter((e) => e.r.elapsedMs > directEnd + LONG_ROUND_MS)) {
      const where =
        r.slowestConnectMs === undefined
          ? ''
          : `, its slowest connect ${r.slowestConnectMs.toFixed(1)} ms and slowest request ${r.slowestRequestMs?.toFixed(1)} ms`;
      const kernel =
        tcp.length === 0
          ? '; no TCP retransmit, timeout or drop counted on the machine in that round'
          : `; TCP counters in that round: ${tcp.map(([c, n]) => `${c} +${n}`).join(', ')}`;
      const look = waiting ? `; ${OVERDUE_LOOK_MS / 1000} s past its due end, ${describeWaiting(waiting)}` : '';
      longRounds.push(
        `${concurrency} stream${concurrency === 1 ? '' : 's'}${staggered}, ${labels.find(([n]) => n === name)?.[1] ?? name}, round ${round + 1}: ${(r.elapsedMs / 1000).toFixed(2)} s against direct's median ${(directEnd / 1000).toFixed(2)} s${where}${kernel}${look}.`,
      );
    }
    const proxy = summary('proxy');
    if (proxy)
      for (const g of gateways) {
        const theirs = summary(g.name);
        if (!theirs) continue;
        againstGateways.push(
          `${concurrency} stream${concurrency === 1 ? '' : 's'}${staggered}, against ${g.name}: infertel added ${(proxy.p50 - d.p50).toFixed(2)} ms at p50 and ${(proxy.p99 - d.p99).toFixed(2)} ms at p99, ${g.name} ${(theirs.p50 - d.p50).toFixed(2)} ms and ${(theirs.p99 - d.p99).toFixed(2)} ms: ${addedMultiple(proxy.p50 - d.p50, theirs.p50 - d.p50, g.name)} at p50, ${addedMultiple(proxy.p99 - d.p99, theirs.p99 - d.p99, g.name)} at p99; proxy CPU per chunk ${proxy.usPerChunk.toFixed(1)} µs against ${theirs.usPerChunk.toFixed(1)} µs.`,
        );
      }
  }
  return { againstGateways, roundByRound, longRounds };
}

/** How much longer than direct's median round a round may take before it is named under the table. */
const LONG_ROUND_MS = 250;
/** How long past its due end (window and stagger) a round runs before its sockets are looked at. */
const OVERDUE_LOOK_MS = 2500;

/** The request-level mode issue's target for added p99 to first byte. */
const P99_TARGET_MS = 1;

interface UnderTable {
  againstGateways: string[];
  roundByRound: string[];
  longRounds: string[];
}

/**
 * Rounds of each path in the quiet setting. One round in a few there reads a p99 two to four times
 * the others' for whichever path it falls on (the machine's own hiccups), so with three rounds a
 * path's p99 is mostly whether it drew one; six halve that draw's weight.
 */
const QUIET_ROUNDS = 6;

/** The lines under a table: infertel against each reference gateway, then each path's rounds, per scenario. */
function sayUnderTable({ againstGateways, roundByRound, longRounds }: UnderTable, say: (s?: string) => void): void {
  if (againstGateways.length > 0) {
    say();
    say('Through infertel (default data path) against the reference gateways in the same rounds:');
    for (const line of againstGateways) say(`- ${line}`);
  }
  if (roundByRound.length > 0) {
    say();
    say("Round by round: each round's p99 less direct's p99 in the same round:");
    for (const line of roundByRound) say(`- ${line}`);
  }
  say();
  if (longRounds.length === 0) say(`No round of any path ended more than ${LONG_ROUND_MS} ms after direct's median round.`);
  else {
    say(`Rounds that ended more than ${LONG_ROUND_MS} ms after direct's median round:`);
    for (const line of longRounds) say(`- ${line}`);
  }
}

async function waitReady(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
    } catch {
      /* starting */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Every path in front of the engine at `engineUrl`, each a fresh process of its own: the C relay
 * (when built), the Node relay (`nodeFloor`), the loop alone (`edge`), the anchor, and infertel on
 * each data path and, on the native one, with `proxy.agentThreads: normal` (agents on `port`,
 * `port + 2` and `port + 4`, their proxies one above). Direct is measured
 * twice, as two paths: what the second adds is the instrument's own spread. Each is warmed up
 * with `warm` (JIT and connection pools) before it is returned.
 */
async function startPaths(
  engineUrl: string,
  opts: { relayPath: string | undefined; edge: boolean; nodeFloor: boolean; port: number; configs: BenchConfigs; gateways: Gateways },
  warm: Load,
): Promise<{ paths: PathUnderLoad[]; stop: () => void }> {
  const children: ChildProcess[] = [];
  const stopGateways: Array<() => void> = [];
  const stop = () => {
    for (const c of children) c.kill();
    for (const s of stopGateways) s();
  };
  const start = async (command: string, args: string[]) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(child);
    return { child, line: await firstLine(child) };
  };
  try {
    const enginePort = new URL(engineUrl).port;
    const relay = opts.relayPath ? await start(opts.relayPath, [enginePort]) : undefined;
    const nodeRelay = opts.nodeFloor ? await start(process.execPath, [NODE_RELAY, enginePort]) : undefined;
    const edge = opts.edge ? await start(process.execPath, [NATIVE_EDGE, enginePort]) : undefined;
    const pipe = await start(process.execPath, [PIPE_PROXY, engineUrl]);
    const gateways: PathUnderLoad[] = [];
    for (const g of opts.gateways) {
      const started = await startGateway(g.name, g.path, Number(enginePort));
      stopGateways.push(started.stop);
      gateways.push([g.name, started.url, started.child.pid]);
    }
    const agent = startAgent(engineUrl, opts.port);
    const nodeAgent = startAgent(engineUrl, opts.port + 2, opts.configs.nodePath);
    // Only on the native data path: on the Node one no thread is idled, so the row would repeat the default's.
    const normalThreads = opts.edge ? startAgent(engineUrl, opts.port + 4, opts.configs.normalThreads) : undefined;
    children.push(agent, nodeAgent, ...(normalThreads ? [normalThreads] : []));
    await waitReady(opts.port);
    await waitReady(opts.port + 2);
    if (normalThreads) await waitReady(opts.port + 4);
    const paths: PathUnderLoad[] = [
      ['direct', engineUrl, undefined],
      ['directAgain', engineUrl, undefined],
      ...(relay ? [['floor', relay.line, relay.child.pid] as const] : []),
      ...(nodeRelay ? [['nodeFloor', nodeRelay.line, nodeRelay.child.pid] as const] : []),
      ...(edge ? [['nativeEdge', edge.line, edge.child.pid] as const] : []),
      ['anchor', pipe.line, pipe.child.pid],
      ...gateways,
      ['proxy', `http://127.0.0.1:${opts.port + 1}`, agent.pid],
      ...(normalThreads ? [['proxyNormalThreads', `http://127.0.0.1:${opts.port + 5}`, normalThreads.pid] as const] : []),
      ['proxyNodePath', `http://127.0.0.1:${opts.port + 3}`, nodeAgent.pid],
    ];
    for (const [name, base] of paths) if (name !== 'directAgain') await warm(base, 50, 1000, {}, 0);
    return { paths, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

/**
 * The quiet setting: the C stand-in engine, the paths in front of it (`startPaths`, no Node relay),
 * and the C load; or why not, where cc is missing or fails.
 */
async function startQuiet(
  relayPath: string | undefined,
  withEdge: boolean,
  port: number,
  configs: BenchConfigs,
  gateways: Gateways,
): Promise<{ paths: PathUnderLoad[]; load: Load; stop: () => void } | { why: string }> {
  const engineBuilt = buildTool('engine');
  const loadBuilt = buildTool('load');
  const built = [engineBuilt, loadBuilt].flatMap((b) => ('path' in b ? [b.path] : []));
  if (!('path' in engineBuilt) || !('path' in loadBuilt)) {
    for (const path of built) removeTool(path);
    return { why: 'why' in engineBuilt ? engineBuilt.why : 'why' in loadBuilt ? loadBuilt.why : '' };
  }
  const engine = spawn(engineBuilt.path, [], { stdio: ['ignore', 'pipe', 'ignore'] });
  let started: { stop: () => void } | undefined;
  const stop = () => {
    started?.stop();
    engine.kill();
    for (const path of built) removeTool(path);
  };
  try {
    const load = cLoad(loadBuilt.path);
    const paths = await startPaths(await firstLine(engine), { relayPath, edge: withEdge, nodeFloor: false, port, configs, gateways }, load);
    started = paths;
    return { paths: paths.paths, load, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

export async function benchProxy(say: (s?: string) => void): Promise<void> {
  say('### Inline proxy (request-level mode): added latency, throughput and memory per stream');
  say();
  const { child: engine, line: engineUrl } = await spawnNode([ENGINE], 'ignore');
  const built = buildTool('relay');
  const relayPath = 'path' in built ? built.path : undefined;
  const withEdge = loadAddon().ok;
  const foundGateways = (['nginx', 'haproxy'] as const).map((name) => ({ name, found: findGateway(name) }));
  const gateways: Gateways = foundGateways.flatMap(({ name, found }) => ('path' in found ? [{ name, ...found }] : []));
  const port = 21000 + Math.floor(Math.random() * 4000);
  const dir = mkdtempSync(join(tmpdir(), 'infertel-bench-'));
  const configs: BenchConfigs = { nodePath: join(dir, 'node-path.yaml'), normalThreads: join(dir, 'normal-threads.yaml') };
  writeFileSync(configs.nodePath, 'proxy:\n  dataPath: node\n');
  writeFileSync(configs.normalThreads, 'proxy:\n  agentThreads: normal\n');
  const dataPath = withEdge ? 'native' : 'node';
  let main: { paths: PathUnderLoad[]; stop: () => void } | undefined;
  let quiet: Awaited<ReturnType<typeof startQuiet>> | undefined;
  try {
    say(
      `Stand-in engine in its own process: a role chunk at once (OpenAI's first event), the first token after 20 ms, then chunks 20 ms apart (2 per stream in the one-stream row, 16 in the others); keep-alive clients; direct, anchor and proxied rounds alternate, 3 of each. Client, proxy and engine share the machine. Time to first byte is the role chunk's arrival. Throughput is the events received in a 3 s window once every client has started; "whole rounds" is the older measure, all events over the time until the slowest client finishes. In the rows marked "staggered", client i of 200 starts i/200 of a request's length (340 ms) late; in the others all start at once and, as the stand-in's timing has no jitter, stay in lock-step. "Through infertel" is \`infertel run --proxy-listen … --proxy-target …\` as it runs by default (here on its ${dataPath} data path), with the Node flags the chart gives a sidecar in proxy mode (\`${PROXY_NODE_OPTIONS}\`), measuring every request into its metrics and sampled request log; the rows after it are the same agent with \`proxy.agentThreads: normal\` (its threads left as started, where by default all but the loop run under SCHED_IDLE; native data path only) and with \`proxy.dataPath: node\`, Node's HTTP stack carrying the bytes.`,
    );
    say();
    say(
      "The anchor is the least a Node proxy can do (`bench/serve-pipe-proxy.ts`: forward and pipe back, nothing parsed or measured, the same keep-alive and no-delay settings). The floor is less than any HTTP proxy can do (`bench/native/relay.c`: one thread, epoll, bytes copied between a client connection and its own engine connection, nothing parsed): what it adds over direct access is what one more process in the path costs on this machine. The Node floor is the same relay on `node:net` (`bench/serve-net-relay.ts`): what it adds is the least any Node program in the path costs, before it parses HTTP. The native data path alone is the addon's loop (`native/src/edge.rs`) in a process of its own with no JS side (`bench/serve-native-edge.ts`): HTTP/1.1 parsed and the proxy's forwarding rules applied, engine connections pooled, nothing measured; what infertel adds over it is the JS side that measures and records each request.",
    );
    say();
    say(
      "The reference gateways are production proxies from the machine's packages in front of the same engine (`bench/gateways.ts`, tested in `test/bench/gateways.test.ts`), set up as an operator sets them up for a streaming engine: one worker thread each, as infertel's data path has one loop thread; every event passed on as it comes (nginx's `proxy_buffering off`, HAProxy's `option http-no-delay`); engine connections kept alive and reused. Envoy, the gateway issue 8 names, has no Debian package.",
    );
    say();
    if (!relayPath) say(`(The floor row is left out: ${'why' in built ? built.why : ''}.)`);
    for (const { name, found } of foundGateways) if ('why' in found) say(`(The ${name} row is left out: ${found.why}.)`);
    say(TABLE_HEAD);
    say(TABLE_RULE);
    main = await startPaths(engineUrl, { relayPath, edge: withEdge, nodeFloor: true, port, configs, gateways }, load);
    const paths = main.paths;
    const mainAgainst = await measurePaths(
      paths,
      [
        [1, 2, 0],
        [20, 16, 0],
        [200, 16, 0],
        [200, 16, 340],
      ],
      load,
      dataPath,
      gateways,
      say,
      3,
    );
    sayUnderTable(mainAgainst, say);
    quiet = await startQuiet(relayPath, withEdge, port + 8, configs, gateways);
    if ('why' in quiet) {
      say();
      say(`(The rows with the C stand-in engine and load are left out: ${quiet.why}.)`);
    } else {
      say();
      say(
        `The same paths in front of the C stand-in engine (\`bench/native/engine.c\`: the same timing and events, on one epoll thread), under the C load (\`bench/native/load.c\`: one epoll thread, keep-alive connections, as wrk or Nighthawk apply load). At 200 streams the Node stand-in and the Node load above each take about a third of a core of the two, and their own event loops queue the role chunk behind other streams' chunks; these two take about a tenth of a core each, so less of what is measured is theirs. Each path is a fresh process of its own in front of this engine (infertel with the same flags as above), measured in ${QUIET_ROUNDS} rounds where the first table has 3: here the spread left is the machine's own, one round in a few reading a p99 two to four times the others' for whichever path it falls on.`,
      );
      say();
      say(TABLE_HEAD);
      say(TABLE_RULE);
      const quietAgainst = await measurePaths(
        quiet.paths,
        [
          [200, 16, 0],
          [200, 16, 340],
        ],
        quiet.load,
        dataPath,
        gateways,
        say,
        QUIET_ROUNDS,
      );
      sayUnderTable(quietAgainst, say);
      quiet.stop();
      quiet = undefined;
    }
    say();
    say('Targets (issue 8): added p50 ≤ 0.3 ms and p99 ≤ 1 ms at 200 streams; proxied throughput ≥ 95% of direct. Envoy adds well under a millisecond.');
    say();
    // Memory per open stream, in a fresh agent on each data path (and again with a long prompt on the default one), and the loop alone: 1000 streams held open.
    for (const [label, config, at, body, what] of [
      [`infertel (default: ${dataPath} data path)`, undefined, port + 16, BODY, ''],
      ['infertel, proxy.dataPath: node', configs.nodePath, port + 18, BODY, ''],
      [`infertel (default: ${dataPath} data path)`, undefined, port + 20, LONG_PROMPT_BODY, ', each request with a 64 KiB prompt'],
    ] as const) {
      const mem = startAgent(engineUrl, at, config);
      await waitReady(at);
      const m = await memoryPerStream(`http://127.0.0.1:${at + 1}`, mem.pid!, body);
      const open = Number(/^infertel_proxy_open_requests (\S+)/m.exec(await (await fetch(`http://127.0.0.1:${at}/metrics`)).text())?.[1]);
      say(
        `Memory per open stream, ${label} (a fresh agent with the proxy-mode flags, after a warm-up${what}): RSS ${m.idle.toFixed(1)} MiB idle, ${m.busy.toFixed(1)} MiB with ${open} streams open: ${(((m.busy - m.idle) * 1024) / Math.max(1, open)).toFixed(1)} KiB per stream.`,
      );
      say();
      await m.held;
      mem.kill();
    }
    // The loop alone is a process of its own: its RSS includes the Node runtime that loads it.
    const heldOpen = [
      ['nativeEdge', 'native data path alone', ' (both sockets and their buffers)'],
      ...gateways.map((g) => [g.name, `${g.name} (one worker)`, ''] as const),
    ] as const;
    for (const [name, label, note] of heldOpen) {
      const at = paths.find(([path]) => path === name);
      if (!at?.[2]) continue;
      const m = await memoryPerStream(at[1], at[2]);
      say(
        `Memory per open stream, ${label}: RSS ${m.idle.toFixed(1)} MiB idle, ${m.busy.toFixed(1)} MiB with 1000 streams open: ${(((m.busy - m.idle) * 1024) / 1000).toFixed(1)} KiB per stream${note}.`,
      );
      say();
      await m.held;
    }
  } finally {
    if (quiet && 'stop' in quiet) quiet.stop();
    main?.stop();
    rmSync(dir, { recursive: true, force: true });
    if ('path' in built) removeTool(built.path);
    engine.kill();
    client.destroy();
  }
}
