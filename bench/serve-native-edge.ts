// Child process for the benchmark and tests: the native data path (native/src/edge.rs) in front of
// the engine at argv[2] (a port on 127.0.0.1), alone in its process. Prints its URL.

import { loadAddon } from '../agent/gpu/addon.js';

const loaded = loadAddon();
if (!loaded.ok) {
  process.stderr.write(`${loaded.reason}\n`);
  process.exit(2);
}
const maxBody = Number(process.argv[3] ?? 32 * 1024 * 1024);
const timeoutMs = Number(process.argv[4] ?? 30_000);
const { address } = loaded.addon.edgeStart(`127.0.0.1:0 127.0.0.1:${process.argv[2]} ${maxBody} ${timeoutMs}`);
process.stdout.write(`http://${address}\n`);
// The data path runs on its own threads; this keeps the process (and them) alive.
setInterval(() => undefined, 1 << 30);
