// Child process for the benchmark and tests: the native data path (native/src/edge.rs) in front of
// the engine at argv[2] (a port on 127.0.0.1), alone in its process. Prints its URL.
//
// With `--tell`, the loop sends each request at once (its request id and include_usage done there)
// and JS learns of it after, doing the same tenant lookup and body read, and reads its stream.
//
// With `--policy`, every request makes the hop to JS and back before it is sent, and JS does the
// request-side work the Node proxy does per request: the route, the tenant (the key's SHA-256
// looked up), the body read for `model` and with include_usage injected (its usage chunk taken
// out again in the loop), and a request id; and every read of the answer goes to JS with its time,
// where the Node proxy's stream observer reads it (TTFT, gaps, usage).

import { randomUUID } from 'node:crypto';
import { loadAddon } from '../agent/gpu/addon.js';
import { inspectBody, type Route, routeOf } from '../agent/proxy/routes.js';
import { bodyKind, StreamObserver } from '../agent/proxy/stream.js';
import { hashKey, TenantResolver } from '../agent/proxy/tenants.js';

const loaded = loadAddon();
if (!loaded.ok) {
  process.stderr.write(`${loaded.reason}\n`);
  process.exit(2);
}
const addon = loaded.addon;
const [port, ...rest] = process.argv.slice(2);
const mode = rest.includes('--policy') ? 'wait' : rest.includes('--tell') ? 'tell' : undefined;
const tenants = new TenantResolver([{ name: 'bench', keys: [hashKey('sk-bench')] }], 200);
let id = -1;
function headersOf(flat: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) headers[(flat[i] ?? '').toLowerCase()] = flat[i + 1] ?? '';
  return headers;
}
const GAP_BOUNDS_MS = [5, 10, 25, 50, 100, 250, 500, 1000];
const open = new Map<number, { route: Route; strip: boolean; observer?: StreamObserver }>();
const policy: NonNullable<Parameters<typeof addon.edgeStart>[1]> = (requests, seen) => {
  // Requests first: an end told in the same batch may be that of a request handed over in it.
  for (const r of requests) {
    if (!r.waits) {
      // Sent already, with its request id and include_usage done in the loop: JS only learns of it.
      tenants.resolve(headersOf(r.headers));
      inspectBody(routeOf(r.target), r.body, r.method);
      open.set(r.token, { route: routeOf(r.target), strip: r.usageInjected });
      continue;
    }
    const tenant = tenants.resolve(headersOf(r.headers));
    const facts = inspectBody(routeOf(r.target), r.body, r.method);
    const requestId = randomUUID();
    open.set(r.token, { route: routeOf(r.target), strip: facts.usageInjected });
    addon.edgeForward(
      id,
      r.token,
      `x-request-id: ${requestId}\r\nx-infertel-tenant: ${tenant.label}`,
      `x-request-id: ${requestId}`,
      facts.body,
      facts.usageInjected,
    );
  }
  for (const s of seen) {
    const o = open.get(s.token);
    if (!o) continue;
    if (s.kind === 'head') {
      const ct = s.headers?.[(s.headers?.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === 'content-type') ?? -2) + 1];
      o.observer = new StreamObserver(o.route, bodyKind(o.route, ct), o.strip, GAP_BOUNDS_MS, 32);
    } else if (s.kind === 'data' && s.data) o.observer?.push(s.data, s.at);
    else if (s.kind === 'end') {
      o.observer?.finish();
      open.delete(s.token);
    }
  }
};
const started = addon.edgeStart(`127.0.0.1:0 127.0.0.1:${port} ${32 * 1024 * 1024} 30000 ${mode ?? 'wait'}`, mode ? policy : undefined);
id = started.id;
process.stdout.write(`http://${started.address}\n`);
// The data path runs on its own thread; this keeps the process (and it) alive.
setInterval(() => undefined, 1 << 30);
