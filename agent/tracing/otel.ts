// Tracing: a tracer provider exporting over OTLP/HTTP when an endpoint is configured
// (tracing.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT); otherwise the API's no-op tracer.

import { trace, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

export const SPAN_SCRAPE = 'infertel.scrape';
export const ATTR = {
  upstream: 'infertel.upstream',
  flavor: 'infertel.flavor',
  series: 'infertel.series',
  bytes: 'infertel.bytes',
  outcome: 'infertel.outcome',
} as const;

export interface Tracing {
  tracer: Tracer;
  shutdown(): Promise<void>;
}

export function startTracing(endpoint: string | undefined, serviceName: string, version: string): Tracing {
  if (!endpoint) return { tracer: trace.getTracer('infertel', version), shutdown: async () => {} };
  const url = endpoint.replace(/\/+$/, '') + '/v1/traces';
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName, 'service.version': version }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url }), { scheduledDelayMillis: 1000 })],
  });
  return {
    tracer: provider.getTracer('infertel', version),
    async shutdown() {
      await Promise.race([provider.shutdown(), new Promise((r) => setTimeout(r, 500).unref())]);
    },
  };
}
