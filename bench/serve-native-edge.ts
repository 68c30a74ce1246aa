// Child process for the benchmark: the native data path (native/src/edge.rs) alone in its process,
// in front of the engine at argv[2] (a port on 127.0.0.1), with no JS side: HTTP/1.1 framing and
// the proxy's forwarding rules, nothing measured. Prints its URL.

import { loadAddon } from '../agent/gpu/addon.js';

const loaded = loadAddon();
if (!loaded.ok) {
  process.stderr.write(`${loaded.reason}\n`);
  process.exit(2);
}
const started = loaded.addon.edgeStart(`127.0.0.1:0 127.0.0.1:${process.argv[2]} ${32 * 1024 * 1024} 30000`);
process.stdout.write(`http://${started.address}\n`);
// The data path runs on its own thread; this keeps the process (and it) alive.
setInterval(() => undefined, 1 << 30);
