// The demo's trace viewer: an OTLP/HTTP JSON receiver on loopback that prints each finished
// request trace as one line, so traces are visible without a collector. Used only when
// OTEL_EXPORTER_OTLP_ENDPOINT is not set (then the user's collector gets them instead).

import http from 'node:http';

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: Array<{ key: string; value: { stringValue?: string; intValue?: string | number } }>;
  events?: unknown[];
}

const ms = (s: Span) => (Number(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano)) / 1e6).toFixed(1);
const attr = (s: Span, k: string) => {
  const v = s.attributes?.find((a) => a.key === k)?.value;
  return v?.stringValue ?? (v?.intValue !== undefined ? String(v.intValue) : undefined);
};

/** One line per trace: the root's tenant, route, tokens and time, then each child span's time. */
export function traceLine(spans: Span[]): string | undefined {
  const root = spans.find((s) => s.name === 'inference.request');
  if (!root) return undefined;
  const children = spans.filter((s) => s.parentSpanId === root.spanId).sort((a, b) => (BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1));
  const parts = children.map((c) => `${c.name} ${ms(c)}${c.events?.length ? ` (${c.events.length} events)` : ''}`);
  return `trace ${root.traceId} ${attr(root, 'tenant')} ${attr(root, 'route')} ${attr(root, 'http.response.status_code')} ${attr(root, 'generated_len') ?? '-'} tokens ${ms(root)} ms: ${parts.join(' | ')}`;
}

export async function startTraceViewer(print: (line: string) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      try {
        const doc = JSON.parse(Buffer.concat(parts).toString('utf8'));
        const byTrace = new Map<string, Span[]>();
        for (const rs of doc.resourceSpans ?? [])
          for (const ss of rs.scopeSpans ?? [])
            for (const s of (ss.spans ?? []) as Span[]) {
              const list = byTrace.get(s.traceId) ?? [];
              list.push(s);
              byTrace.set(s.traceId, list);
            }
        for (const spans of byTrace.values()) {
          const line = traceLine(spans);
          if (line) print(line);
        }
      } catch {
        // Not a JSON export: nothing to show.
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
