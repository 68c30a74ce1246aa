// The bench's look at the kernel's TCP for a long round (bench/tcp-state.ts): the parsers over text
// written here after the kernel's and ss's formats, then the real /proc/net and the real ss.

import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { describeWaiting, parseProcNet, socketsOn, tcpCounters, troubleBetween, waitingSockets, watchRound } from '../../bench/tcp-state.js';

describe('bench TCP state', () => {
  it('parseProcNet reads the Tcp and TcpExt pairs of snmp and netstat text, and nothing else', () => {
    const snmp = [
      'Ip: Forwarding DefaultTTL',
      'Ip: 1 64',
      'Tcp: RtoAlgorithm RtoMin RtoMax MaxConn RetransSegs',
      'Tcp: 1 200 120000 -1 42',
      'Udp: InDatagrams',
      'Udp: 7',
    ].join('\n');
    const netstat = ['TcpExt: SyncookiesSent TCPTimeouts TCPLossProbes', 'TcpExt: 0 5 9', 'IpExt: InNoRoutes', 'IpExt: 3'].join('\n');
    const cases: Array<[string, Record<string, number>]> = [
      [snmp, { TcpRtoAlgorithm: 1, TcpRtoMin: 200, TcpRtoMax: 120000, TcpMaxConn: -1, TcpRetransSegs: 42 }],
      [netstat, { TcpExtSyncookiesSent: 0, TcpExtTCPTimeouts: 5, TcpExtTCPLossProbes: 9 }],
      // A names line whose values line is missing or of another length is skipped.
      ['TcpExt: A B\nTcpExt: 1', {}],
      ['', {}],
    ];
    for (const [text, want] of cases) assert.deepEqual(parseProcNet(text), want, text);
  });

  it('troubleBetween names the counters that moved, in their listed order, and not one missing before', () => {
    const before = { TcpRetransSegs: 10, TcpExtTCPTimeouts: 3, TcpExtTCPLossProbes: 7, TcpInSegs: 100 };
    const after = { TcpRetransSegs: 16, TcpExtTCPTimeouts: 3, TcpExtTCPLossProbes: 8, TcpInSegs: 900, TcpExtTCPWinProbe: 2 };
    assert.deepEqual(troubleBetween(before, after), [
      ['TcpRetransSegs', 6],
      ['TcpExtTCPLossProbes', 1],
    ]);
    assert.deepEqual(troubleBetween({}, after), []);
  });

  it('waitingSockets keeps sockets with bytes queued or a retransmit or persist timer', () => {
    const info = '\t ts sack bbr wscale:10,10 rto:204 rtt:0.035/0.02 mss:32768 lastsnd:12 lastrcv:12 lastack:12 snd_wnd:65536';
    const text = [
      '0      0      127.0.0.1:1000 127.0.0.1:2000',
      info,
      '100    0      127.0.0.1:2000 127.0.0.1:1000',
      info,
      '0      5      127.0.0.1:1001 127.0.0.1:2000 timer:(on,180ms,2)',
      '\t ts sack rto:816 backoff:2 unacked:1 retrans:1/3 lastsnd:1500',
      '0      0      127.0.0.1:1002 127.0.0.1:2000 timer:(persist,400ms,0)',
      info,
      '0      0      127.0.0.1:1003 127.0.0.1:2000 timer:(keepalive,14sec,0)',
      info,
      '',
    ].join('\n');
    const got = waitingSockets(text);
    assert.deepEqual(
      got.map((s) => [s.local, s.recvQ, s.sendQ, s.timer, s.info]),
      [
        ['127.0.0.1:2000', 100, 0, undefined, 'rto:204 lastsnd:12 lastrcv:12 lastack:12 snd_wnd:65536'],
        ['127.0.0.1:1001', 0, 5, 'on,180ms,2', 'rto:816 backoff:2 unacked:1 retrans:1/3 lastsnd:1500'],
        ['127.0.0.1:1002', 0, 0, 'persist,400ms,0', 'rto:204 lastsnd:12 lastrcv:12 lastack:12 snd_wnd:65536'],
      ],
    );
    assert.match(describeWaiting(got, 2), /^3 sockets waiting: 127\.0\.0\.1:2000 to 127\.0\.0\.1:1000, Recv-Q 100, Send-Q 0 \(rto:204 .*; \.\.\.$/);
    assert.equal(describeWaiting([]), 'no socket had bytes queued or a retransmit or persist timer');
  });

  it('watchRound looks at the sockets of a round still running after its look time, and not of one that ended before it', async (t) => {
    if ((await socketsOn(['1'])) === undefined) return t.skip('ss (iproute2) is not installed');
    await withUnreadBytes(777, async (port) => {
      await new Promise((r) => setTimeout(r, 50));
      const quick = await watchRound([port], 300, async () => 'quick');
      assert.deepEqual([quick.result, quick.waiting], ['quick', undefined]);
      const overdue = await watchRound([port], 100, () => new Promise((r) => setTimeout(() => r('overdue'), 600)));
      assert.equal(overdue.result, 'overdue');
      assert.deepEqual(
        overdue.waiting?.map((s) => [s.local, s.recvQ]),
        [[`127.0.0.1:${port}`, 777]],
      );
      assert.ok(Array.isArray(overdue.tcp));
    });
  });

  it("reads this machine's counters, and ss shows bytes a paused server has not read", async (t) => {
    const counters = tcpCounters();
    assert.ok(Number.isInteger(counters.TcpRetransSegs) && Number.isInteger(counters.TcpExtTCPTimeouts), JSON.stringify(counters).slice(0, 200));
    await withUnreadBytes(1234, async (port) => {
      let text: string | undefined;
      let held: ReturnType<typeof waitingSockets> = [];
      for (let i = 0; i < 50 && !held.some((s) => s.recvQ === 1234); i++) {
        text = await socketsOn([port]);
        if (text === undefined) break;
        held = waitingSockets(text);
        await new Promise((r) => setTimeout(r, 20));
      }
      if (text === undefined) return t.skip('ss (iproute2) is not installed');
      assert.deepEqual(
        held.map((s) => [s.local, s.recvQ]),
        [[`127.0.0.1:${port}`, 1234]],
      );
    });
  });
});

// A server that never reads, so the bytes a client wrote sit in the server socket's Recv-Q.
async function withUnreadBytes(bytes: number, look: (port: string) => Promise<void>): Promise<void> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = String((server.address() as net.AddressInfo).port);
  const client = net.connect(Number(port), '127.0.0.1');
  try {
    await new Promise<void>((resolve) => client.once('connect', resolve));
    client.write(Buffer.alloc(bytes, 'x'));
    await look(port);
  } finally {
    client.destroy();
    server.close();
  }
}
