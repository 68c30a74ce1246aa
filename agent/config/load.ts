// Config loading: defaults < YAML file < environment < flags, validated in one pass so that every
// problem is reported with its key path, then frozen.

import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { loadCatalogueData, profileName } from '../catalogue/catalogue.js';
import { GPU_SOURCE_NAME } from '../sources/source.js';
import { RESERVED_TENANTS } from '../proxy/tenants.js';
import {
  checkDuration,
  configSchema,
  INTERVAL_BOUNDS,
  TIMEOUT_BOUNDS,
  type AgentConfig,
  type DurationBounds,
  type ParsedConfig,
  type UpstreamConfig,
} from './schema.js';

export class ConfigError extends Error {
  readonly code = 'INFERTEL_CONFIG_INVALID';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Settings that flags and environment variables can give (all optional). */
export interface Overrides {
  listen?: string;
  upstreams?: string[];
  model?: string;
  interval?: string;
  units?: string;
  histograms?: string;
  nvmlLibrary?: string;
  amdsmiLibrary?: string;
  logLevel?: string;
  proxyListen?: string;
  proxyTarget?: string;
  redisUrl?: string;
}

export const ENV_VARS: Record<keyof Overrides, string> = {
  listen: 'INFERTEL_LISTEN',
  upstreams: 'INFERTEL_UPSTREAMS',
  model: 'INFERTEL_MODEL',
  interval: 'INFERTEL_INTERVAL',
  units: 'INFERTEL_UNITS',
  histograms: 'INFERTEL_HISTOGRAMS',
  nvmlLibrary: 'INFERTEL_NVML_LIBRARY',
  amdsmiLibrary: 'INFERTEL_AMDSMI_LIBRARY',
  logLevel: 'INFERTEL_LOG_LEVEL',
  proxyListen: 'INFERTEL_PROXY_LISTEN',
  proxyTarget: 'INFERTEL_PROXY_TARGET',
  redisUrl: 'INFERTEL_REDIS_URL',
};

export function overridesFromEnv(env: NodeJS.ProcessEnv): Overrides {
  const out: Overrides = {};
  for (const [key, name] of Object.entries(ENV_VARS) as Array<[keyof Overrides, string]>) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    if (key === 'upstreams')
      out.upstreams = v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    else out[key] = v;
  }
  return out;
}

/** `[FLAVOR=]URL` as given to --upstream. */
export function parseUpstreamSpec(spec: string): { flavor?: string; url: string } {
  const [, flavor, url] = /^([a-z]+)=(.*)$/.exec(spec) ?? [];
  if (flavor !== undefined && url !== undefined) return { flavor, url };
  return { url: spec };
}

function issuePath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(root)';
}

export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((i) => {
    if (i.code === 'unrecognized_keys') return i.keys.map((k) => `${issuePath([...i.path, k])}: unknown key`).join('\n  - ');
    return `${issuePath(i.path)}: ${i.message}`;
  });
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError([`${path}: not valid YAML (${(err as Error).message.split('\n')[0]})`]);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError([`${path}: must be a YAML mapping`]);
  return doc as Record<string, unknown>;
}

function applyOverrides(raw: Record<string, unknown>, o: Overrides): void {
  if (o.listen !== undefined) raw.listen = o.listen;
  if (o.model !== undefined) raw.model = o.model;
  if (o.interval !== undefined) raw.interval = o.interval;
  if (o.units !== undefined) raw.units = o.units;
  if (o.histograms !== undefined) raw.histograms = o.histograms;
  if (o.logLevel !== undefined) raw.logLevel = o.logLevel;
  if (o.nvmlLibrary !== undefined) raw.gpu = { ...(raw.gpu as object | undefined), nvmlLibrary: o.nvmlLibrary };
  if (o.amdsmiLibrary !== undefined) raw.gpu = { ...(raw.gpu as object | undefined), amdSmiLibrary: o.amdsmiLibrary };
  if (o.proxyListen !== undefined) raw.proxy = { ...(raw.proxy as object | undefined), listen: o.proxyListen };
  if (o.proxyTarget !== undefined) raw.proxy = { ...(raw.proxy as object | undefined), target: o.proxyTarget };
  if (o.redisUrl !== undefined) {
    const rl = (raw.rateLimits ?? {}) as { redis?: object };
    raw.rateLimits = { ...rl, redis: { ...rl.redis, url: o.redisUrl } };
  }
  if (o.upstreams !== undefined) raw.upstreams = o.upstreams.map((s) => parseUpstreamSpec(s));
}

