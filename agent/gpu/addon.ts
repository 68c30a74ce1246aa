// Loads the native GPU addon (native/, built by `npm install` when cargo is there): NVML and AMD SMI.

import { createRequire } from 'node:module';
import type { GpuPoll } from './probe.js';

export interface InitInfo {
  libPath: string;
  deviceCount: number;
  driverVersion: string | null;
  nvmlVersion: string | null;
  xidEvents: boolean;
  xidError: string | null;
}

export interface AmdInitInfo {
  libPath: string;
  deviceCount: number;
  libVersion: string;
  abi: 'rocm6' | 'rocm7';
}

/** The addon's API (native/typedefs.jsonl, from which the generated native/index.d.ts is made). */
export interface GpuAddon {
  init(libPath?: string | null): InitInfo;
  poll(): Promise<GpuPoll>;
  shutdown(): boolean;
  amdInit(libPath?: string | null): AmdInitInfo;
  amdPoll(): Promise<GpuPoll>;
  amdShutdown(): boolean;
  edgeStart(spec: string, policy?: (requests: EdgeRequest[], seen: EdgeTaps) => void): { id: number; address: string };
  edgeForward(id: number, token: number, upstreamFields: string, clientFields: string, body?: Buffer | string, stripUsage?: boolean): boolean;
  edgeAnswer(id: number, token: number, response: Buffer | string): boolean;
  edgeStats(id: number): EdgeStats | null;
  edgeStop(id: number): boolean;
  /** What the loop reads of one 2xx event stream (native/src/sse.rs), for the tests that hold it to stream.ts. */
  sseRead(target: string, rules: string, bytes: Buffer, reads: string, endAt: number, outcome: string): Float64Array | null;
  /** Where each figure sits in what sseRead and the loop return (native/src/sse.rs's `slot`), by name. */
  readingLayout(): Record<string, number>;
  /** Every thread but the data path's loops under SCHED_IDLE (native/src/sched.rs); absent from an addon built before it. */
  idleOtherThreads?(): IdledThreads;
}

/** What idleOtherThreads did; `error` is the first refusal's text. */
export interface IdledThreads {
  idled: number;
  kept: number;
  failed: number;
  error: string | null;
}

/** What the native data path counted (native/src/edge.rs). */
export interface EdgeStats {
  requests: number;
  open: number;
  bodyTooLarge: number;
  badRequest: number;
  upstreamRefused: number;
  upstreamTimeout: number;
  engineReset: number;
  clientAbort: number;
  engineConnections: number;
  overloaded: number;
  policyTimeout: number;
  /** Ends told to the policy, counted before the answer's last bytes are written. */
  endsTold: number;
}

/** A complete request that the native data path hands its policy (headers as name, value, name, ...). */
export interface EdgeRequest {
  token: number;
  /** When its head was complete: CLOCK_MONOTONIC in ms, the clock of process.hrtime. */
  at: number;
  /** It waits for edgeForward or edgeAnswer; false when the loop sent it already (`tell`). */
  waits: boolean;
  /** The request id the loop sent, when it did not wait. */
  requestId: string | null;
  /** The loop asked the engine for a usage chunk the client did not ask for (when it did not wait). */
  usageInjected: boolean;
  /** The loop answered it itself (413, 503 overloaded) without reading its body; its end follows in the same batch. */
  answered: boolean;
  method: string;
  target: string;
  headers: string[];
  body: Buffer;
}

export type EdgeOutcome = 'complete' | 'engine_reset' | 'client_abort' | 'upstream_timeout' | 'upstream_refused' | 'policy_timeout';

/** Kinds in EdgeTaps.index. */
export const TAP_HEAD = 0;
export const TAP_DATA = 1;
export const TAP_END = 2;

/**
 * What the native data path saw of the answers its policy let through since the last batch, in
 * order, packed: a batch carries tens of data reads, and they come as four numbers and a slice of
 * one Buffer each rather than as an object with a Buffer of its own.
 */
export interface EdgeTaps {
  /** Four numbers per thing seen: its kind (TAP_HEAD, TAP_DATA, TAP_END), token, when (as EdgeRequest.at), and for data its byte count. */
  index: Float64Array;
  /** The data, end to end in the order of `index`: body bytes as the engine sent them, before any strip. */
  bytes: Buffer;
  /**
   * For each head its status and headers, and whether the loop reads its body itself (then no data
   * follows, and no headers come: nothing reads them); for each end its outcome, and the loop's
   * reading of the body (see LoopReading; the readings of a batch are views of one buffer), in the
   * order of `index`.
   */
  notes: Array<{ status: number; headers: string[]; read: boolean } | { outcome: EdgeOutcome; read: Float64Array | null }>;
}

/** What to do with each thing in an EdgeTaps batch; `data` is a view of the batch's buffer. */
export interface TapVisitor {
  head(token: number, at: number, status: number, headers: string[], read: boolean): void;
  data(token: number, at: number, data: Buffer): void;
  end(token: number, at: number, outcome: EdgeOutcome, read: Float64Array | null): void;
}

