// Child process for the worst-case benchmark: an engine gone wrong. `bomb N`: every scrape
// brings N label values never seen before; `wide F S`: F families of S series each, stable.

import http from 'node:http';

const [mode, a, b] = process.argv.slice(2);
let scrape = 0;
const server = http.createServer((_req, res) => {
  scrape++;
  const lines: string[] = [];
  if (mode === 'bomb') {
    lines.push('# TYPE tgi_request_count counter', `tgi_request_count ${scrape}`, '# TYPE tgi_bomb_total counter');
    for (let i = 0; i < Number(a); i++) lines.push(`tgi_bomb_total{request_hash="s${scrape}i${i}"} 1`);
  } else {
    for (let f = 0; f < Number(a); f++) {
      lines.push(`# TYPE wide_family_${f} gauge`);
      for (let s = 0; s < Number(b); s++) lines.push(`wide_family_${f}{shard="${s}"} ${s}`);
    }
  }
  const body = `${lines.join('\n')}\n`;
  res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
