// Anchor for /metrics latency: express + prom-client rendering N series on every request, the
// approach the agent avoids for its re-exported snapshot.

import express from 'express';
import client from 'prom-client';

const series = Number(process.argv[2] ?? 2000);
const registry = new client.Registry();
const families = 20;
const gauges = Array.from(
  { length: families },
  (_, i) => new client.Gauge({ name: `anchor_metric_${i}`, help: 'Anchor series.', labelNames: ['model', 'engine', 'le'], registers: [registry] }),
);
for (let i = 0; i < series; i++) gauges[i % families]!.set({ model: `model-${i % 5}`, engine: String(i % 7), le: String(i) }, i * 1.5);
const app = express();
app.get('/metrics', async (_req, res) => {
  res.setHeader('Content-Type', registry.contentType);
  res.end(await registry.metrics());
});
const server = app.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
