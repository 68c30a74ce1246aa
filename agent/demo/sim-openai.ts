// A stand-in for an engine's OpenAI-compatible API (and TGI's /generate): answers
// /v1/chat/completions, /v1/completions, /v1/responses and /v1/embeddings, streaming SSE with
// controlled timing. The demo puts the proxy in front of it; tests drive faults through
// x-sim-* request headers and read what the engine saw.

import type http from 'node:http';
import { serve, type SimServer } from './sim-common.js';

export interface SimOpenAiOptions {
  models: string[];
  /** Time to the first token. */
  ttftMs: number;
  /** Gap between tokens. */
  itlMs: number;
  /** Output tokens per request. */
  tokens: number;
  /** Stream faults for every request (x-sim-* headers set them per request). */
  faults?: StreamFaults;
  /** Answer /health with this status (default 200). */
  healthStatus?: number;
}

/** Ways a stream can break its contract, for the streaming validator's tests. */
export interface StreamFaults {
  /** Before this token, wait stallMs (x-sim-stall-at). */
  stallAt?: number;
  /** x-sim-stall-ms */
  stallMs?: number;
  /** After [DONE], send one more event (x-sim-after-done). */
  afterDone?: boolean;
  /** Send an event that is not JSON in place of this token (x-sim-bad-json-at). */
  badJsonAt?: number;
  /** Never answer (x-sim-hang). */
  hang?: boolean;
}

/** What the stand-in saw of one request (tests assert on it). */
export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Set when the connection closed before the response ended (the proxy cancelled). */
  cancelledAt: number | undefined;
  receivedAt: number;
  /** A burst write found the connection full and waited for it to drain (the reader held back). */
  sawBackpressure: boolean;
}

export interface SimOpenAi extends SimServer {
  seen: SeenRequest[];
}

const header = (req: http.IncomingMessage, name: string): number | undefined => {
  const v = req.headers[name];
  return typeof v === 'string' && v !== '' && Number.isFinite(Number(v)) ? Number(v) : undefined;
};

function promptTokensOf(body: Record<string, unknown>): number {
  const material = JSON.stringify(body.messages ?? body.prompt ?? body.input ?? body.inputs ?? '');
  return Math.max(1, Math.ceil(material.length / 4));
}

export function startSimOpenAi(opts: SimOpenAiOptions, port = 0): Promise<SimOpenAi> {
  const seen: SeenRequest[] = [];
  return serve(openAiHandler(opts, seen), port).then((s) => ({ ...s, seen }));
}

/** The stand-in's request handler, for a server that also serves other paths (the demo's vLLM). */
export function openAiHandler(opts: SimOpenAiOptions, seen: SeenRequest[] = []): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const record: SeenRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        cancelledAt: undefined,
        receivedAt: performance.now(),
        sawBackpressure: false,
      };
      // Tests read the latest requests; a long demo keeps only a bounded window.
      if (seen.length >= 10_000) seen.splice(0, 5_000);
      seen.push(record);
      res.on('close', () => {
        if (!res.writableFinished) record.cancelledAt = performance.now();
      });
      respond(req, res, record, opts);
    });
  };
}

