// The shared rate-limit backend against a real redis-server on a free loopback port: two agent
// processes (the built CLI) share one tenant's budget, also when their clocks disagree by minutes;
// Redis killed mid-load fails open, is counted and logged once, and is used again when it is back.
// Failing closed (no redis-server needed) is in fail-closed.test.ts.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSimOpenAi, type SimOpenAi } from '../../agent/demo/sim-openai.js';
import { hashKey } from '../../agent/proxy/tenants.js';
import { eventually, freePort, getText, spawnAgent, type AgentProcess, tempDir } from '../helpers.js';
import { post, sumOf } from './harness.js';

const REDIS = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
const KEY = 'sk-shared-tenant-0001';
const SKEWED_KEY = 'sk-skewed-tenant-0002';
/** Preloaded into a pod to move its wall clock (Date.now) by ms: the pods then disagree by minutes. */
const skewClock = (ms: number) => `--import=data:text/javascript,const%20n%3DDate.now%3BDate.now%3D()%3D%3En()%2B(${ms})%3B`;

function pong(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.end('PING\r\n');
    });
    s.on('data', (d) => {
      resolve(String(d).startsWith('+PONG'));
      s.destroy();
    });
    s.on('error', () => resolve(false));
  });
}

async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--enable-debug-command', 'yes'], {
    stdio: 'ignore',
  });
  await eventually(async () => child.exitCode !== null || (await pong(port)), 5000, 'redis-server answering PING');
  if (child.exitCode !== null) throw new Error(`redis-server exited ${child.exitCode} on port ${port}`);
  return child;
}

/** A port found free can be taken before redis-server binds it: then it is tried on another. */
async function startRedisOnFreePort(): Promise<{ port: number; child: ChildProcess }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return { port, child: await startRedis(port) };
    } catch (err) {
      if (attempt === 3) throw err;
    }
  }
}

function stopRedis(child: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (child.exitCode !== null) return r();
    child.once('exit', () => r());
    child.kill('SIGKILL');
  });
}

