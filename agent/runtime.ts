// Process-level wiring shared by `infertel run` and `infertel demo`.

import type { AgentDeps } from './agent.js';
import { createGpuTelemetry } from './gpu/telemetry.js';
import { createLogger } from './logger.js';

export function agentDeps(logLevel: string): AgentDeps {
  const log = createLogger(logLevel);
  return { log, gpu: (catalogue, metrics, onChange) => createGpuTelemetry({ catalogue, metrics, onChange, log }) };
}

/** Wait for SIGTERM/SIGINT, then stop within a second and exit 0. */
export async function stopOnSignal(stop: () => Promise<void>): Promise<void> {
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  setTimeout(() => process.exit(0), 900).unref();
  await stop();
  process.exit(0);
}

