// Deterministic generator of hostile expositions: well-formed seeds (vLLM, TGI, OpenMetrics
// shapes) cut, spliced and mutated with the tokens that break parsers and re-exports.

export type Rand = () => number;

export function rng(seed: number): Rand {
  let s = seed >>> 0 || 1;
  return () => {
    // xorshift32: fast, deterministic, good enough to pick mutations.
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

const SEEDS = [
  '# HELP vllm:num_requests_running Running.\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="m"} 3.0\n',
  '# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{engine="0",model_name="m"} 120.0\n# TYPE vllm:prompt_tokens_created gauge\nvllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9\n',
  '# TYPE vllm:e2e_request_latency_seconds histogram\nvllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 1.0\nvllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="m"} 2.0\nvllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 3.0\nvllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 3.0\nvllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 2.5\n',
  '# TYPE tgi_request_count counter\ntgi_request_count 11\n# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n',
  '# TYPE tgi_request_duration histogram\ntgi_request_duration_bucket{le="0.5"} 1\ntgi_request_duration_bucket{le="+Inf"} 2\ntgi_request_duration_sum 0.9\ntgi_request_duration_count 2\n',
  '# TYPE rpc_latency summary\nrpc_latency{quantile="0.5"} 0.2\nrpc_latency{quantile="0.99"} 0.9\nrpc_latency_sum 12\nrpc_latency_count 40\n',
  'process_open_fds 12\nhttp_requests_total{handler="/metrics",method="GET",status="2xx"} 7\n',
  '# TYPE a counter\na_total{x="1"} 3 # {trace_id="abc"} 1 1700000000.1\na_created{x="1"} 1700000000\n# EOF\n',
];

const TOKENS = [
  '#',
  '# ',
  '# TYPE ',
  '# HELP ',
  ' counter',
  ' gauge',
  ' histogram',
  ' summary',
  ' untyped',
  '{',
  '}',
  '"',
  '\\',
  '\\"',
  '\\n',
  '\\x',
  '=',
  ',',
  ' ',
  '\t',
  '\n',
  '\r',
  '\u2028',
  '\u0000',
  'le="',
  'quantile="',
  '+Inf',
  '-Inf',
  'NaN',
  'nan',
  '1e400',
  '0x1A',
  '0b1',
  '1_0',
  '-1',
  '1.5',
  '1e308',
  ' 1700000000000',
  ' 1700000000.5',
  ' # {trace_id="t"} 1',
  ' garbage',
  '__name__="x"',
  'a:b="1"',
  '9a="1"',
  'api_key="sk-SECRET"',
  'Authorization="Bearer x"',
  'worker="10.0.0.1"',
  'id="3f2b8c1e-9d4a-4c7e-8f1a-2b3c4d5e6f70"',
  '_total',
  '_bucket',
  '_sum',
  '_count',
  '_created',
  'upstream="x"',
  'exported_upstream="y"',
  '# EOF',
  'é',
  '😀',
  '{}',
  'a="1",a="2"',
  'model_name="m2"',
  'engine="1"',
];

function pick<T>(r: Rand, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

/** One hostile body: a few seed fragments, then 1-6 mutations (insert, delete, splice, duplicate). */
export function hostileBody(r: Rand): string {
  let body = '';
  for (let k = 1 + Math.floor(r() * 3); k > 0; k--) body += pick(r, SEEDS);
  for (let m = 1 + Math.floor(r() * 6); m > 0; m--) {
    const pos = Math.floor(r() * (body.length + 1));
    const op = r();
    if (op < 0.45) body = body.slice(0, pos) + pick(r, TOKENS) + body.slice(pos);
    else if (op < 0.65) body = body.slice(0, pos) + body.slice(pos + 1 + Math.floor(r() * 8));
    else if (op < 0.8) {
      // Duplicate a line somewhere else (duplicate series, interleaving, late metadata).
      const lines = body.split('\n');
      const line = pick(r, lines);
      lines.splice(Math.floor(r() * lines.length), 0, line);
      body = lines.join('\n');
    } else if (op < 0.9) body = body.slice(0, pos) + String.fromCharCode(Math.floor(r() * 128)) + body.slice(pos);
    else body = body.slice(0, pos);
  }
  return body;
}
