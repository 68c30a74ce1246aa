// Rate-limit admission cost per request: the in-memory backend and the Redis backend (one Lua
// script per admission), next to a bare Redis PING round trip measured in the same run.

import { spawn, spawnSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { createLogger } from '../agent/logger.js';
import { MemoryLimiter, type TenantLimits } from '../agent/proxy/limits.js';
import { RedisLimiter } from '../agent/proxy/redis-limits.js';
import { freePort, pct } from './stats.js';

const LIMITS: TenantLimits = { limits: { requestsPerMinute: 1e9, tokensPerMinute: 1e12, concurrent: 1e6 }, shadow: false };

export async function benchLimits(say: (s?: string) => void): Promise<void> {
  say('### Rate-limit admission cost per request (5,000 sequential admissions each, one tenant)');
  say();
  const server = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
  const rows: Array<[string, number[]]> = [];
  const memory = new MemoryLimiter();
  const mem: number[] = [];
  for (let i = 0; i < 5000; i++) {
    const t0 = performance.now();
    memory.admit('t', LIMITS).release(10);
    mem.push((performance.now() - t0) * 1000);
  }
  rows.push(['in memory (one pod)', mem]);
  if (server) {
    const port = await freePort();
    const child = spawn(server, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 300));
    const url = `redis://127.0.0.1:${port}/0`;
    const limiter = new RedisLimiter({ url, timeoutMs: 1000, failOpen: true, streamTtlMs: 600_000, log: createLogger('error'), onError: () => {} });
    const bare = new Redis(url);
    const ping: number[] = [];
    const admit: number[] = [];
    for (let i = 0; i < 200; i++) {
      await bare.ping();
      (await limiter.admit('t', LIMITS)).release(10);
    }
    for (let i = 0; i < 5000; i++) {
      let t0 = performance.now();
      await bare.ping();
      ping.push((performance.now() - t0) * 1000);
      t0 = performance.now();
      (await limiter.admit('t', LIMITS)).release(10);
      admit.push((performance.now() - t0) * 1000);
    }
    rows.push(['Redis (Lua script, one round trip)', admit], ['anchor: bare Redis PING round trip', ping]);
    bare.disconnect();
    await limiter.close();
    child.kill();
  }
  say('| backend | p50 | p99 |');
  say('|---|---|---|');
  for (const [name, v] of rows) say(`| ${name} | ${pct(v, 50).toFixed(1)} µs | ${pct(v, 99).toFixed(1)} µs |`);
  if (!server) say('| Redis | (redis-server not installed) | |');
  say();
}
