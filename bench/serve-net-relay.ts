// Child process for the benchmark: the least any Node program in the path can do. A TCP byte
// relay on node:net, each client connection paired with its own engine connection, bytes copied
// both ways with backpressure and nothing parsed: `bench/native/relay.c` in Node. What it adds
// over the C relay is the runtime's own cost per read and write, which every Node proxy pays
// before it parses anything.
//
// usage: serve-net-relay TARGET_PORT   (listens on 127.0.0.1, an ephemeral port; prints http://127.0.0.1:PORT)

import net from 'node:net';

const targetPort = Number(process.argv[2]);

/** Copies what `from` reads to `to`, pausing `from` while `to` cannot take more. */
function copy(from: net.Socket, to: net.Socket): void {
  from.on('data', (d: Buffer) => {
    if (!to.write(d)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  });
  // A clean end is passed on as one, after what is still queued for `to`; a reset tears both down.
  from.on('end', () => to.end());
  from.on('close', (hadError) => {
    if (hadError) to.destroy();
  });
  from.on('error', () => undefined);
}

const server = net.createServer({ noDelay: true }, (client) => {
  const engine = net.connect({ port: targetPort, host: '127.0.0.1', noDelay: true });
  copy(client, engine);
  copy(engine, client);
});
server.listen(0, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}\n`);
});
