// Tenants: an API key is hashed once per request and looked up among the configured
// `sha256:` forms; the clear-text key is never kept past this lookup.

import { hash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export const TENANT_ANONYMOUS = 'anonymous';
export const TENANT_UNKNOWN = 'unknown';
export const TENANT_OTHER = 'other';
export const RESERVED_TENANTS = [TENANT_ANONYMOUS, TENANT_UNKNOWN, TENANT_OTHER];

/** The `sha256:<hex>` form of a key, as `infertel hash-key` prints it and config stores it. */
export function hashKey(key: string): string {
  // The one-shot form: a Hash object per request cost about four times as much (profiled under load).
  return `sha256:${hash('sha256', key, 'hex')}`;
}

/** `infertel hash-key` input: one key, without the line ending that `echo` or a file adds. */
export function keyFromStdin(text: string): string {
  return text.replace(/\r?\n$/, '');
}

/** The API key of a request: `Authorization: Bearer`, else `x-api-key`, else `api-key`. */
export function apiKeyOf(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (auth) {
    const m = /^Bearer[ \t]+(\S.*)$/i.exec(auth.trim());
    if (m?.[1]) return m[1].trim();
  }
  for (const name of ['x-api-key', 'api-key']) {
    const v = headers[name];
    const s = Array.isArray(v) ? v[0] : v;
    if (s?.trim()) return s.trim();
  }
  return undefined;
}

export interface TenantSpec {
  name: string;
  keys: readonly string[];
  sloClass?: string | undefined;
}

export interface Tenant {
  /** The label value: a configured name, anonymous, unknown, or other once the cap is reached. */
  label: string;
  /** The configured name before folding (for logs and spans), or anonymous / unknown. */
  name: string;
  sloClass: string | undefined;
}

/**
 * Resolves requests to tenants. The first `maxLabels` distinct tenants seen keep their own label
 * value; later ones are carried as tenant="other" and counted, so a config with thousands of
 * tenants cannot multiply the series count by thousands.
 */
export class TenantResolver {
  private readonly byHash = new Map<string, TenantSpec>();
  private readonly labelled = new Set<string>([TENANT_ANONYMOUS, TENANT_UNKNOWN]);
  /** Requests carried as tenant="other", by the cap. */
  folded = 0;

  constructor(
    tenants: readonly TenantSpec[],
    private readonly maxLabels: number,
  ) {
    for (const t of tenants) for (const k of t.keys) this.byHash.set(k, t);
  }

  resolve(headers: IncomingHttpHeaders): Tenant {
    const key = apiKeyOf(headers);
    if (key === undefined) return { label: TENANT_ANONYMOUS, name: TENANT_ANONYMOUS, sloClass: undefined };
    const spec = this.byHash.get(hashKey(key));
    if (!spec) return { label: TENANT_UNKNOWN, name: TENANT_UNKNOWN, sloClass: undefined };
    if (!this.labelled.has(spec.name)) {
      // anonymous and unknown are always carried; they do not take a configured tenant's place.
      if (this.labelled.size - 2 >= this.maxLabels) {
        this.folded++;
        return { label: TENANT_OTHER, name: spec.name, sloClass: spec.sloClass };
      }
      this.labelled.add(spec.name);
    }
    return { label: spec.name, name: spec.name, sloClass: spec.sloClass };
  }
}
