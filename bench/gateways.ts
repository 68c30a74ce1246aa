// The proxy bench's reference gateways: nginx and HAProxy from the machine's packages, set up as an
// operator sets them up in front of a streaming LLM engine. Envoy, the gateway issue 8 names, has no
// Debian package; these two are the production proxies this machine can run, so infertel's added
// time is set beside theirs in the same rounds rather than beside figures measured elsewhere.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './stats.js';

export type GatewayName = 'nginx' | 'haproxy';

export type Gateway = { url: string; child: ChildProcess; stop: () => void };

/**
 * One worker thread each, as the native data path has one loop thread, and in the foreground as a
 * single process, so the CPU the bench reads from its pid is all of the gateway's. For streams,
 * nginx must not buffer the answer (`proxy_buffering off`) and HAProxy must not hold small writes
 * for more (`option http-no-delay`, without which the first event waits for Nagle's timer). Both
 * keep engine connections alive and reuse them, as infertel's pool does.
 */
const CONFIGS: Record<GatewayName, (listenPort: number, enginePort: number, dir: string) => { file: string; text: string; args: string[] }> = {
  nginx: (listenPort, enginePort, dir) => ({
    file: 'nginx.conf',
    text: `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr error;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream engine {
    server 127.0.0.1:${enginePort};
    keepalive 1024;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${listenPort};
    client_max_body_size 32m;
    location / {
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`,
    args: ['-e', 'stderr', '-p', dir, '-c', join(dir, 'nginx.conf')],
  }),
  haproxy: (listenPort, enginePort, dir) => ({
    file: 'haproxy.cfg',
    text: `global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-no-delay
  http-reuse always
frontend bench
  bind 127.0.0.1:${listenPort}
  default_backend engine
backend engine
  server engine 127.0.0.1:${enginePort}
`,
    args: ['-db', '-f', join(dir, 'haproxy.cfg')],
  }),
};

const BINARIES: Record<GatewayName, string> = { nginx: 'nginx', haproxy: 'haproxy' };

/** The gateway's program and its version (e.g. `1.22.1`), or why there is none (not installed). */
export function findGateway(name: GatewayName): { path: string; version: string } | { why: string } {
  // The sbin folders first: Debian puts both programs there, and a user's PATH often lacks them.
  const dirs = new Set(['/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':').filter(Boolean)]);
  for (const dir of dirs) {
    const path = join(dir, BINARIES[name]);
    // nginx says its version on stderr, HAProxy on stdout.
    const v = spawnSync(path, ['-v'], { encoding: 'utf8' });
    if (v.status === 0) return { path, version: /(\d+\.\d+\.\d+)/.exec(`${v.stdout}${v.stderr}`)?.[1] ?? 'unknown' };
  }
  return { why: `${BINARIES[name]} is not installed` };
}

async function accepting(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the gateway exited (${child.exitCode}) before it listened`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`the gateway did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `name` listening on a free loopback port in front of the engine on `enginePort`, once it accepts connections. */
export async function startGateway(name: GatewayName, program: string, enginePort: number): Promise<Gateway> {
  const dir = mkdtempSync(join(tmpdir(), `infertel-${name}-`));
  const listenPort = await freePort();
  const { file, text, args } = CONFIGS[name](listenPort, enginePort, dir);
  writeFileSync(join(dir, file), text);
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  // The folder goes once the gateway has exited: nginx removes its pid file there on the way out.
  const stop = () => {
    if (child.exitCode !== null || child.signalCode !== null) rmSync(dir, { recursive: true, force: true });
    else {
      child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
      child.kill();
    }
  };
  try {
    await accepting(listenPort, child, 10_000);
  } catch (err) {
    stop();
    throw err;
  }
  return { url: `http://127.0.0.1:${listenPort}`, child, stop };
}
