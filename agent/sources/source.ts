// The extension point: every engine source implements Source (sources/engine.ts scrapes over
// HTTP); which engine a payload is comes from the engine table in sources/flavor.ts. The GPU probe
// (gpu/telemetry.ts) is the loop's other kind of source, named GPU_SOURCE_NAME in health series.

import type { Family, RejectReason } from '../parse/exposition.js';

export type ScrapeOutcome = 'ok' | 'refused' | 'timeout' | 'http_status' | 'body_too_large' | 'not_prometheus' | 'parse' | 'error';

export interface ScrapeResult {
  outcome: ScrapeOutcome;
  families: Family[];
  bytes: number;
  parseErrors: number;
  /** Rejected lines by reason. */
  rejected: Partial<Record<RejectReason, number>>;
  /** Human-readable detail for logs when the outcome is not ok. */
  detail: string | undefined;
}

export interface Source {
  readonly name: string;
  /** One scrape. Never throws: failures are reported in the result. */
  scrape(signal: AbortSignal): Promise<ScrapeResult>;
  /** Releases sockets and handles, so the process can exit by itself. */
  close?(): void;
}

/** The GPU probe's name among the loop's sources (`upstream="gpu"` on the health series). */
export const GPU_SOURCE_NAME = 'gpu';
