// What the kernel's TCP did during a bench round, for naming where a long round's time went: the
// machine's TCP counters before and after it (/proc/net/netstat and /proc/net/snmp), and the state
// of the sockets on the path's and the engine's ports while the round is overdue (`ss`).

import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * Counters that say a segment waited on a timer or was dropped. On loopback each should stay at or
 * near zero through a round; the rest of the counters move with every request.
 */
export const TCP_TROUBLE = [
  'TcpRetransSegs',
  'TcpExtTCPTimeouts',
  'TcpExtTCPLossProbes',
  'TcpExtTCPSynRetrans',
  'TcpExtTCPWinProbe',
  'TcpExtTCPToZeroWindowAdv',
  'TcpExtListenOverflows',
  'TcpExtTCPBacklogDrop',
  'TcpExtTCPRcvQDrop',
  'TcpExtTCPZeroWindowDrop',
  'TcpExtPruneCalled',
] as const;

/**
 * The `Tcp` and `TcpExt` counters of /proc/net/snmp or /proc/net/netstat text, each a header line of
 * names and a line of values under the same prefix, named as `nstat` names them (prefix + name).
 */
export function parseProcNet(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  const lines = text.trim().split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    const names = (lines[i] ?? '').trim().split(/\s+/);
    const values = (lines[i + 1] ?? '').trim().split(/\s+/);
    const prefix = names[0]?.replace(/:$/, '');
    if ((prefix !== 'Tcp' && prefix !== 'TcpExt') || values[0] !== names[0] || values.length !== names.length) continue;
    // A values line follows its names line; the next pair starts after it.
    if (names.slice(1).every((n) => /^[A-Za-z]/.test(n)) && values.slice(1).every((v) => /^-?\d+$/.test(v))) {
      for (let j = 1; j < names.length; j++) out[`${prefix}${names[j]}`] = Number(values[j]);
      i++;
    }
  }
  return out;
}

/** This machine's TCP counters now, or none where /proc/net cannot be read. */
export function tcpCounters(): Record<string, number> {
  try {
    return { ...parseProcNet(readFileSync('/proc/net/snmp', 'utf8')), ...parseProcNet(readFileSync('/proc/net/netstat', 'utf8')) };
  } catch {
    return {};
  }
}

/** The trouble counters that moved between two readings, in TCP_TROUBLE's order. */
export function troubleBetween(before: Record<string, number>, after: Record<string, number>): Array<[string, number]> {
  return TCP_TROUBLE.flatMap((name) => {
    const moved = (after[name] ?? 0) - (before[name] ?? 0);
    return moved !== 0 && before[name] !== undefined ? [[name, moved] as [string, number]] : [];
  });
}

/** One socket of `ss -tinoH state established`: its queues and what says it is waiting. */
export interface SocketState {
  local: string;
  peer: string;
  recvQ: number;
  sendQ: number;
  /** `ss`'s timer field (`on` retransmit, `persist` zero-window probe, `keepalive`), without its brackets. */
  timer?: string;
  /** Fields of the info line that say a socket is waiting: unacked, retrans, backoff, lastsnd, lastrcv, rto. */
  info: string;
}

const INFO_KEPT = /^(unacked|retrans|backoff|lastsnd|lastrcv|lastack|rto|snd_wnd|rcv_space|notsent):/;

/**
 * Sockets of `ss -tinoH state established` output (with that state given, no state column: a line
 * of queues, addresses and timer, then an indented info line) that are waiting on something: bytes
 * queued either way, or a retransmit or persist timer.
 */
export function waitingSockets(ssText: string): SocketState[] {
  const out: SocketState[] = [];
  const lines = ssText.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const head = (lines[i] ?? '').trim().split(/\s+/);
    if (head.length < 4 || !/^\d+$/.test(head[0] ?? '') || !/^\d+$/.test(head[1] ?? '')) continue;
    const next = lines[i + 1] ?? '';
    const infoLine = /^\s/.test(next) ? next : '';
    if (infoLine) i++;
    const timer = head
      .slice(4)
      .find((f) => f.startsWith('timer:('))
      ?.slice('timer:('.length, -1);
    const s: SocketState = {
      recvQ: Number(head[0]),
      sendQ: Number(head[1]),
      local: head[2] ?? '',
      peer: head[3] ?? '',
      ...(timer ? { timer } : {}),
      info: infoLine
        .trim()
        .split(/\s+/)
        .filter((f) => INFO_KEPT.test(f))
        .join(' '),
    };
    const timerWaits = s.timer !== undefined && !s.timer.startsWith('keepalive');
    if (s.recvQ > 0 || s.sendQ > 0 || timerWaits) out.push(s);
  }
  return out;
}

/** The established sockets with an end on any of `ports`, from `ss`; undefined where ss cannot run. */
export function socketsOn(ports: string[]): Promise<string | undefined> {
  const filter = `( ${ports.map((p) => `sport = :${p} or dport = :${p}`).join(' or ')} )`;
  return new Promise((resolve) => {
    execFile('ss', ['-tinoH', 'state', 'established', filter], { maxBuffer: 64 << 20 }, (err, stdout) => resolve(err ? undefined : stdout));
  });
}

/** One line for a long round: the sockets that were waiting, the first `max` of them. */
export function describeWaiting(sockets: SocketState[], max = 6): string {
  if (sockets.length === 0) return 'no socket had bytes queued or a retransmit or persist timer';
  const shown = sockets
    .slice(0, max)
    .map((s) => `${s.local} to ${s.peer}, Recv-Q ${s.recvQ}, Send-Q ${s.sendQ}${s.timer ? `, timer ${s.timer}` : ''}${s.info ? ` (${s.info})` : ''}`);
  return `${sockets.length} socket${sockets.length === 1 ? '' : 's'} waiting: ${shown.join('; ')}${sockets.length > max ? '; ...' : ''}`;
}

/** A round as watched: its result, the trouble counters that moved in it, and its waiting sockets if it ran overdue. */
export interface WatchedRound<T> {
  result: T;
  tcp: Array<[string, number]>;
  /** Present when the round was still running `lookAfterMs` after it started and ss could run. */
  waiting?: SocketState[];
}

/** Runs `round`, reading the TCP counters around it, and the sockets on `ports` if it is still running after `lookAfterMs`. */
export async function watchRound<T>(ports: string[], lookAfterMs: number, round: () => Promise<T>): Promise<WatchedRound<T>> {
  const before = tcpCounters();
  let sockets: Promise<string | undefined> | undefined;
  const look = setTimeout(() => {
    sockets = socketsOn(ports);
  }, lookAfterMs);
  try {
    const result = await round();
    const tcp = troubleBetween(before, tcpCounters());
    const seen = sockets && (await sockets);
    return { result, tcp, ...(seen === undefined ? {} : { waiting: waitingSockets(seen) }) };
  } finally {
    clearTimeout(look);
  }
}
