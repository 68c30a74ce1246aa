// Helpers every bench shares: percentiles over samples, and the first line a child process prints.

import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';

/** The p-th percentile (nearest rank) of `values`; NaN for no values. */
export function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

/**
 * infertel's added time as a multiple of a gateway's, as the bench words it. A multiple means
 * nothing where either added time is inside the noise (zero or less), so the line then says whose.
 */
export function addedMultiple(ours: number, theirs: number, gateway: string): string {
  if (theirs <= 0) return `no multiple (${gateway} added nothing measurable)`;
  if (ours <= 0) return 'no multiple (infertel added nothing measurable)';
  return `${(ours / theirs).toFixed(2)}x`;
}

/**
 * The first line `child` writes to stdout (its address, for the bench's servers). Rejects if the
 * child exits first or says nothing within `timeoutMs`, so a child that hangs at start fails the
 * bench instead of stalling it.
 */
export function firstLine(child: ChildProcess, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const settle = () => {
      clearTimeout(timer);
      child.off('exit', onExit);
      child.stdout!.off('data', onData);
    };
    const timer = setTimeout(() => {
      settle();
      reject(new Error(`no line from pid ${child.pid} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onExit = (code: number | null) => {
      settle();
      reject(new Error(`pid ${child.pid} exited (${code}) before its first line`));
    };
    const onData = (d: Buffer) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) {
        settle();
        resolve(buf.slice(0, i).trim());
      }
    };
    child.once('exit', onExit);
    child.stdout!.on('data', onData);
  });
}

/** A loopback port free a moment ago, for a server that cannot report the port it took (redis-server, nginx, HAProxy). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A Node child running `args`, with the first line it prints; its stderr goes to ours unless `stderr` is 'ignore'. */
export async function spawnNode(args: string[], stderr: 'inherit' | 'ignore' = 'inherit'): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', stderr] });
  return { child, line: await firstLine(child) };
}
