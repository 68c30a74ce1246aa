// The one config schema: TypeScript types, validation and defaults come from here.
// Durations are strings like "10s"; sizes are bytes.

import { FLAVORS, type Flavor } from '../sources/flavor.js';
import { z } from 'zod';
import { isIP } from 'node:net';
import { parseDuration } from './duration.js';

/** Every duration has bounds: a timer past 2^31 ms would fire at once, and 0 would spin. */
export interface DurationBounds {
  minMs: number;
  maxMs: number;
}

function formatMs(ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** Milliseconds within bounds, or the problem with the value. */
export function checkDuration(v: string | number, b: DurationBounds): number | string {
  const ms = parseDuration(v);
  if (ms === undefined) return `must be a duration such as "10s" or "500ms", got ${JSON.stringify(v).slice(0, 40)}`;
  if (ms < b.minMs || ms > b.maxMs) return `must be between ${formatMs(b.minMs)} and ${formatMs(b.maxMs)}, got ${JSON.stringify(v).slice(0, 40)}`;
  return ms;
}

function toBoundedMs(b: DurationBounds) {
  return (v: string | number, ctx: z.RefinementCtx): number => {
    const r = checkDuration(v, b);
    if (typeof r === 'string') {
      ctx.addIssue({ code: 'custom', message: r });
      return z.NEVER;
    }
    return r;
  };
}

export const INTERVAL_BOUNDS: DurationBounds = { minMs: 100, maxMs: 3_600_000 };
export const TIMEOUT_BOUNDS: DurationBounds = { minMs: 10, maxMs: 600_000 };

const duration = (dflt: string, b: DurationBounds) => z.union([z.string(), z.number()]).default(dflt).transform(toBoundedMs(b));
const optionalDuration = (b: DurationBounds) =>
  z
    .union([z.string(), z.number()])
    .optional()
    .transform((v, ctx) => (v === undefined ? undefined : toBoundedMs(b)(v, ctx)));

/** A listen or bind host: empty (all interfaces), an IPv4 address, a bracketed IPv6 address, or a DNS name. */
export function hostProblem(host: string): string | undefined {
  if (host === '') return undefined;
  if (host.startsWith('[') && host.endsWith(']')) return isIP(host.slice(1, -1)) === 6 ? undefined : `"${host}" is not an IPv6 address`;
  if (/^[0-9.]+$/.test(host)) return isIP(host) === 4 ? undefined : `"${host}" is not an IPv4 address`;
  if (host.length > 253 || !host.split('.').every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l)))
    return `"${host.slice(0, 64)}" is not a host name`;
  return undefined;
}

/** A JavaScript regular expression, checked to compile. */
const regexText = z
  .string()
  .min(1)
  .max(512)
  .superRefine((v, ctx) => {
    try {
      new RegExp(v);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be a valid regular expression' });
    }
  });

const hostPort = z.string().superRefine((v, ctx) => {
  const idx = v.lastIndexOf(':');
  const port = idx < 0 ? NaN : Number(v.slice(idx + 1));
  if (idx < 0 || !/^\d{1,5}$/.test(v.slice(idx + 1))) ctx.addIssue({ code: 'custom', message: 'must be HOST:PORT, e.g. 0.0.0.0:9400' });
  else if (port > 65535) ctx.addIssue({ code: 'custom', message: `port must be 0-65535 (0: any free port), got ${v.slice(idx + 1)}` });
  const hp = idx < 0 ? undefined : hostProblem(v.slice(0, idx));
  if (hp) ctx.addIssue({ code: 'custom', message: hp });
});
const labelValueText = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be letters, digits, dot, dash or underscore');
/** Per-minute budgets and a concurrency cap; each optional (absent: no limit of that kind). */
const limitsSchema = z.strictObject({
  requestsPerMinute: z.number().positive().max(1e9).optional(),
  tokensPerMinute: z.number().positive().max(1e12).optional(),
  concurrent: z.number().int().min(1).max(1e6).optional(),
});
const labelName = z.string().regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/, 'must be a Prometheus label name');