/** Walks a batch in order, without an object per thing seen. */
export function walkTaps(taps: EdgeTaps, visit: TapVisitor): void {
  const { index, bytes, notes } = taps;
  let offset = 0;
  let note = 0;
  for (let i = 0; i + 3 < index.length; i += 4) {
    const kind = index[i];
    const token = index[i + 1] as number;
    const at = index[i + 2] as number;
    if (kind === TAP_DATA) {
      const data = bytes.subarray(offset, offset + (index[i + 3] as number));
      offset += data.length;
      visit.data(token, at, data);
      continue;
    }
    const n = notes[note++];
    if (kind === TAP_HEAD && n && 'status' in n) visit.head(token, at, n.status, n.headers, n.read);
    else if (kind === TAP_END && n && 'outcome' in n) visit.end(token, at, n.outcome, n.read);
  }
}

/** EdgeTaps unpacked, one object per thing seen (for tests and tools; the proxy walks the packed form). */
export function seenOf(taps: EdgeTaps): EdgeSeen[] {
  const out: EdgeSeen[] = [];
  const base = { status: null, headers: null, data: null, outcome: null, read: null };
  walkTaps(taps, {
    head: (token, at, status, headers, read) => out.push({ ...base, token, at, kind: 'head', status, headers, read }),
    data: (token, at, data) => out.push({ ...base, token, at, kind: 'data', data }),
    end: (token, at, outcome, read) => out.push({ ...base, token, at, kind: 'end', outcome, read }),
  });
  return out;
}

/** One thing the native data path saw of an answer its policy let through, and when (as EdgeRequest.at). */
export interface EdgeSeen {
  token: number;
  at: number;
  kind: 'head' | 'data' | 'end';
  status: number | null;
  headers: string[] | null;
  /** Body bytes as the engine sent them, before any strip. */
  data: Buffer | null;
  outcome: EdgeOutcome | null;
  /** A head's: whether the loop reads the body; an end's: the loop's reading of it (null: none). */
  read: boolean | Float64Array | null;
}

export type AddonLoad = { ok: true; addon: GpuAddon } | { ok: false; reason: string };

let cached: AddonLoad | undefined;

/**
 * Requests as the addon hands them to the policy, packed (native/src/lib.rs, call_policy): four
 * numbers per request in `index` (token, at, flags, header field count), its strings in order in
 * `strings` (request id or "", method, target, then each field's name and value), a body each.
 */
export interface EdgeRequestBatch {
  index: Float64Array;
  strings: string[];
  bodies: Buffer[];
}

const REQUEST_WAITS = 1;
const REQUEST_USAGE_INJECTED = 2;
const REQUEST_ANSWERED = 4;

/** The batch's requests as objects: made here, where they cost less than properties set one by one from C. */
export function requestsOf(batch: EdgeRequestBatch): EdgeRequest[] {
  const { index, strings, bodies } = batch;
  const out: EdgeRequest[] = [];
  let s = 0;
  for (let i = 0, r = 0; i + 3 < index.length; i += 4, r++) {
    const flags = index[i + 2] as number;
    const fields = 2 * (index[i + 3] as number);
    const waits = (flags & REQUEST_WAITS) !== 0;
    out.push({
      token: index[i] as number,
      at: index[i + 1] as number,
      waits,
      requestId: waits ? null : (strings[s] as string),
      usageInjected: (flags & REQUEST_USAGE_INJECTED) !== 0,
      answered: (flags & REQUEST_ANSWERED) !== 0,
      method: strings[s + 1] as string,
      target: strings[s + 2] as string,
      headers: strings.slice(s + 3, s + 3 + fields),
      body: bodies[r] as Buffer,
    });
    s += 3 + fields;
  }
  return out;
}

/** The addon as loaded: its policy is given packed requests. */
type RawAddon = Omit<GpuAddon, 'edgeStart'> & {
  edgeStart?: (spec: string, policy?: (requests: EdgeRequestBatch, seen: EdgeTaps) => void) => { id: number; address: string };
};

export function loadAddon(): AddonLoad {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  try {
    const raw = require('../../../native/index.js') as RawAddon;
    const { edgeStart: start, ...rest } = raw;
    const edgeStart: GpuAddon['edgeStart'] | undefined =
      start && ((spec, policy) => start(spec, policy && ((packed, seen) => policy(requestsOf(packed), seen))));
    // An addon built before the native data path has no edgeStart, and the agent checks for one.
    const addon = (edgeStart ? { ...rest, edgeStart } : rest) as GpuAddon;
    cached = { ok: true, addon };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    cached = {
      ok: false,
      reason:
        e.code === 'MODULE_NOT_FOUND' || /Cannot find native binding|Cannot find module/.test(e.message)
          ? 'the GPU addon is not built (npm install builds it when cargo is available)'
          : `the GPU addon failed to load: ${e.message.split('\n')[0]}`,
    };
  }
  return cached;
}
