// Child process for the benchmark: the anchor for the inline proxy, the least a Node proxy can do.
// It forwards each request to the engine and pipes the answer back, measuring and parsing nothing,
// on the same keep-alive and no-delay settings as infertel's proxy. What it adds over direct
// access is the cost of one more process hop on the machine.

import http from 'node:http';

const target = new URL(process.argv[2] ?? '');
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256, noDelay: true });
const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, (req, res) => {
  const up = http.request({ hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent }, (ures) => {
    res.writeHead(ures.statusCode ?? 502, ures.headers);
    ures.pipe(res);
  });
  up.on('error', () => res.destroy());
  res.on('close', () => up.destroy());
  req.pipe(up);
});
server.listen(0, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}\n`);
});