describe('rate limits shared through Redis', { skip: !REDIS && 'redis-server not installed' }, () => {
  let redisPort: number;
  let redis: ChildProcess;
  let engine: SimOpenAi;
  const agents: AgentProcess[] = [];
  const proxies: string[] = [];

  before(async () => {
    ({ port: redisPort, child: redis } = await startRedisOnFreePort());
    engine = await startSimOpenAi({ models: ['m'], ttftMs: 1, itlMs: 1, tokens: 1 });
    const dir = tempDir('infertel-redis-');
    const config = join(dir, 'config.yaml');
    writeFileSync(
      config,
      [
        'rateLimits:',
        '  redis: { timeout: 200ms }',
        'tenants:',
        `  - { name: shared, keys: ["${hashKey(KEY)}"], limits: { requestsPerMinute: 60 } }`,
        `  - { name: skewed, keys: ["${hashKey(SKEWED_KEY)}"], limits: { requestsPerMinute: 60 } }`,
        '',
      ].join('\n'),
    );
    // Pods 0 and 1 share the clock; pods 2 and 3 are three minutes ahead and behind it.
    for (const skew of [0, 0, 180_000, -180_000]) {
      const agent = await spawnAgent(['--config', config, '--proxy-listen', '127.0.0.1:0', '--proxy-target', engine.url], {
        INFERTEL_REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
        ...(skew ? { NODE_OPTIONS: skewClock(skew) } : {}),
      });
      agents.push(agent);
      proxies.push(agent.proxyBase!);
    }
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await engine.close();
    await stopRedis(redis);
  });

  it('two pods let a 60-a-minute tenant through about 60 times, not 120', async () => {
    const t0 = Date.now();
    let allowed = 0;
    let refused = 0;
    for (let i = 0; i < 150; i++) {
      const r = await post(`${proxies[i % 2]}/v1/completions`, { model: 'm', prompt: 'x' }, { authorization: `Bearer ${KEY}` });
      if (r.status === 200) allowed++;
      else if (r.status === 429) refused++;
    }
    const seconds = (Date.now() - t0) / 1000;
    // The burst is 60; the bucket refills one a second while the test runs.
    assert.ok(allowed >= 60 && allowed <= 60 + Math.ceil(seconds) + 1, `${allowed} allowed in ${seconds.toFixed(1)} s`);
    assert.equal(allowed + refused, 150);
    const both = await Promise.all(
      agents.map(async (a) => sumOf((await getText(`${a.base}/metrics`)).body, 'rate_limited_requests_total', { tenant: 'shared' })),
    );
    assert.ok(both[0]! > 0 && both[1]! > 0, `each pod refused some: ${both}`);
  });

  it('clock skew between pods does not break the shared limit (the bucket runs on Redis time)', async () => {
    const skewed = agents.slice(2);
    // The preload did move each pod's clock: the time on its log lines (pino reads Date.now) says so.
    const clocks = skewed.map((a) =>
      Date.parse(
        JSON.parse(
          a
            .output()
            .split('\n')
            .find((l) => l.startsWith('{'))!,
        ).time,
      ),
    );
    assert.ok(clocks[0]! - Date.now() > 150_000 && Date.now() - clocks[1]! > 150_000, `pod clocks ${clocks.map((c) => c - Date.now())} ms off`);
    const t0 = Date.now();
    let allowed = 0;
    for (let i = 0; i < 150; i++) {
      const r = await post(`${proxies[2 + (i % 2)]}/v1/completions`, { model: 'm', prompt: 'x' }, { authorization: `Bearer ${SKEWED_KEY}` });
      if (r.status === 200) allowed++;
    }
    const seconds = (Date.now() - t0) / 1000;
    // With each pod's own clock, every switch between them would look like 6 minutes of refill.
    assert.ok(allowed >= 60 && allowed <= 60 + Math.ceil(seconds) + 1, `${allowed} allowed in ${seconds.toFixed(1)} s`);
  });

  it('Redis answering slowly: an admission waits only rateLimits.redis.timeout, then fails open', async () => {
    const errorsBefore = sumOf((await getText(`${agents[0]!.base}/metrics`)).body, 'rate_limiter_backend_errors_total', { backend: 'redis' });
    const blocker = net.connect(redisPort, '127.0.0.1', () => blocker.write('DEBUG SLEEP 1.5\r\n'));
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    const r = await post(`${proxies[0]}/v1/completions`, { model: 'm', prompt: 'x' }, { authorization: `Bearer ${KEY}` });
    const ms = performance.now() - t0;
    // The tenant's bucket is empty after the first test: only failing open lets this through.
    assert.equal(r.status, 200, 'fail open');
    assert.ok(ms < 1200, `answered after ${ms.toFixed(0)} ms while Redis slept 1.5 s`);
    const errors = sumOf((await getText(`${agents[0]!.base}/metrics`)).body, 'rate_limiter_backend_errors_total', { backend: 'redis' });
    assert.ok(errors > errorsBefore, 'the timeout is counted');
    await new Promise((res) => setTimeout(res, 1600));
    blocker.destroy();
    // Redis answers again: the next admission goes through it, and the recovery is logged.
    await post(`${proxies[0]}/v1/completions`, { model: 'm', prompt: 'x' }, { authorization: `Bearer ${KEY}` });
    await eventually(async () => agents[0]!.output().includes('rate limiter backend back'), 3000, 'recovery logged');
  });

  it('Redis killed mid-load: admissions fail open, errors are counted and logged once; Redis back: limits again', async () => {
    const downsOf = () =>
      agents[0]!
        .output()
        .split('\n')
        .filter((l) => l.includes('rate limiter backend unavailable')).length;
    const downsBefore = downsOf();
    const errorsBefore = sumOf((await getText(`${agents[0]!.base}/metrics`)).body, 'rate_limiter_backend_errors_total', { backend: 'redis' });
    await stopRedis(redis);
    for (let i = 0; i < 5; i++) {
      const r = await post(`${proxies[0]}/v1/completions`, { model: 'm', prompt: 'x' }, { authorization: `Bearer ${KEY}` });
      assert.equal(r.status, 200, 'fail open: admitted while Redis is down');
    }
    const m = (await getText(`${agents[0]!.base}/metrics`)).body;
    assert.ok(sumOf(m, 'rate_limiter_backend_errors_total', { backend: 'redis' }) - errorsBefore >= 5);
    assert.equal(downsOf() - downsBefore, 1, 'the change of state is logged once, not per request');
    redis = await startRedis(redisPort);
    // A fresh Redis has a full bucket; after 60 more the tenant is refused again.
    const refusedAgain = await eventually(
      async () => {
        for (let i = 0; i < 80; i++) {
          const r = await post(`${proxies[1]}/v1/completions`, { model: 'm', prompt: 'x' }, { authorization: `Bearer ${KEY}` });
          if (r.status === 429) return true;
        }
        return false;
      },
      15_000,
      'limits enforced again',
    );
    assert.ok(refusedAgain);
    await eventually(async () => agents[1]!.output().includes('rate limiter backend back'), 5000, 'the recovery logged');
  });
});
