// Tracing: a tracer provider exporting over OTLP/HTTP (protobuf or JSON, OTEL_EXPORTER_OTLP_PROTOCOL)
// when an endpoint is configured (tracing.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT); otherwise the API's no-op tracer. The SDK is
// loaded only when it is used: it costs about 13 MB of RSS.

import { trace, type Tracer } from '@opentelemetry/api';

export const SPAN_SCRAPE = 'infertel.scrape';
export const ATTR = {
  upstream: 'infertel.upstream',
  flavor: 'infertel.flavor',
  series: 'infertel.series',
  bytes: 'infertel.bytes',
  outcome: 'infertel.outcome',
} as const;

/** The agent's tracer: a proxy that follows whichever provider is registered. */
export function agentTracer(version: string): Tracer {
  return trace.getTracer('infertel', version);
}

export interface Tracing {
  shutdown(): Promise<void>;
}

export type OtlpProtocol = 'http/protobuf' | 'http/json';

export async function startTracing(
  endpoint: string | undefined,
  serviceName: string,
  version: string,
  protocol: OtlpProtocol = 'http/protobuf',
): Promise<Tracing> {
  if (!endpoint) return { shutdown: async () => {} };
  const [{ OTLPTraceExporter }, { resourceFromAttributes }, { BatchSpanProcessor }, { NodeTracerProvider }] = await Promise.all([
    protocol === 'http/json' ? import('@opentelemetry/exporter-trace-otlp-http') : import('@opentelemetry/exporter-trace-otlp-proto'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/sdk-trace-node'),
  ]);
  const url = `${endpoint.replace(/\/+$/, '')}/v1/traces`;
  // The sampler comes from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (the SDK reads them).
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName, 'service.version': version }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url }), { scheduledDelayMillis: 1000, maxQueueSize: 4096 })],
  });
  trace.setGlobalTracerProvider(provider);
  return {
    async shutdown() {
      await Promise.race([provider.shutdown(), new Promise((r) => setTimeout(r, 500).unref())]);
      trace.disable();
    },
  };
}
