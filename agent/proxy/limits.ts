// Per-tenant rate limits: requests per minute, tokens per minute and concurrent streams. Each
// per-minute limit is a token bucket holding one minute's worth (a burst equal to the limit
// passes) that refills at limit/60 per second, so no boundary lets twice the limit through.
// Tokens are charged when a request's usage is known: a stream is never cut, and what it used
// counts against later requests (the bucket may go below zero and must refill first).
// This is the in-memory backend (one pod); state is bounded by the configured tenants.

export type LimitKind = 'requests' | 'tokens' | 'concurrent';
export const LIMIT_KINDS: readonly LimitKind[] = ['requests', 'tokens', 'concurrent'];

export interface Limits {
  requestsPerMinute: number | undefined;
  tokensPerMinute: number | undefined;
  concurrent: number | undefined;
}

export interface TenantLimits {
  limits: Limits;
  /** Counted, never refused. */
  shadow: boolean;
}

/** A tenant's limits: its own fields, the rest from the default, field by field. */
export function effectiveLimits(own: Partial<Limits> | undefined, dflt: Partial<Limits> | undefined): Limits {
  return {
    requestsPerMinute: own?.requestsPerMinute ?? dflt?.requestsPerMinute,
    tokensPerMinute: own?.tokensPerMinute ?? dflt?.tokensPerMinute,
    concurrent: own?.concurrent ?? dflt?.concurrent,
  };
}

/** A bucket of `capacity` refilling at capacity/60 per second; `level` may be negative (debt). */
interface Bucket {
  level: number;
  at: number;
}

function refill(b: Bucket, capacity: number, nowMs: number): void {
  if (nowMs > b.at) b.level = Math.min(capacity, b.level + ((nowMs - b.at) / 60_000) * capacity);
  b.at = Math.max(b.at, nowMs);
}

/** Milliseconds until a bucket is full again (what OpenAI's x-ratelimit-reset-* say). */
function msToFull(b: Bucket, capacity: number): number {
  return capacity > 0 ? Math.max(0, ((capacity - b.level) / capacity) * 60_000) : 0;
}

/** Milliseconds until a bucket holds at least `need`. */
function msUntil(b: Bucket, capacity: number, need: number): number {
  return capacity > 0 ? Math.max(0, ((need - b.level) / capacity) * 60_000) : Infinity;
}

/** OpenAI's duration form for x-ratelimit-reset-*: `20ms`, `1s`, `6m0s`, `1h2m3s`. */
export function openAiDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const total = Math.ceil(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h) return `${h}h${m}m${s}s`;
  if (m) return `${m}m${s}s`;
  return `${s}s`;
}

export interface LimitState {
  limit: number;
  remaining: number;
  resetMs: number;
}

export interface Admission {
  allowed: boolean;
  /** The limit that refused (or would have, in shadow mode). */
  refusedBy: LimitKind | undefined;
  /** Seconds a refused client should wait. */
  retryAfterSeconds: number;
  requests: LimitState | undefined;
  tokens: LimitState | undefined;
  /** Share of the concurrency cap still free after this admission. */
  concurrentRatio: number | undefined;
  /** The shared backend failed and the limiter fails closed: answer 503. */
  unavailable?: boolean;
  /** Call once when the request ends, with the tokens it used (when known). */
  release(tokensUsed: number | undefined): void;
}

interface TenantState {
  requests: Bucket;
  tokens: Bucket;
  open: number;
}

export class MemoryLimiter implements Limiter {
  private readonly state = new Map<string, TenantState>();

  constructor(private readonly now: () => number = Date.now) {}

  private of(tenant: string, l: Limits): TenantState {
    let s = this.state.get(tenant);
    if (!s) {
      const at = this.now();
      s = { requests: { level: l.requestsPerMinute ?? 0, at }, tokens: { level: l.tokensPerMinute ?? 0, at }, open: 0 };
      this.state.set(tenant, s);
    }
    return s;
  }

  /** Admits or refuses one request of `tenant` now. Shadow tenants are never refused, only told. */
  admit(tenant: string, t: TenantLimits): Admission {
    const l = t.limits;
    const s = this.of(tenant, l);
    const now = this.now();
    let refusedBy: LimitKind | undefined;
    let wait = 0;
    if (l.requestsPerMinute !== undefined) {
      refill(s.requests, l.requestsPerMinute, now);
      if (s.requests.level < 1) {
        refusedBy = 'requests';
        wait = msUntil(s.requests, l.requestsPerMinute, 1);
      }
    }
    if (l.tokensPerMinute !== undefined) {
      refill(s.tokens, l.tokensPerMinute, now);
      if (!refusedBy && s.tokens.level <= 0) {
        refusedBy = 'tokens';
        wait = msUntil(s.tokens, l.tokensPerMinute, Math.min(1, l.tokensPerMinute));
      }
    }
    if (!refusedBy && l.concurrent !== undefined && s.open >= l.concurrent) refusedBy = 'concurrent';
    const allowed = refusedBy === undefined || t.shadow;
    if (allowed) {
      if (l.requestsPerMinute !== undefined) s.requests.level -= 1;
      s.open++;
    }
    const state = (b: Bucket, capacity: number | undefined): LimitState | undefined =>
      capacity === undefined ? undefined : { limit: capacity, remaining: Math.max(0, Math.floor(b.level)), resetMs: msToFull(b, capacity) };
    let released = !allowed;
    return {
      allowed,
      refusedBy,
      retryAfterSeconds: refusedBy === 'concurrent' ? 1 : Math.max(1, Math.ceil(wait / 1000)),
      requests: state(s.requests, l.requestsPerMinute),
      tokens: state(s.tokens, l.tokensPerMinute),
      concurrentRatio: l.concurrent ? Math.max(0, l.concurrent - s.open) / l.concurrent : undefined,
      release: (tokensUsed) => {
        if (released) return;
        released = true;
        s.open--;
        if (l.tokensPerMinute !== undefined && tokensUsed !== undefined && tokensUsed > 0) {
          refill(s.tokens, l.tokensPerMinute, this.now());
          s.tokens.level -= tokensUsed;
        }
      },
    };
  }
}

/** What a backend does: admit (at once or after one round trip) and release through the Admission. */
export interface Limiter {
  admit(tenant: string, t: TenantLimits): Admission | Promise<Admission>;
  /** Resolves when the backend can answer (or has been given its chance to). */
  ready?(): Promise<void>;
  close?(): Promise<void>;
}

/** The remaining share of each limit after an admission, for rate_limit_remaining_ratio. */
export function remainingRatios(a: Admission): Partial<Record<LimitKind, number>> {
  const out: Partial<Record<LimitKind, number>> = {};
  if (a.requests) out.requests = a.requests.limit > 0 ? Math.min(1, a.requests.remaining / a.requests.limit) : 0;
  if (a.tokens) out.tokens = a.tokens.limit > 0 ? Math.min(1, a.tokens.remaining / a.tokens.limit) : 0;
  if (a.concurrentRatio !== undefined) out.concurrent = a.concurrentRatio;
  return out;
}

/** The OpenAI-style headers of an answer (429 or not). */
export function rateLimitHeaders(a: Admission): Record<string, string> {
  const h: Record<string, string> = {};
  for (const [kind, s] of [
    ['requests', a.requests],
    ['tokens', a.tokens],
  ] as const) {
    if (!s) continue;
    h[`x-ratelimit-limit-${kind}`] = String(s.limit);
    h[`x-ratelimit-remaining-${kind}`] = String(s.remaining);
    h[`x-ratelimit-reset-${kind}`] = openAiDuration(s.resetMs);
  }
  return h;
}
