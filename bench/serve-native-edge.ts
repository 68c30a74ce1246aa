// Child process for the benchmark and tests: the native data path (native/src/edge.rs) in front of
// the engine at argv[2] (a port on 127.0.0.1), alone in its process. Prints its URL.
//
// With `--policy`, every request makes the hop to JS and back before it is sent, and JS does the
// request-side work the Node proxy does per request: the route, the tenant (the key's SHA-256
// looked up), the body read for `model` and with include_usage injected, and a request id.

import { randomUUID } from 'node:crypto';
import { loadAddon } from '../agent/gpu/addon.js';
import { inspectBody, routeOf } from '../agent/proxy/routes.js';
import { hashKey, TenantResolver } from '../agent/proxy/tenants.js';

const loaded = loadAddon();
if (!loaded.ok) {
  process.stderr.write(`${loaded.reason}\n`);
  process.exit(2);
}
const addon = loaded.addon;
const [port, ...rest] = process.argv.slice(2);
const withPolicy = rest.includes('--policy');
const tenants = new TenantResolver([{ name: 'bench', keys: [hashKey('sk-bench')] }], 200);
let id = -1;
const policy = (requests: Parameters<NonNullable<Parameters<typeof addon.edgeStart>[1]>>[0]) => {
  for (const r of requests) {
    const headers: Record<string, string> = {};
    for (let i = 0; i + 1 < r.headers.length; i += 2) headers[(r.headers[i] ?? '').toLowerCase()] = r.headers[i + 1] ?? '';
    const tenant = tenants.resolve(headers);
    const facts = inspectBody(routeOf(r.target), r.body, r.method);
    const requestId = randomUUID();
    addon.edgeForward(id, r.token, `x-request-id: ${requestId}\r\nx-infertel-tenant: ${tenant.label}`, `x-request-id: ${requestId}`, facts.body);
  }
};
const started = addon.edgeStart(`127.0.0.1:0 127.0.0.1:${port} ${32 * 1024 * 1024} 30000`, withPolicy ? policy : undefined);
id = started.id;
process.stdout.write(`http://${started.address}\n`);
// The data path runs on its own thread; this keeps the process (and it) alive.
setInterval(() => undefined, 1 << 30);
