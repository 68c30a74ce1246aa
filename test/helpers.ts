// Test helpers: loopback servers, the built CLI, promtool, the shared captures.

import type { GpuPoll, GpuProbe } from '../agent/gpu/probe.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createLogger, type Logger } from '../agent/logger.js';

/** Each thread of a process (`self`: this one) as its id and name, from /proc; one that ends meanwhile is left out. */
export function threadsOf(pid: number | 'self'): Array<{ tid: string; name: string }> {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      return [{ tid, name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() }];
    } catch {
      return [];
    }
  });
}

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = fileURLToPath(new URL('../agent/main.js', import.meta.url));
export const SHARED_FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/upstream/', import.meta.url));

const madeDirs: string[] = [];

/**
 * A new folder under the system's temporary folder, removed when this test file's process exits
 * (each file runs in a process of its own), so runs leave nothing behind.
 */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (madeDirs.push(dir) === 1) {
    process.on('exit', () => {
      for (const d of madeDirs) rmSync(d, { recursive: true, force: true });
    });
  }
  return dir;
}

export function sharedFixturesPresent(): boolean {
  return existsSync(SHARED_FIXTURES);
}

export interface TestServer {
  url: string;
  port: number;
  server: http.Server;
  close(): Promise<void>;
}

export async function startServer(handler: http.RequestListener): Promise<TestServer> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export async function freePort(): Promise<number> {
  const s = await startServer(() => {});
  const port = s.port;
  await s.close();
  return port;
}

export interface AgentProcess {
  child: ChildProcess;
  base: string;
  /** The inline proxy's origin, when the agent was started with one. */
  proxyBase: string | undefined;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; ms: number }>;
}

/** The address of the first JSON log line with this message, if one has been written. */
export function loggedListen(out: string, msg: string): string | undefined {
  for (const line of out.split('\n')) {
    if (!line.startsWith('{') || !line.includes(`"msg":"${msg}"`)) continue;
    try {
      const listen = (JSON.parse(line) as { listen?: unknown }).listen;
      if (typeof listen === 'string') return listen;
    } catch {
      /* a line still being written */
    }
  }
  return undefined;
}

/** The value after `flag` in `args`, if the flag is there. */
function flagValue(args: string[], flag: string): string | undefined {
  const at = args.indexOf(flag);
  return at >= 0 ? args[at + 1] : undefined;
}

/**
 * The built CLI with its output captured, once `ready` finds in that output what it waits for
 * (polled every 50 ms); it fails with the output if the process exits first or the time runs out.
 */
async function spawnCli<T>(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  what: string,
  ready: (out: string) => Promise<T | undefined> | T | undefined,
): Promise<{ child: ChildProcess; output: () => string; found: T }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode} before it was ready: ${out.slice(-4000)}`);
    const found = await ready(out);
    if (found !== undefined) return { child, output: () => out, found };
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start: ${out.slice(-4000)}`);
    }
    await sleep(50);
  }
}

/**
 * Spawn the built CLI and wait until its /healthz answers, and its proxy listens when it has one.
 * Unless the caller names them, both listen on port 0 and the ports come from the agent's own log:
 * a port found free beforehand can be taken by another process (or the agent's other listener) before the agent binds it.
 */
