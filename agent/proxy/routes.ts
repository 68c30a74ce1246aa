// The routes the proxy measures, and what a request body says about the request. Pure functions
// of the bytes: the body is never logged, only read for these fields.

/** Measured routes, as the `route` label writes them; any other path is route="other". */
export const MEASURED_ROUTES = ['/v1/chat/completions', '/v1/completions', '/v1/responses', '/v1/embeddings', '/generate', '/generate_stream'] as const;
export type MeasuredRoute = (typeof MEASURED_ROUTES)[number];
export type Route = MeasuredRoute | 'other';

export function routeOf(url: string | undefined): Route {
  const [path = ''] = (url ?? '').split('?', 1);
  return (MEASURED_ROUTES as readonly string[]).includes(path) ? (path as MeasuredRoute) : 'other';
}

const USAGE_OPTION = Buffer.from(',"stream_options":{"include_usage":true}');

/**
 * The client's bytes with `stream_options` added as the last member of the top-level object, or
 * undefined when the body does not end with that object's brace. Called only for an object that
 * parsed, has members and no `stream_options`: one copy of the body, the client's formatting and
 * number spellings kept, where re-serialising would cost a parse's worth of time on long prompts.
 */
function withUsageOption(body: Buffer): Buffer | undefined {
  let end = body.length - 1;
  while (end >= 0 && (body[end] === 0x20 || body[end] === 0x0a || body[end] === 0x0d || body[end] === 0x09)) end--;
  if (body[end] !== 0x7d) return undefined;
  return Buffer.concat([body.subarray(0, end), USAGE_OPTION, body.subarray(end)]);
}

/** The routes whose streams can be asked for a usage chunk (`stream_options.include_usage`). */
const USAGE_OPTION_ROUTES: readonly Route[] = ['/v1/chat/completions', '/v1/completions'];

export interface RequestFacts {
  /** The `model` field as sent (never a label before it is checked against the served list). */
  requestedModel: string | undefined;
  stream: boolean;
  maxNewTokens: number | undefined;
  temperature: number | undefined;
  /**
   * The prompt as sent (a string, or the parsed messages or input), only for the keyed hash and
   * never written anywhere: made into text by promptMaterial(), hashed and let go once noted
   * (exchange.ts, noteFacts).
   */
  prompt: unknown;
  /** True when the proxy asked the engine for a usage chunk the client did not ask for. */
  usageInjected: boolean;
  /** A measured route whose body is not a JSON object: forwarded untouched, counted. */
  malformed: boolean;
}

/**
 * What inspectBody finds, in two parts because they live for different times: the facts, which
 * the exchange keeps for the stream's whole life, and the body to forward, which the caller sends
 * and lets go, so an open stream never holds its request body.
 */
export interface Inspection {
  facts: RequestFacts;
  /** The body to forward (rewritten only to inject include_usage); empty when it is not forwarded from here. */
  body: Buffer;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** The text the prompt hash is taken over: the prompt string, or the JSON of the messages or input. */
export function promptMaterial(facts: RequestFacts | undefined): string | undefined {
  const prompt = facts?.prompt;
  return prompt === undefined ? undefined : typeof prompt === 'string' ? prompt : JSON.stringify(prompt);
}

/** The body to forward of a request whose body went to the engine already. */
const NO_BODY = Buffer.alloc(0);

/**
 * What the request body says. `forward`: false when the body went to the engine already (the
 * native loop sends it and adds include_usage itself), so no copy is made or kept here.
 */
export function inspectBody(route: Route, body: Buffer, method: string | undefined, forward = true): Inspection {
  const facts: RequestFacts = {
    requestedModel: undefined,
    stream: route === '/generate_stream',
    maxNewTokens: undefined,
    temperature: undefined,
    prompt: undefined,
    usageInjected: false,
    malformed: false,
  };
  const unchanged: Inspection = { facts, body: forward ? body : NO_BODY };
  if (route === 'other' || method !== 'POST') return unchanged;
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    facts.malformed = true;
    return unchanged;
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    facts.malformed = true;
    return unchanged;
  }
  const d = doc as Record<string, unknown>;
  if (route === '/generate' || route === '/generate_stream') {
    const p = (d.parameters && typeof d.parameters === 'object' ? d.parameters : {}) as Record<string, unknown>;
    facts.maxNewTokens = num(p.max_new_tokens);
    facts.temperature = num(p.temperature);
    facts.prompt = typeof d.inputs === 'string' ? d.inputs : undefined;
    return unchanged;
  }
  facts.requestedModel = typeof d.model === 'string' ? d.model : undefined;
  facts.stream = d.stream === true;
  facts.maxNewTokens = num(d.max_completion_tokens) ?? num(d.max_tokens) ?? num(d.max_output_tokens);
  facts.temperature = num(d.temperature);
  facts.prompt = d.messages ?? d.prompt ?? d.input;
  const options = d.stream_options && typeof d.stream_options === 'object' ? (d.stream_options as Record<string, unknown>) : undefined;
  if (facts.stream && USAGE_OPTION_ROUTES.includes(route) && options?.include_usage !== true) {
    facts.usageInjected = true;
    if (!forward) return unchanged;
    const rewritten =
      (!('stream_options' in d) && withUsageOption(body)) || Buffer.from(JSON.stringify({ ...d, stream_options: { ...options, include_usage: true } }));
    return { facts, body: rewritten };
  }
  return unchanged;
}