const upstreamSchema = z.strictObject({
  /** Value of the `upstream` label; defaults to the URL's host:port. */
  name: z.string().min(1).optional(),
  url: z.url({ protocol: /^https?$/, message: 'must be an http(s) URL' }),
  /** An engine of the engine table (sources/flavor.ts), or auto: detect from the metric families. */
  flavor: z.enum([...FLAVORS, 'auto']).default('auto'),
  /** Model label for series that name none (TGI). */
  model: z.string().min(1).optional(),
  /** Scrape interval (100ms-1h); defaults to the top-level interval. */
  interval: optionalDuration(INTERVAL_BOUNDS),
  /** Whole-scrape deadline (10ms-10m); must be shorter than the interval. */
  timeout: optionalDuration(TIMEOUT_BOUNDS),
  /**
   * Largest body accepted, in bytes (8 MiB; the largest vLLM payload measured, 26 engines x 5
   * models, is 5.6 MB). A parsed body takes about ten times its size in heap: the memory budget
   * in the README is set from this cap.
   */
  maxBodyBytes: z
    .number()
    .int()
    .positive()
    .max(256 * 1024 * 1024)
    .default(8 * 1024 * 1024),
  /** Re-export the engine's own families beside the canonical ones. */
  passthrough: z.boolean().default(true),
  auth: z
    .strictObject({
      bearerTokenFile: z.string().min(1).optional(),
      basic: z.strictObject({ username: z.string(), passwordFile: z.string().min(1) }).optional(),
    })
    .optional(),
  tls: z
    .strictObject({
      caFile: z.string().optional(),
      certFile: z.string().optional(),
      keyFile: z.string().optional(),
      insecureSkipVerify: z.boolean().default(false),
    })
    .optional(),
});

