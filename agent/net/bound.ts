import type { Server } from 'node:net';

/** The address a listening server is bound to, as HOST:PORT (IPv6 bracketed); with port 0 in the config this is the port the system chose. */
export function boundAddress(server: Server | undefined): string {
  const a = server?.address();
  if (!a || typeof a === 'string') return String(a);
  return `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
}
