// GPU telemetry: placeholder until the NVML addon lands; reports that no source is available.

import type { GpuTelemetry } from '../agent.js';
import type { Catalogue } from '../catalogue/catalogue.js';
import type { SelfMetrics } from '../export/self-metrics.js';
import type { Logger } from '../logger.js';

export interface GpuTelemetryDeps {
  catalogue: Catalogue;
  metrics: SelfMetrics;
  onChange: () => void;
  log: Logger;
}

export function createGpuTelemetry(_deps: GpuTelemetryDeps): GpuTelemetry {
  return {
    start() {},
    async stop() {},
    families: () => [],
    summary: () => ({ source: 'none', nvml_unavailable: true, reason: 'no GPU source built yet', devices: [] }),
  };
}
