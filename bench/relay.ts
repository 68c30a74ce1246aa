// The proxy bench's floor, `bench/native/relay.c`, built with the machine's C compiler.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RELAY_SOURCE = fileURLToPath(new URL('../../bench/native/relay.c', import.meta.url));

/** The relay built in a fresh folder, or why there is none (no C compiler, or it failed). */
export function buildRelay(): { path: string } | { why: string } {
  const path = join(mkdtempSync(join(tmpdir(), 'infertel-relay-')), 'relay');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-Werror', '-o', path, RELAY_SOURCE], { encoding: 'utf8' });
  if (cc.error || cc.status !== 0) {
    removeRelay(path);
    return { why: cc.error ? `no C compiler (${cc.error.message})` : `cc failed: ${cc.stderr.trim()}` };
  }
  return { path };
}

/** Removes a built relay and its folder. */
export function removeRelay(path: string): void {
  rmSync(dirname(path), { recursive: true, force: true });
}
