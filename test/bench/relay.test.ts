// The proxy bench's two floors: the C byte relay (`bench/native/relay.c`, built with cc as the
// bench builds it) and the Node one (`bench/serve-net-relay.ts`). Their figures stand for "one more
// process in the path" and "the least a Node program in the path costs" only if each relays every
// byte, both ways, with backpressure, one engine connection per client connection, and lets go of
// both when one closes.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildTool, removeTool } from '../../bench/relay.js';
import { firstLine } from '../../bench/stats.js';
import { eventually, sleep } from '../helpers.js';

const built = buildTool('relay');
const NODE_RELAY = fileURLToPath(new URL('../../bench/serve-net-relay.js', import.meta.url));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** What comes back on `s`, once `bytes` of it arrived; rejects if it closes before. */
function collect(s: net.Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    s.on('data', (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= bytes) resolve(Buffer.concat(parts));
    });
    s.once('close', () => (got >= bytes ? undefined : reject(new Error(`closed after ${got} of ${bytes} bytes`))));
  });
}

const relays: Array<{ name: string; skip: string | false; start: (enginePort: number) => ChildProcess }> = [
  {
    name: 'the C byte relay',
    skip: 'why' in built ? built.why : false,
    start: (port) => spawn((built as { path: string }).path, [String(port)], { stdio: ['ignore', 'pipe', 'inherit'] }),
  },
  {
    name: 'the Node byte relay',
    skip: false,
    start: (port) => spawn(process.execPath, [NODE_RELAY, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] }),
  },
];

after(() => {
  if ('path' in built) removeTool(built.path);
});

for (const { name, skip, start } of relays)
  describe(`bench floor: ${name}`, { skip }, () => {
    let engine: net.Server;
    let relay: ChildProcess;
    let relayPort = 0;
    /** What the engine side does with each connection, set per test. */
    let onEngineConnection: (s: net.Socket) => void = () => undefined;
    const engineSockets: net.Socket[] = [];

    before(async () => {
      engine = net.createServer((s) => {
        engineSockets.push(s);
        onEngineConnection(s);
      });
      await new Promise<void>((r) => engine.listen(0, '127.0.0.1', r));
      const enginePort = (engine.address() as net.AddressInfo).port;
      relay = start(enginePort);
      relayPort = Number(new URL(await firstLine(relay)).port);
    });

    after(() => {
      relay.kill();
      for (const s of engineSockets) s.destroy();
      engine.close();
    });

    it('relays 1 MiB each way unchanged (an echo through it returns what was sent)', async () => {
      onEngineConnection = (s) => s.pipe(s);
      const sent = randomBytes(1 << 20);
      const client = await connect(relayPort);
      const back = collect(client, sent.length);
      client.write(sent);
      const got = await back;
      client.destroy();
      assert.equal(got.length, sent.length);
      assert.equal(sha(got), sha(sent));
    });

    it('holds back 96 MiB for a client that reads nothing for a while, then delivers all of it in order', async () => {
      const body = randomBytes(96 << 20);
      let engineDone = false;
      onEngineConnection = (s) => s.end(body, () => (engineDone = true));
      const client = await connect(relayPort);
      client.pause();
      // Long enough for a relay that reads on regardless to take all of it: the Node relay with
      // its backpressure taken out does in about 0.6 s here.
      await sleep(2000);
      // The kernel's socket buffers on the way (autotuned, up to 32 MiB for a receiver here) hold
      // far less than this, so the engine can only have finished if the relay read on without
      // waiting for the client.
      assert.equal(engineDone, false, 'the relay buffered the whole body instead of applying backpressure');
      const got = collect(client, body.length);
      client.resume();
      assert.equal(sha(await got), sha(body));
      client.destroy();
    });

    it('gives each client connection its own engine connection', async () => {
      const before = engineSockets.length;
      onEngineConnection = (s) => s.once('data', (d) => s.write(`${d.toString()}:${engineSockets.indexOf(s)}`));
      const [a, b] = await Promise.all([connect(relayPort), connect(relayPort)]);
      const [ra, rb] = [collect(a, 3), collect(b, 3)];
      a.write('a');
      b.write('b');
      const [ga, gb] = [(await ra).toString(), (await rb).toString()];
      assert.equal(engineSockets.length, before + 2);
      assert.match(ga, /^a:\d+$/);
      assert.match(gb, /^b:\d+$/);
      assert.notEqual(ga.split(':')[1], gb.split(':')[1]);
      a.destroy();
      b.destroy();
    });

    it('closes the engine connection when its client goes away', async () => {
      onEngineConnection = () => undefined;
      const known = engineSockets.length;
      const client = await connect(relayPort);
      const engineSide = await eventually(async () => engineSockets[known], 5000, 'the engine connection');
      let closed = false;
      engineSide.once('close', () => (closed = true));
      engineSide.resume();
      client.destroy();
      await eventually(async () => closed, 5000, 'the engine side closed');
      assert.equal(closed, true);
    });
  });
