// A proxy in front of the stand-in engine, in-process: the agent with proxy.listen on loopback,
// request log lines captured, and helpers to read the exposition.

import { Writable } from 'node:stream';
import { Agent } from '../../agent/agent.js';
import { validateConfig } from '../../agent/config/load.js';
import { startSimOpenAi, type SimOpenAi } from '../../agent/demo/sim-openai.js';
import { createLogger } from '../../agent/logger.js';
import { hashKey } from '../../agent/proxy/tenants.js';
import { getText } from '../helpers.js';

/**
 * The data path the harness's proxy runs on: the agent's default (auto: native where the addon is
 * built), unless a suite re-run for the other path (node-path.test.ts) names it.
 */
export const DATA_PATH = (process.env.INFERTEL_TEST_PROXY_DATA_PATH ?? 'auto') as 'auto' | 'native' | 'node';

export const ACME_KEY = 'sk-acme-0123456789abcdef';
export const GLOBEX_KEY = 'sk-globex-fedcba9876543210';

export interface Harness {
  agent: Agent;
  engine: SimOpenAi;
  /** Base URL of the proxy. */
  proxy: string;
  /** Base URL of /metrics and the rest. */
  base: string;
  requestLogs: () => Array<Record<string, unknown>>;
  agentLogs: () => string;
  metrics(format?: 'text' | 'openmetrics'): Promise<string>;
  close(): Promise<void>;
}

export async function startHarness(extra: Record<string, unknown> = {}, sim: Partial<Parameters<typeof startSimOpenAi>[0]> = {}): Promise<Harness> {
  const engine = await startSimOpenAi({ models: ['sim-llama'], ttftMs: 30, itlMs: 5, tokens: 8, ...sim });
  const lines: string[] = [];
  const agentLines: string[] = [];
  const sink = (into: string[]) =>
    new Writable({
      write: (c, _e, cb) => {
        into.push(...String(c).split('\n').filter(Boolean));
        cb();
      },
    });
  let agent: Agent;
  try {
    const config = validateConfig({
      listen: '127.0.0.1:0',
      // The test runner's own threads are not idled (proxy.agentThreads): data-path.test.ts checks idling in a spawned agent.
      proxy: { listen: '127.0.0.1:0', target: engine.url, dataPath: DATA_PATH, agentThreads: 'normal', ...((extra.proxy as object | undefined) ?? {}) },
      tenants: [
        { name: 'acme', keys: [hashKey(ACME_KEY)] },
        { name: 'globex', keys: [hashKey(GLOBEX_KEY)], sloClass: 'batch' },
      ],
      requestLog: { sampleSuccess: 1, sampleError: 1, ...((extra.requestLog as object | undefined) ?? {}) },
      ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'proxy' && k !== 'requestLog')),
    });
    // Request lines are captured here unless the test asks for the file sink (requestLog.path).
    const toFile = config.requestLog.path !== undefined;
    agent = new Agent(config, { log: createLogger('info', sink(agentLines)), ...(toFile ? {} : { requestLogDestination: sink(lines) }) });
    await agent.start();
  } catch (err) {
    await engine.close();
    throw err;
  }
  const harness: Harness = {
    agent,
    engine,
    proxy: `http://${agent.proxy!.address()}`,
    base: `http://${agent.address()}`,
    requestLogs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    agentLogs: () => agentLines.join('\n'),
    async metrics(format = 'text') {
      await agent.proxy?.settled();
      return (await getText(`http://${agent.address()}/metrics`, format === 'openmetrics' ? { accept: 'application/openmetrics-text; version=1.0.0' } : {}))
        .body;
    },
    async close() {
      open.delete(harness.proxy);
      await agent.stop();
      await engine.close();
    },
  };
  open.set(harness.proxy, harness);
  return harness;
}

/** The harnesses running now, by proxy base URL. */
const open = new Map<string, Harness>();

/** Sum of every sample of `name` whose labels contain all of `match` (name{...} lines only). */
export function sumOf(body: string, name: string, match: Record<string, string> = {}): number {
  let total = 0;
  for (const line of body.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(match).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    const m = /^[^{ ]+(?:\{.*?\})? (\S+)/.exec(line);
    if (m) total += Number(m[1]);
  }
  return total;
}

/** An answer read whole: its status, headers and body text. */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

/** POST JSON; returns the answer as soon as it is read. */
export async function send(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

/**
 * POST JSON through the proxy, as send() does, returning once the request is recorded (on the
 * native data path the record follows the answer by a turn of its loop).
 */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const answer = await send(url, body, headers);
  for (const [base, h] of open) if (url.startsWith(base)) await h.agent.proxy?.settled();
  return answer;
}
