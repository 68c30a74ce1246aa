// The shared rate-limit backend: every pod of a deployment admits against one budget per tenant
// in Redis. One round trip per admission (a server-side Lua script), times from Redis's own
// clock (TIME), so pods whose clocks disagree still share one budget. Unreachable or slower than
// the deadline: fail open (admit) or closed (503) as configured, counted, the change of state
// logged once, and back to Redis when it answers again.

import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../logger.js';
import type { Admission, LimitKind, LimitState, TenantLimits } from './limits.js';

// Buckets are hashes {level, at}; `at` in ms of Redis's clock. A bucket refills at capacity/60
// per second up to capacity; a fresh one starts full. Open streams are a sorted set of request
// ids scored by when they would expire, so a pod that dies holding streams frees them later.
const LUA_REFILL = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function refill(key, cap, now)
  if cap <= 0 then return 0 end
  local v = redis.call('HMGET', key, 'level', 'at')
  local level = tonumber(v[1])
  local at = tonumber(v[2])
  if level == nil then level = cap; at = now end
  if now > at then level = math.min(cap, level + (now - at) / 60000 * cap); at = now end
  return level, at
end
`;

/** KEYS: requests bucket, tokens bucket, open set. ARGV: rpm, tpm, concurrent, shadow, id, stream ttl ms. */
const ADMIT = `${LUA_REFILL}
local now = now_ms()
local rpm = tonumber(ARGV[1]); local tpm = tonumber(ARGV[2]); local conc = tonumber(ARGV[3])
local shadow = ARGV[4] == '1'
local rl, ra = refill(KEYS[1], rpm, now)
local tl, ta = refill(KEYS[2], tpm, now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local open = redis.call('ZCARD', KEYS[3])
local refused = ''
local wait = 0
if rpm > 0 and rl < 1 then refused = 'requests'; wait = (1 - rl) / rpm * 60000
elseif tpm > 0 and tl <= 0 then refused = 'tokens'; wait = (math.min(1, tpm) - tl) / tpm * 60000
elseif conc > 0 and open >= conc then refused = 'concurrent'; wait = 1000 end
local allowed = refused == '' or shadow
if allowed then
  if rpm > 0 then rl = rl - 1 end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
end
if rpm > 0 then redis.call('HSET', KEYS[1], 'level', tostring(rl), 'at', ra); redis.call('PEXPIRE', KEYS[1], 120000) end
if tpm > 0 then redis.call('HSET', KEYS[2], 'level', tostring(tl), 'at', ta); redis.call('PEXPIRE', KEYS[2], 120000) end
return {allowed and 1 or 0, refused, tostring(rl), tostring(tl), tostring(wait), open + (allowed and 1 or 0)}
`;

/** KEYS: tokens bucket, open set. ARGV: tpm, id, tokens used. */
const RELEASE = `${LUA_REFILL}
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[2])
local tpm = tonumber(ARGV[1]); local used = tonumber(ARGV[3])
if tpm > 0 and used > 0 then
  local tl, ta = refill(KEYS[1], tpm, now)
  redis.call('HSET', KEYS[1], 'level', tostring(tl - used), 'at', ta)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
return 1
`;

export interface RedisLimiterOptions {
  url: string;
  /** An admission waits this long for Redis, then fails open or closed. */
  timeoutMs: number;
  failOpen: boolean;
  /** A stream still open after this is no longer counted as concurrent (a pod died holding it). */
  streamTtlMs: number;
  log: Logger;
  /** Counted per error (rate_limiter_backend_errors_total{backend="redis"}). */
  onError: () => void;
}

type Reply = [number, string, string, string, string, number];

export class RedisLimiter {
  private readonly redis: Redis;
  private healthy = true;
  private readonly prefix = 'infertel:rl:';

  constructor(private readonly opts: RedisLimiterOptions) {
    this.redis = new Redis(opts.url, {
      lazyConnect: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 1000,
      retryStrategy: () => 500,
    });
    this.redis.on('error', () => {
      // Every failed call is counted where it fails; the connection's own errors only retry.
    });
    this.redis.defineCommand('infertelAdmit', { numberOfKeys: 3, lua: ADMIT });
    this.redis.defineCommand('infertelRelease', { numberOfKeys: 2, lua: RELEASE });
  }

  /** Resolves once connected, or after `ms` (admissions before then fail open or closed as configured). */
  ready(ms = 1000): Promise<void> {
    if (this.redis.status === 'ready') return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      t.unref();
      this.redis.once('ready', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private state(ok: boolean, why?: string): void {
    if (ok === this.healthy) return;
    this.healthy = ok;
    if (ok) this.opts.log.info({ component: 'ratelimit', backend: 'redis' }, 'rate limiter backend back');
    else this.opts.log.warn({ component: 'ratelimit', backend: 'redis', why, failOpen: this.opts.failOpen }, 'rate limiter backend unavailable');
  }

  private deadline<T>(p: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer within ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
      p.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }

  /** Admits against the shared budget; `unavailable` when Redis failed and the limiter fails closed. */
  async admit(tenant: string, t: TenantLimits): Promise<Admission & { unavailable: boolean }> {
    const l = t.limits;
    const id = randomUUID();
    const key = `${this.prefix}${tenant}`;
    let reply: Reply;
    try {
      reply = (await this.deadline(
        (this.redis as unknown as { infertelAdmit(...a: Array<string | number>): Promise<Reply> }).infertelAdmit(
          `${key}:requests`,
          `${key}:tokens`,
          `${key}:open`,
          l.requestsPerMinute ?? 0,
          l.tokensPerMinute ?? 0,
          l.concurrent ?? 0,
          t.shadow ? '1' : '0',
          id,
          this.opts.streamTtlMs,
        ),
      )) as Reply;
      this.state(true);
    } catch (err) {
      this.opts.onError();
      this.state(false, (err as Error).message);
      const allowed = this.opts.failOpen;
      return {
        allowed,
        unavailable: !allowed,
        refusedBy: undefined,
        retryAfterSeconds: 1,
        requests: undefined,
        tokens: undefined,
        concurrentRatio: undefined,
        release: () => {},
      };
    }
    const [allowed, refused, rl, tl, wait, open] = reply;
    const level = (s: string) => Number(s);
    const state = (lvl: number, cap: number | undefined): LimitState | undefined =>
      cap === undefined ? undefined : { limit: cap, remaining: Math.max(0, Math.floor(lvl)), resetMs: Math.max(0, ((cap - lvl) / cap) * 60_000) };
    let released = allowed !== 1;
    return {
      allowed: allowed === 1,
      unavailable: false,
      refusedBy: refused ? (refused as LimitKind) : undefined,
      retryAfterSeconds: Math.max(1, Math.ceil(Number(wait) / 1000)),
      requests: state(level(rl), l.requestsPerMinute),
      tokens: state(level(tl), l.tokensPerMinute),
      concurrentRatio: l.concurrent ? Math.max(0, l.concurrent - Number(open)) / l.concurrent : undefined,
      release: (used) => {
        if (released) return;
        released = true;
        const call = (this.redis as unknown as { infertelRelease(...a: Array<string | number>): Promise<unknown> }).infertelRelease(
          `${key}:tokens`,
          `${key}:open`,
          l.tokensPerMinute ?? 0,
          id,
          used ?? 0,
        );
        this.deadline(call).catch(() => this.opts.onError());
      },
    };
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