function respond(req: http.IncomingMessage, res: http.ServerResponse, record: SeenRequest, opts: SimOpenAiOptions): undefined {
  const raw = record.body;
  const path = (req.url ?? '').split('?')[0];
  if (path === '/v1/models') return json(res, 200, { object: 'list', data: opts.models.map((id) => ({ id, object: 'model', owned_by: 'sim' })) });
  if (path === '/health') return json(res, opts.healthStatus ?? 200, {});
  const faults: StreamFaults = {
    ...opts.faults,
    ...(header(req, 'x-sim-stall-at') !== undefined ? { stallAt: header(req, 'x-sim-stall-at'), stallMs: header(req, 'x-sim-stall-ms') ?? 0 } : {}),
    ...(req.headers['x-sim-after-done'] !== undefined ? { afterDone: true } : {}),
    ...(header(req, 'x-sim-bad-json-at') !== undefined ? { badJsonAt: header(req, 'x-sim-bad-json-at') } : {}),
  };
  if (req.headers['x-sim-hang'] !== undefined || faults.hang) return; // never answers: the proxy's timeout must act
  const status = header(req, 'x-sim-status');
  if (status !== undefined) return json(res, status, { error: { message: 'simulated failure', code: status } });
  // biome-ignore lint/suspicious/noExplicitAny: a request body of any shape, read field by field
  let body: Record<string, any>;
  try {
    body = JSON.parse(raw || '{}');
  } catch {
    return json(res, 400, { error: { message: 'invalid JSON body' } });
  }
  // "Count from 1 to N" (the canaries' prompt) gets a counting answer, so content checks mean something.
  const counting = /count from 1 to (\d{1,4})/i.exec(JSON.stringify(body.messages ?? body.prompt ?? ''));
  const countTo = counting ? Number(counting[1]) : undefined;
  const tokens = header(req, 'x-sim-tokens') ?? countTo ?? opts.tokens;
  const ttft = header(req, 'x-sim-ttft-ms') ?? opts.ttftMs;
  const itl = header(req, 'x-sim-itl-ms') ?? opts.itlMs;
  const resetAfter = header(req, 'x-sim-reset-after');
  const model = typeof body.model === 'string' ? body.model : opts.models[0];
  const prompt = promptTokensOf(body);
  const usage = { prompt_tokens: prompt, completion_tokens: tokens, total_tokens: prompt + tokens };
  if (path === '/v1/embeddings')
    return json(res, 200, {
      object: 'list',
      data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2] }],
      model,
      usage: { prompt_tokens: prompt, total_tokens: prompt },
    });
  const known = ['/v1/chat/completions', '/v1/completions', '/v1/responses', '/generate', '/generate_stream'];
  if (!known.includes(path ?? '')) return json(res, 404, { error: { message: 'not found' } });
  const stream = body.stream === true || path === '/generate_stream';
  const word = (i: number) => (countTo !== undefined ? ` ${i + 1}${i + 1 < tokens ? ',' : '.'}` : i % 7 === 0 ? ' the' : ` w${i}`);
  // The simulated work never keeps a stopping process alive: its timers are unref'd.
  if (!stream) {
    setTimeout(
      () => {
        const text = Array.from({ length: tokens }, (_, i) => word(i)).join('');
        if (path === '/generate') return json(res, 200, { generated_text: text, details: { finish_reason: 'length', generated_tokens: tokens } });
        if (path === '/v1/responses')
          return json(res, 200, {
            object: 'response',
            model,
            output: [{ type: 'message', content: [{ type: 'output_text', text }] }],
            usage: { input_tokens: prompt, output_tokens: tokens },
          });
        const choice =
          path === '/v1/chat/completions'
            ? { index: 0, message: { role: 'assistant', content: text }, finish_reason: 'length' }
            : { index: 0, text, finish_reason: 'length' };
        json(res, 200, { id: 'cmpl-sim', object: 'chat.completion', model, choices: [choice], usage });
      },
      ttft + itl * Math.max(0, tokens - 1),
    ).unref();
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  const event = (doc: unknown, type?: string) => res.write(`${type ? `event: ${type}\n` : ''}data: ${JSON.stringify(doc)}\n\n`);
  const includeUsage = body.stream_options?.include_usage === true;
  if (req.headers['x-sim-burst'] !== undefined) {
    // As fast as the connection takes it, waiting for 'drain' like a real server.
    const pad = 'x'.repeat(1000);
    let n = 0;
    res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] })}\n\n`);
    const burst = () => {
      while (n < tokens) {
        n++;
        const ok = res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: pad } }] })}\n\n`);
        if (!ok) {
          record.sawBackpressure = true;
          res.once('drain', burst);
          return;
        }
      }
      res.end(`data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'length' }] })}\n\ndata: [DONE]\n\n`);
    };
    burst();
    return;
  }
  // OpenAI's wire order: a role-only chunk, content chunks, a finish_reason chunk, usage, [DONE].
  if (path === '/v1/chat/completions') {
    event({
      id: 'chatcmpl-sim',
      object: 'chat.completion.chunk',
      model,
      choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }],
    });
    // x-sim-extra-choices: N more choices (indices 1..N), each opened and finished at once, in one event.
    const extra = Math.min(header(req, 'x-sim-extra-choices') ?? 0, 10_000);
    if (extra > 0)
      event({
        id: 'chatcmpl-sim',
        object: 'chat.completion.chunk',
        model,
        choices: Array.from({ length: extra }, (_, k) => ({ index: k + 1, delta: { role: 'assistant', content: '' }, finish_reason: 'stop' })),
      });
  }
  let i = 0;
  let stalled = false;
  const step = () => {
    if (res.destroyed) return;
    if (resetAfter !== undefined && i >= resetAfter) {
      res.socket?.resetAndDestroy();
      return;
    }
    if (faults.stallAt !== undefined && i === faults.stallAt && !stalled) {
      stalled = true;
      setTimeout(step, faults.stallMs ?? 0).unref();
      return;
    }
    if (i < tokens && faults.badJsonAt === i) {
      res.write('data: {"choices": [{"delta": \n\n');
      i++;
      setTimeout(step, itl).unref();
      return;
    }
    if (i < tokens) {
      if (path === '/generate_stream') event({ token: { id: i, text: word(i), special: false }, generated_text: null, details: null });
      else if (path === '/v1/responses') event({ type: 'response.output_text.delta', delta: word(i) }, 'response.output_text.delta');
      else if (path === '/v1/chat/completions')
        event({ id: 'chatcmpl-sim', object: 'chat.completion.chunk', model, choices: [{ index: 0, delta: { content: word(i) }, finish_reason: null }] });
      else event({ id: 'cmpl-sim', object: 'text_completion', model, choices: [{ index: 0, text: word(i), finish_reason: null }] });
      i++;
      setTimeout(step, itl).unref();
      return;
    }
    if (path === '/generate_stream')
      event({ token: { id: i, text: '', special: true }, generated_text: 'done', details: { finish_reason: 'length', generated_tokens: tokens } });
    else if (path === '/v1/responses')
      event({ type: 'response.completed', response: { object: 'response', usage: { input_tokens: prompt, output_tokens: tokens } } }, 'response.completed');
    else {
      const end = path === '/v1/chat/completions' ? { delta: {} } : { text: '' };
      event({ id: 'chatcmpl-sim', object: 'chat.completion.chunk', model, choices: [{ index: 0, ...end, finish_reason: 'length' }] });
      if (includeUsage) event({ id: 'chatcmpl-sim', object: 'chat.completion.chunk', model, choices: [], usage });
      res.write('data: [DONE]\n\n');
      if (faults.afterDone) res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: ' late' } }] })}\n\n`);
    }
    res.end();
  };
  setTimeout(step, ttft).unref();
}

function json(res: http.ServerResponse, status: number, doc: unknown): undefined {
  const body = JSON.stringify(doc);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
  return undefined;
}
