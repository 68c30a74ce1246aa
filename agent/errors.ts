// The error catalogue: every error the agent catches and carries on from has a stable code here.
// Each is counted (infertel_errors_total{code}) and logged the first time its code is seen, with
// what it was about; later ones are counted only, so a failing source cannot flood the log.

import type { Logger } from './logger.js';
import { redactUrl } from './net/http-client.js';

export const ERROR_CATALOGUE = {
  loop_run_threw: 'A scheduled run (a scrape cycle) threw instead of reporting its failure; the loop carries on and retries sooner.',
  gpu_poll_failed: 'A GPU poll failed; the last values are kept and marked stale (gpu_telemetry_stale 1).',
  gpu_poll_timeout: 'A GPU poll took longer than gpu.timeout; the last values are kept and marked stale.',
  oom_log_unreadable: 'gpu.oomLogPath cannot be read (missing, or no permission); OOM events are not counted until it can.',
  unhandled_rejection: 'A promise rejected with no handler; the agent carries on instead of exiting (a bug: please report the logged message).',
  status_streams_full: 'A status page stream was refused because the maximum of open streams was reached; the page can poll /api/v1/status.',
  engine_info_failed:
    "An engine's info endpoint (/v1/models, /version, /info, /props, /get_server_info) did not answer; model and version are tried again later.",
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export class ErrorReporter {
  private readonly counts: Partial<Record<ErrorCode, number>> = {};
  private log: Logger | undefined;

  constructor(log?: Logger) {
    this.log = log;
  }

  /** Counts an error; the first of each code is logged (its message with any URL credentials removed). */
  report(code: ErrorCode, err?: unknown, context: Record<string, unknown> = {}): void {
    const n = (this.counts[code] ?? 0) + 1;
    this.counts[code] = n;
    if (n > 1) return;
    const detail = err === undefined ? undefined : redactUrl(err instanceof Error ? err.message : String(err)).slice(0, 300);
    this.log?.warn({ code, ...context, ...(detail ? { err: detail } : {}) }, `${ERROR_CATALOGUE[code]} (logged once; counted in infertel_errors_total)`);
  }

  snapshot(): Partial<Record<ErrorCode, number>> {
    return { ...this.counts };
  }
}
