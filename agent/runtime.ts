// Process-level wiring shared by `infertel run` and `infertel demo`.

import type { AgentDeps } from './agent.js';
import type { AgentConfig } from './config/schema.js';
import { createGpuTelemetry, type GpuConfig } from './gpu/telemetry.js';
import { createLogger } from './logger.js';

export function agentDeps(config: AgentConfig): AgentDeps {
  const log = createLogger(config.logLevel);
  const g = config.gpu;
  const gpu: GpuConfig = {
    nvmlLibrary: g.nvmlLibrary,
    amdSmiLibrary: g.amdSmiLibrary,
    intervalMs: g.interval,
    timeoutMs: g.timeout,
    source: g.source,
    processRoles: g.processRoles,
    oomLogPath: g.oomLogPath,
    simulate: g.simulate,
    simulateVendor: g.simulateVendor,
  };
  return { log, gpu: (catalogue, metrics, onChange, energyJoules) => createGpuTelemetry({ catalogue, metrics, onChange, log, config: gpu, energyJoules }) };
}
