// The proxy bench's C programs (`bench/native/*.c`), each built with the machine's C compiler: the
// floor (relay.c), and the quiet stand-in engine (engine.c) and load (load.c).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type CTool = 'relay' | 'engine' | 'load';

/** `bench/native/<tool>.c` built in a fresh folder, or why there is none (no C compiler, or it failed). */
export function buildTool(tool: CTool): { path: string } | { why: string } {
  const source = fileURLToPath(new URL(`../../bench/native/${tool}.c`, import.meta.url));
  const path = join(mkdtempSync(join(tmpdir(), `infertel-${tool}-`)), tool);
  const cc = spawnSync('cc', ['-O2', '-Wall', '-Werror', '-o', path, source], { encoding: 'utf8' });
  if (cc.error || cc.status !== 0) {
    removeTool(path);
    return { why: cc.error ? `no C compiler (${cc.error.message})` : `cc failed: ${cc.stderr.trim()}` };
  }
  return { path };
}

/** Removes a built program and its folder. */
export function removeTool(path: string): void {
  rmSync(dirname(path), { recursive: true, force: true });
}