export const configSchema = z.strictObject({
  /** Address of the agent's own HTTP server (/metrics, /healthz, /readyz). */
  listen: hostPort.default('0.0.0.0:9400'),
  /** Engines to scrape. */
  upstreams: z.array(upstreamSchema).default([]),
  /** Model label for upstreams whose metrics name none, when the upstream sets none. */
  model: z.string().min(1).optional(),
  /** Default scrape interval (100ms-1h). */
  interval: duration('10s', INTERVAL_BOUNDS),
  /** Default scrape timeout (10ms-10m, less than the interval). */
  timeout: duration('5s', TIMEOUT_BOUNDS),
  /** ms: the documented _ms names; seconds: _seconds names in base units. */
  units: z.enum(['ms', 'seconds']).default('ms'),
  /** rebucket: documented layouts; native: the engine's own bounds, scaled. */
  histograms: z.enum(['rebucket', 'native']).default('rebucket'),
  /**
   * Per-metric bucket layouts: canonical name -> ascending bounds in the profile's unit, or the
   * name of a catalogue layout (`request_long` keeps requests up to ~7 minutes apart).
   */
  buckets: z.record(z.string(), z.union([z.array(z.number().positive().finite()).min(1).max(1000), z.string().min(1)])).default({}),
  limits: z
    .strictObject({
      /** Series per metric before new ones fold into the overflow series. */
      seriesPerMetric: z.number().int().positive().default(2000),
      /** Series over all metrics. */
      seriesTotal: z.number().int().positive().default(50_000),
      /** Label values are cut to this many characters. */
      labelValueLength: z.number().int().min(16).default(128),
      /** Buckets (histograms) or quantiles (summaries) one passthrough series may have; more drops the series. */
      bucketsPerSeries: z.number().int().min(2).max(10_000).default(128),
      /** Scrapes a series may be missing from before it is dropped. */
      staleAfterScrapes: z.number().int().min(1).default(3),
    })
    .prefault({}),
  labels: z
    .strictObject({
      /** Label names never exported, added to the built-in list (request_id, user_id, …). */
      forbidden: z.array(labelName).default([]),
      /** Labels whose values may look like ids, hashes or addresses. */
      unboundedAllowed: z.array(labelName).default(['model', 'model_name']),
    })
    .prefault({}),
  proxy: z
    .strictObject({
      /** Address of the inline proxy (request-level mode); unset: no proxy. */
      listen: hostPort.optional(),
      /** The engine's base URL the proxy forwards to, e.g. http://127.0.0.1:8000. */
      target: z.url({ protocol: /^https?$/, message: 'must be an http(s) URL' }).optional(),
      /** Request bodies above this many bytes are answered 413 and never reach the engine. */
      maxBodyBytes: z
        .number()
        .int()
        .positive()
        .max(1024 * 1024 * 1024)
        .default(32 * 1024 * 1024),
      /** Tenants carried as label values; the rest fold into tenant="other" (counted). */
      maxTenants: z.number().int().min(1).max(10_000).default(200),
      /** A request still waiting for the engine's response headers after this is answered 504. */
      upstreamTimeout: duration('60s', TIMEOUT_BOUNDS),
      /** Emit a decode.loop span event every this many output chunks. */
      traceTokenEvery: z.number().int().min(1).default(32),
      /** Concurrent proxied requests; above it the answer is 503 (counted). */
      maxConcurrent: z.number().int().min(1).default(4096),
      /**
       * What carries the bytes: `native`, the addon's loop (native/src/edge.rs); `node`, Node's HTTP
       * stack; `auto`, native when the addon is built and the target is plain http with no base path.
       */
      dataPath: z.enum(['auto', 'native', 'node']).default('auto'),
      /**
       * How the agent's own threads are scheduled while the native data path needs nothing of them
       * per request (no rate limits, no tracing): `idle`, SCHED_IDLE, so the loop, the engine and
       * its clients get a busy CPU first; `normal`, as the agent was started.
       */
      agentThreads: z.enum(['idle', 'normal']).default('idle'),
    })
    .prefault({}),
  /** Tenants of the proxy: an API key's SHA-256 (`infertel hash-key`) names its tenant. */
  tenants: z
    .array(
      z.strictObject({
        name: labelValueText,
        keys: z.array(z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be sha256:<64 lowercase hex digits> (infertel hash-key)')).default([]),
        /** slo_class on this tenant's request spans (a request header x-slo-class wins). */
        sloClass: z.string().min(1).max(64).optional(),
        /** This tenant's rate limits; fields it leaves out come from rateLimits.default. */
        limits: limitsSchema.optional(),
        /** Counted against the limits but never refused. */
        shadow: z.boolean().default(false),
      }),
    )
    .default([]),
  rateLimits: z
    .strictObject({
      /** Limits of tenants that set none (and of anonymous and unknown clients). */
      default: limitsSchema.optional(),
      /** Shared state across pods (env INFERTEL_REDIS_URL); absent: in memory, right for one pod. */
      redis: z
        .strictObject({
          url: z.url({ protocol: /^rediss?$/, message: 'must be a redis:// URL' }),
          /** An admission waits this long for Redis, then fails open or closed. */
          timeout: duration('25ms', TIMEOUT_BOUNDS),
        })
        .optional(),
      /** When the shared backend is unreachable: admit (true) or answer 503 (false). */
      failOpen: z.boolean().default(true),
    })
    .prefault({}),
  requestLog: z
    .strictObject({
      /** Share of successful requests logged (0-1). */
      sampleSuccess: z.number().min(0).max(1).default(0.01),
      /** Share of errors logged: non-2xx, aborts and resets (0-1). */
      sampleError: z.number().min(0).max(1).default(1),
      /** File to write request logs to (rotated by size); unset: stdout. */
      path: z.string().min(1).optional(),
      /** Rotate the file at this size, e.g. "100m" (pino-roll's size syntax). */
      maxSize: z
        .string()
        .regex(/^\d+[kmg]?$/, 'must be a size such as 100m')
        .default('100m'),
      /** Rotated files kept. */
      maxFiles: z.number().int().min(1).max(1000).default(5),
      /** File holding the HMAC secret of prompt_hash; unset: no prompt_hash. */
      hashSecretFile: z.string().min(1).optional(),
    })
    .prefault({}),
  streamValidator: z
    .strictObject({
      /** A gap between two events of a stream longer than this counts as a stall (canaries always, proxied streams when the proxy is on). */
      stallAfter: duration('10s', TIMEOUT_BOUNDS),
    })
    .prefault({}),
  /** Synthetic canaries: streams infertel sends itself, straight to the engine (003 §18.11). */
  canaries: z
    .array(
      z.strictObject({
        /** A model the engine serves (the request's `model`). */
        model: z.string().min(1).max(256),
        prompt: z.string().min(1).max(4096),
        interval: duration('30s', { minMs: 1000, maxMs: 3_600_000 }),
        sloClass: labelValueText.default('streaming'),
        /** Longest wait for the first content chunk before the run fails as ttft_exceeded. */
        maxTtftMs: z.number().positive().max(600_000).default(800),
        /** Slowest decode speed (tokens after the first over the time after the first) that passes. */
        minTokensPerSecond: z.number().min(0).max(1_000_000).default(30),
        /** The run is abandoned after this long and fails as timeout. */
        maxTotalMs: z.number().int().min(100).max(600_000).default(20_000),
        /** A regular expression the answer must match, else content_mismatch. */
        mustMatch: regexText.optional(),
        /** A regular expression the answer must not match, else content_mismatch. */
        mustNotMatch: regexText.optional(),
        /** max_tokens of the canary request. */
        maxTokens: z.number().int().min(1).max(4096).default(64),
      }),
    )
    .max(64)
    .default([]),
  /** The engine canaries go to when the proxy is off (default: proxy.target). */
  canaryTarget: z.url({ protocol: /^https?$/, message: 'must be an http(s) URL' }).optional(),
  /** Load probes: off by default; once a day at `at` (UTC) a short burst per concurrency step. */
  loadProbe: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** Time of day, UTC, HH:MM - pick an off-peak hour. */
      at: z
        .string()
        .regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (UTC), e.g. 03:30')
        .default('03:30'),
      /** Model to probe; default: the first canary's. */
      model: z.string().min(1).max(256).optional(),
      prompt: z.string().min(1).max(4096).default('Count from 1 to 20.'),
      /** Concurrent streams of each step, in order. */
      concurrency: z.array(z.number().int().min(1).max(256)).min(1).max(16).default([1, 2, 4, 8, 16]),
      /** Requests per step (at least the step's concurrency). */
      requestsPerStep: z.number().int().min(1).max(1024).default(16),
      maxTokens: z.number().int().min(1).max(4096).default(64),
      /** One request of the probe is abandoned after this long. */
      timeout: duration('60s', TIMEOUT_BOUNDS),
    })
    .prefault({}),
  ui: z
    .strictObject({
      /** The status page at / and its data at /api/v1/status, on the listen address of /metrics. */
      enabled: z.boolean().default(true),
    })
    .prefault({}),
  tracing: z
    .strictObject({
      /** OTLP/HTTP endpoint (base URL); OTEL_EXPORTER_OTLP_ENDPOINT also sets it. Unset: no tracing. */
      endpoint: z.url().optional(),
      serviceName: z.string().default('infertel'),
      /** OTLP encoding; OTEL_EXPORTER_OTLP_PROTOCOL also sets it (grpc is not supported). */
      protocol: z.enum(['http/protobuf', 'http/json'], { message: 'must be http/protobuf or http/json (grpc is not supported)' }).default('http/protobuf'),
    })
    .prefault({}),
  gpu: z
    .strictObject({
      /** Path of libnvidia-ml.so.1 (default: the dynamic loader's search). */
      nvmlLibrary: z.string().min(1).optional(),
      /** Path of AMD SMI's libamd_smi.so (default: the dynamic loader's search, e.g. /opt/rocm/lib on its path). */
      amdSmiLibrary: z.string().min(1).optional(),
      /** GPU poll interval. */
      interval: duration('5s', INTERVAL_BOUNDS),
      /** A poll that takes longer is abandoned, counted, and the last values are marked stale. */
      timeout: duration('2s', TIMEOUT_BOUNDS),
      /** auto: NVML, then AMD SMI, then nvidia-smi (through systeminformation), then amd-smi, then none; any other value pins that one. */
      source: z.enum(['auto', 'nvml', 'amdsmi', 'nvidia-smi', 'amd-smi', 'none']).default('auto'),
      /** process name (as in /proc/PID/comm) -> role used in gpu_process_mem_bytes{process}. */
      processRoles: z.record(z.string(), z.string()).default({}),
      /** Engine log file tailed for CUDA out-of-memory lines (gpu_oom_events_total). */
      oomLogPath: z.string().optional(),
      /** Peak dense BF16 TFLOP/s of one GPU, for MFU (default: the GPU table by device name). */
      peakTflops: z.number().positive().max(1_000_000).optional(),
      /** Peak memory bandwidth of one GPU in GB/s, for bandwidth utilisation (default: the GPU table). */
      peakMemoryBandwidthGBs: z.number().positive().max(1_000_000).optional(),
      /** Simulated GPUs instead of real ones (the demo uses this; 0 = off). */
      simulate: z.number().int().min(0).max(16).default(0),
      /** Which vendor's GPUs the simulation shows. */
      simulateVendor: z.enum(['nvidia', 'amd']).default('nvidia'),
    })
    .prefault({}),
  /** debug | info | warn | error */
  logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
});

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;

/** An upstream with every default resolved. */
export interface UpstreamConfig {
  name: string;
  url: string;
  flavor: Flavor | 'auto';
  model: string | undefined;
  intervalMs: number;
  timeoutMs: number;
  maxBodyBytes: number;
  passthrough: boolean;
  auth: ParsedConfig['upstreams'][number]['auth'];
  tls: ParsedConfig['upstreams'][number]['tls'];
}

export type AgentConfig = Readonly<Omit<ParsedConfig, 'upstreams'> & { upstreams: readonly UpstreamConfig[] }>;