export async function spawnAgent(args: string[], env: NodeJS.ProcessEnv = {}): Promise<AgentProcess> {
  const listen = args.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const proxyListen = flagValue(args, '--proxy-listen') ?? env.INFERTEL_PROXY_LISTEN;
  const wantsProxy = proxyListen !== undefined && proxyListen !== 'off';
  const { child, output, found } = await spawnCli(['run', ...listen, ...args], { INFERTEL_LOG_LEVEL: 'debug', ...env }, 10_000, 'the agent', async (out) => {
    const base = loggedListen(out, 'listening');
    const proxyBase = wantsProxy ? loggedListen(out, 'proxy listening') : undefined;
    if (!base || (wantsProxy && !proxyBase)) return undefined;
    const healthy = await fetch(`http://${base}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    return healthy ? { base, proxyBase } : undefined;
  });
  return {
    child,
    base: `http://${found.base}`,
    proxyBase: found.proxyBase && `http://${found.proxyBase}`,
    output,
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      const t0 = Date.now();
      return new Promise((resolve) => {
        if (child.exitCode !== null) return resolve({ code: child.exitCode, ms: 0 });
        child.once('exit', (code) => resolve({ code, ms: Date.now() - t0 }));
        child.kill(signal);
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      });
    },
  };
}

export interface DemoProcess {
  child: ChildProcess;
  base: string;
  /** The demo proxy's origin, unless it was started with --proxy-listen off. */
  proxyBase: string | undefined;
  output(): string;
  /** SIGTERM, and the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Spawn `infertel demo` with both listeners on port 0 (unless the caller names them) and read the
 * origins from the demo's own announcement, which prints the bound addresses.
 */
export async function spawnDemo(args: string[], timeoutMs = 15_000): Promise<DemoProcess> {
  const ports = [
    ...(args.includes('--listen') ? [] : ['--listen', '127.0.0.1:0']),
    ...(args.includes('--proxy-listen') ? [] : ['--proxy-listen', '127.0.0.1:0']),
  ];
  const proxyOff = flagValue(args, '--proxy-listen') === 'off';
  const { child, output, found } = await spawnCli(['demo', ...ports, ...args], {}, timeoutMs, 'the demo', (out) => {
    const base = /agent, readiness: +(http:\/\/\S+)\/readyz/.exec(out)?.[1];
    const proxyBase = /in front of the simulated vLLM: (http:\/\/\S+)\/v1\/chat\/completions/.exec(out)?.[1];
    return base && (proxyBase || proxyOff) ? { base, proxyBase } : undefined;
  });
  return {
    child,
    ...found,
    output,
    stop: () =>
      new Promise((r) => {
        if (child.exitCode !== null) return r(child.exitCode);
        child.once('exit', r);
        child.kill('SIGTERM');
      }),
  };
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` until it returns a truthy value or the time runs out. */
export async function eventually<T>(fn: () => Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(100);
  }
}

export function promtoolPath(): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** `promtool check metrics` on a body: exit code and its findings. */
export function promtoolCheckMetrics(body: string): { code: number | null; findings: string[] } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
  const findings = (r.stderr + r.stdout)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return { code: r.status, findings };
}

export async function getText(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Headers }> {
  const r = await fetch(url, { headers });
  return { status: r.status, body: await r.text(), headers: r.headers };
}

/** Value of one sample line `name{labels} value` in an exposition, matching labels by substring. */
export function sampleValue(body: string, name: string, ...labelParts: string[]): number | undefined {
  for (const line of body.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    if (labelParts.every((p) => line.includes(p))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

let fakeNvml: string | undefined;

/** Compile test/fixtures/fake-nvml/fake_nvml.c into a libnvidia-ml.so.1 (once per process). */
export function buildFakeNvmlLibrary(): string {
  if (fakeNvml) return fakeNvml;
  const dir = tempDir('infertel-fakenvml-');
  const out = join(dir, 'libnvidia-ml.so.1');
  const r = spawnSync(
    'gcc',
    ['-O2', '-Wall', '-shared', '-fPIC', '-Wl,-soname,libnvidia-ml.so.1', '-o', out, join(REPO_ROOT, 'test/fixtures/fake-nvml/fake_nvml.c')],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`gcc failed: ${r.stderr}`);
  fakeNvml = out;
  return out;
}

const fakeAmdSmi = new Map<string, string>();

/**
 * Compile test/fixtures/fake-amdsmi/fake_amdsmi.c against the header excerpt of one AMD SMI
 * generation ("24": ROCm 6.x layouts, "26": ROCm 7.x) into a libamd_smi.so (once per process each).
 */
export function buildFakeAmdSmiLibrary(generation: '24' | '26'): string {
  const cached = fakeAmdSmi.get(generation);
  if (cached) return cached;
  const dir = tempDir(`infertel-fakeamdsmi${generation}-`);
  const out = join(dir, 'libamd_smi.so');
  const header = join(REPO_ROOT, `test/fixtures/amdsmi/amdsmi-${generation}.h`);
  const r = spawnSync(
    'gcc',
    [
      '-O2',
      '-Wall',
      '-Wextra',
      '-Werror',
      '-shared',
      '-fPIC',
      `-DAMDSMI_HEADER="${header}"`,
      '-o',
      out,
      join(REPO_ROOT, 'test/fixtures/fake-amdsmi/fake_amdsmi.c'),
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`gcc failed: ${r.stderr}`);
  fakeAmdSmi.set(generation, out);
  return out;
}

/** An NVML-like GPU probe for in-process tests: each poll is what `poll` returns. */
export function fakeProbe(poll: () => Promise<GpuPoll>, driverVersion = 'd'): GpuProbe {
  return { source: 'nvml', vendor: 'nvidia', driverVersion, minIntervalMs: 0, close: async () => {}, poll };
}

export function addonBuilt(): boolean {
  return existsSync(join(REPO_ROOT, 'native/index.js'));
}

export function cargoAvailable(): boolean {
  return spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status === 0;
}

const CHECK_OPENMETRICS = fileURLToPath(new URL('../../test/fuzz/check_openmetrics.py', import.meta.url));

/** Whether Debian's python3-prometheus-client (a strict OpenMetrics parser) is installed. */
export function strictOpenMetricsAvailable(): boolean {
  return spawnSync('/usr/bin/python3', ['-c', 'import prometheus_client.openmetrics.parser'], { stdio: 'ignore' }).status === 0;
}

/** Each body through prometheus_client's strict OpenMetrics parser: the failures, one line each. */
export function strictOpenMetricsFailures(bodies: readonly string[]): string[] {
  const r = spawnSync('/usr/bin/python3', [CHECK_OPENMETRICS], { input: JSON.stringify(bodies), encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status === 0) return [];
  const lines = r.stdout.split('\n').filter(Boolean);
  return lines.length ? lines : [`check failed: ${r.stderr.slice(0, 500)}`];
}

/** A logger whose JSON lines are kept in `lines` (one entry per line), for tests that read the logs. */
export function captureLogger(level = 'info'): { lines: string[]; log: Logger } {
  const lines: string[] = [];
  const log = createLogger(
    level,
    new Writable({
      write: (c, _e, cb) => {
        lines.push(...String(c).split('\n').filter(Boolean));
        cb();
      },
    }),
  );
  return { lines, log };
}