function upstreamName(url: string): string {
  try {
    // host only: never the URL's user:password@.
    return new URL(url).host;
  } catch {
    return url;
  }
}

type Raw = Record<string, unknown>;
const asObject = (v: unknown): Raw | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : undefined);

function rawMs(v: unknown, dflt: string, b: DurationBounds): number | undefined {
  const r = checkDuration(typeof v === 'string' || typeof v === 'number' ? v : dflt, b);
  return typeof r === 'number' ? r : undefined;
}

function fileProblem(path: unknown, key: string): string | undefined {
  if (typeof path !== 'string' || path === '') return undefined;
  try {
    accessSync(path, fsConstants.R_OK);
    return undefined;
  } catch (err) {
    return `${key}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
  }
}

/**
 * Checks that span several keys or need the machine (files), run on the raw document whatever
 * the schema found, so one run lists every problem.
 */
function crossCheck(raw: unknown): string[] {
  const doc = asObject(raw) ?? {};
  const problems: string[] = [];
  const topInterval = rawMs(doc.interval, '10s', INTERVAL_BOUNDS);
  const ups = Array.isArray(doc.upstreams) ? doc.upstreams : [];
  ups.forEach((item, i) => {
    const u = asObject(item);
    if (!u) return;
    const interval = u.interval !== undefined ? rawMs(u.interval, '10s', INTERVAL_BOUNDS) : topInterval;
    const timeout = u.timeout !== undefined ? rawMs(u.timeout, '5s', TIMEOUT_BOUNDS) : undefined;
    if (interval !== undefined && timeout !== undefined && timeout >= interval)
      problems.push(`upstreams[${i}].timeout: must be less than the interval (${timeout} ms >= ${interval} ms)`);
    const auth = asObject(u.auth);
    const tls = asObject(u.tls);
    for (const [key, path] of [
      ['auth.bearerTokenFile', auth?.bearerTokenFile],
      ['auth.basic.passwordFile', asObject(auth?.basic)?.passwordFile],
      ['tls.caFile', tls?.caFile],
      ['tls.certFile', tls?.certFile],
      ['tls.keyFile', tls?.keyFile],
    ] as const) {
      const p = fileProblem(path, `upstreams[${i}].${key}`);
      if (p) problems.push(p);
    }
    if (auth?.bearerTokenFile && auth.basic) problems.push(`upstreams[${i}].auth: give bearerTokenFile or basic, not both`);
  });
  const gpu = asObject(doc.gpu) ?? {};
  const gi = rawMs(gpu.interval, '5s', INTERVAL_BOUNDS);
  const gt = rawMs(gpu.timeout, '2s', TIMEOUT_BOUNDS);
  if (gi !== undefined && gt !== undefined && gt >= gi) problems.push('gpu.timeout: must be less than gpu.interval');
  const requestLog = asObject(doc.requestLog) ?? {};
  const secretProblem = fileProblem(requestLog.hashSecretFile, 'requestLog.hashSecretFile');
  if (secretProblem) problems.push(secretProblem);
  const proxy = asObject(doc.proxy) ?? {};
  if (proxy.listen !== undefined && proxy.target === undefined) problems.push('proxy.target: required when proxy.listen is set (the engine base URL)');
  if (proxy.target !== undefined && proxy.listen === undefined) problems.push('proxy.listen: required when proxy.target is set');
  const canaries = Array.isArray(doc.canaries) ? doc.canaries : [];
  const probe = asObject(doc.loadProbe) ?? {};
  const needsEngine = canaries.length > 0 || probe.enabled === true;
  if (needsEngine && proxy.target === undefined && doc.canaryTarget === undefined)
    problems.push('canaryTarget: required for canaries and load probes when the proxy is off (the engine base URL)');
  const seenCanaries = new Set<string>();
  canaries.forEach((c: unknown, i: number) => {
    const canary = asObject(c);
    if (!canary) return;
    const key = `${String(canary.model)}\u0000${String(canary.sloClass ?? 'streaming')}`;
    if (seenCanaries.has(key)) problems.push(`canaries[${i}]: another canary has model "${String(canary.model)}" and this sloClass (their series would merge)`);
    seenCanaries.add(key);
  });
  if (probe.enabled === true && probe.model === undefined && canaries.length === 0) problems.push('loadProbe.model: required when no canary is configured');
  const seenKeys = new Map<string, string>();
  const seenTenants = new Set<string>();
  (Array.isArray(doc.tenants) ? doc.tenants : []).forEach((t: unknown, i: number) => {
    const tenant = asObject(t);
    if (!tenant) return;
    const name = String(tenant.name);
    if (RESERVED_TENANTS.includes(name)) problems.push(`tenants[${i}].name: "${name}" is reserved (${RESERVED_TENANTS.join(', ')})`);
    if (seenTenants.has(name)) problems.push(`tenants[${i}].name: duplicate tenant "${name}"`);
    seenTenants.add(name);
    (Array.isArray(tenant.keys) ? tenant.keys : []).forEach((k: unknown, j: number) => {
      const other = seenKeys.get(String(k));
      if (other !== undefined && other !== name) problems.push(`tenants[${i}].keys[${j}]: already a key of tenant "${other}"`);
      seenKeys.set(String(k), name);
    });
  });
  const buckets = asObject(doc.buckets) ?? {};
  const catalogue = loadCatalogueData();
  const histograms = new Set<string>();
  for (const m of catalogue.metrics) if (m.type === 'histogram') for (const p of ['ms', 'seconds'] as const) histograms.add(profileName(m.name, p));
  for (const [metric, bounds] of Object.entries(buckets)) {
    if (!histograms.has(metric)) problems.push(`buckets.${metric}: not a canonical histogram (see the metric table in the README)`);
    if (typeof bounds === 'string' && !Object.hasOwn(catalogue.layouts, bounds)) {
      problems.push(`buckets.${metric}: no layout named ${bounds} (${Object.keys(catalogue.layouts).join(', ')})`);
    }
    if (
      Array.isArray(bounds) &&
      bounds.some((b, i) => {
        const before: unknown = bounds[i - 1];
        return typeof b === 'number' && typeof before === 'number' && b <= before;
      })
    ) {
      problems.push(`buckets.${metric}: bounds must be strictly ascending`);
    }
  }
  return problems;
}

/** Validate a raw config object; throws ConfigError listing every problem. */
export function validateConfig(raw: unknown): AgentConfig {
  const result = configSchema.safeParse(raw);
  const problems = result.success ? [] : formatIssues(result.error.issues);
  for (const p of crossCheck(raw)) if (!problems.includes(p)) problems.push(p);
  if (!result.success || problems.length) throw new ConfigError(problems);
  const c: ParsedConfig = result.data;
  const names = new Set<string>();
  const upstreams: UpstreamConfig[] = c.upstreams.map((u, i) => {
    const intervalMs = u.interval ?? c.interval;
    const timeoutMs = u.timeout ?? Math.min(c.timeout, intervalMs * 0.9);
    let name = u.name ?? upstreamName(u.url);
    // The GPU probe is the loop's source "gpu" in the health series; an engine cannot share it.
    if (name === GPU_SOURCE_NAME) {
      if (u.name) problems.push(`upstreams[${i}].name: "${GPU_SOURCE_NAME}" is the GPU source's name`);
      else name = `${name}#${i}`;
    }
    if (names.has(name)) {
      if (u.name) problems.push(`upstreams[${i}].name: duplicate upstream name "${name}"`);
      else name = `${name}#${i}`;
    }
    names.add(name);
    return {
      name,
      url: u.url,
      flavor: u.flavor,
      model: u.model,
      intervalMs,
      timeoutMs,
      maxBodyBytes: u.maxBodyBytes,
      passthrough: u.passthrough,
      auth: u.auth,
      tls: u.tls,
    };
  });
  if (problems.length) throw new ConfigError(problems);
  return deepFreeze({ ...c, upstreams });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** Defaults < file < environment < flags. */
export function loadConfig(opts: { file?: string; env: NodeJS.ProcessEnv; flags: Overrides }): AgentConfig {
  const file = opts.file ?? opts.env.INFERTEL_CONFIG;
  const raw: Record<string, unknown> = file ? readConfigFile(file) : {};
  const otel = opts.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (otel) raw.tracing = { ...(raw.tracing as object | undefined), endpoint: otel };
  const protocol = opts.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || opts.env.OTEL_EXPORTER_OTLP_PROTOCOL;
  if (protocol) raw.tracing = { ...(raw.tracing as object | undefined), protocol };
  applyOverrides(raw, overridesFromEnv(opts.env));
  applyOverrides(raw, opts.flags);
  return validateConfig(raw);
}
