// Writes config/dashboards/*.json (Grafana) from the panel lists below, and copies dashboards and
// alert rules into the Helm chart's files/. `--check` exits 1 when a written file is out of date.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname } from 'node:path';

// biome-ignore lint/suspicious/noTemplateCurlyInString: a Grafana variable, not a JavaScript template
const ds = { type: 'prometheus', uid: '${datasource}' };
const M = 'model=~"$model"';
const T = 'tenant=~"$tenant"';
const R = '$__rate_interval';
const q = (expr, legend) => ({ expr, legend });
const p = (title, unit, targets, opts = {}) => ({ title, unit, targets, ...opts });

const DASHBOARDS = {
  'infertel-red': {
    title: 'infertel / RED overview',
    panels: [
      p('Requests per second', 'reqps', [q(`sum by (model) (rate(inference_requests_total{${M}}[${R}]))`, '{{model}}')]),
      p('5xx per second', 'reqps', [q(`sum by (model) (rate(inference_requests_total{${M},code="5xx"}[${R}]))`, '{{model}}')]),
      p('Error ratio (5xx)', 'percentunit', [
        q(`sum by (model) (rate(inference_requests_total{${M},code="5xx"}[${R}])) / sum by (model) (rate(inference_requests_total{${M}}[${R}]))`, '{{model}}'),
      ]),
      p(
        'Request latency P50 / P95 / P99',
        'ms',
        [0.5, 0.95, 0.99].map((x) =>
          q(`histogram_quantile(${x}, sum by (le, model) (rate(inference_request_duration_ms_bucket{${M}}[${R}])))`, `p${Math.round(x * 100)} {{model}}`),
        ),
        { thresholds: [2000] },
      ),
      p('Active streams', 'short', [q(`sum by (model) (inference_active_streams{${M}})`, '{{model}}')]),
      p('Queue time P95', 'ms', [q(`histogram_quantile(0.95, sum by (le, model) (rate(queue_time_ms_bucket{${M}}[${R}])))`, '{{model}}')]),
      p('Queue depth', 'short', [q(`sum by (model) (inference_queue_depth{${M}})`, '{{model}}')], { thresholds: [100, 500] }),
      p('Upstreams up', 'short', [q('infertel_upstream_up', '{{instance}} {{upstream}}')]),
      { row: "Canaries (infertel's own streams to the engine)" },
      p(
        'Canary runs by result',
        'short',
        [q(`sum by (model, slo_class, result) (increase(canary_runs_total{${M}}[${R}]))`, '{{model}} {{slo_class}} {{result}}')],
        {
          stack: true,
        },
      ),
      p('Canary failures in a row', 'short', [q(`max by (model, slo_class) (canary_consecutive_failures{${M}})`, '{{model}} {{slo_class}}')], {
        thresholds: [3],
      }),
      p(
        'Canary TTFT P95 (SLO 800 ms, streaming)',
        'ms',
        [q(`histogram_quantile(0.95, sum by (le, model, slo_class) (rate(canary_ttft_ms_bucket{${M}}[${R}])))`, '{{model}} {{slo_class}}')],
        { thresholds: [800] },
      ),
      p('Canary decode speed (floor 30 tokens/s)', 'short', [q(`avg by (model, slo_class) (canary_tokens_per_second{${M}})`, '{{model}} {{slo_class}}')], {
        thresholds: [30],
      }),
      p('Stream violations by kind', 'short', [q(`sum by (model, kind) (increase(inference_stream_violations_total{${M}}[${R}]))`, '{{model}} {{kind}}')]),
      p('Engine endpoints up (canary pings)', 'short', [q('canary_endpoint_up', '{{instance}} {{endpoint}}')]),
    ],
  },
  'infertel-llm': {
    title: 'infertel / LLM performance',
    panels: [
      p('Tokens per second by phase', 'short', [q(`sum by (model, phase) (tokens_per_second{${M}})`, '{{model}} {{phase}}')]),
      p(
        'Time to first token P50 / P95 / P99',
        'ms',
        [0.5, 0.95, 0.99].map((x) =>
          q(`histogram_quantile(${x}, sum by (le, model) (rate(inference_ttft_ms_bucket{${M}}[${R}])))`, `p${Math.round(x * 100)} {{model}}`),
        ),
        { thresholds: [500] },
      ),
      p(
        'Inter-token latency P50 / P95',
        'ms',
        [0.5, 0.95].map((x) =>
          q(`histogram_quantile(${x}, sum by (le, model) (rate(decode_iter_latency_ms_bucket{${M}}[${R}])))`, `p${Math.round(x * 100)} {{model}}`),
        ),
      ),
      p(
        'Per-stream decode speed (floor 30 tokens/s)',
        'short',
        [
          q(
            `1000 / (sum by (model) (rate(decode_iter_latency_ms_sum{${M}}[${R}])) / sum by (model) (rate(decode_iter_latency_ms_count{${M}}[${R}])))`,
            '{{model}}',
          ),
        ],
        { thresholds: [30] },
      ),
      p('Prefill latency P95', 'ms', [q(`histogram_quantile(0.95, sum by (le, model) (rate(prefill_latency_ms_bucket{${M}}[${R}])))`, '{{model}}')]),
      p(
        'Batch size P50 / P95',
        'short',
        [0.5, 0.95].map((x) =>
          q(
            `histogram_quantile(${x}, sum by (le, model, phase) (rate(batch_size_observed_bucket{${M}}[${R}])))`,
            `p${Math.round(x * 100)} {{model}} {{phase}}`,
          ),
        ),
      ),
      p('Context length distribution', 'reqps', [q(`sum by (context_bucket) (rate(inference_requests_by_context_total{${M}}[${R}]))`, '{{context_bucket}}')], {
        stack: true,
      }),
      p('KV cache usage', 'percentunit', [q(`max by (model) (kv_cache_usage_ratio{${M}})`, '{{model}}')], { thresholds: [0.9, 0.95] }),
      p('KV cache hit ratio', 'percentunit', [q(`max by (model) (kv_cache_hit_ratio{${M}})`, '{{model}}')]),
      p('Draft acceptance ratio', 'percentunit', [q(`avg by (model) (draft_accept_ratio{${M}})`, '{{model}}')]),
      p(
        'Preemption rate',
        'percentunit',
        [q(`sum by (model) (rate(preemptions_total{${M}}[${R}])) / sum by (model) (rate(inference_requests_finished_total{${M}}[${R}]))`, '{{model}}')],
        { thresholds: [0.05] },
      ),
    ],
  },
  'infertel-gpu': {
    title: 'infertel / GPU and worker',
    panels: [
      p('GPU utilisation', 'percentunit', [q('gpu_utilization_ratio', '{{instance}} {{device}}')], { thresholds: [0.9] }),
      p('GPU memory used', 'bytes', [q('gpu_mem_bytes', 'used {{instance}} {{device}}'), q('gpu_mem_total_bytes', 'total {{instance}} {{device}}')]),
      p('VRAM headroom', 'percentunit', [q('1 - gpu_mem_bytes / gpu_mem_total_bytes', '{{instance}} {{device}}')], { thresholds: [0.05] }),
      p('Memory bandwidth busy', 'percentunit', [q('gpu_mem_bw_ratio', '{{instance}} {{device}}')]),
      p('Temperature', 'celsius', [q('gpu_temperature_celsius', '{{instance}} {{device}}')], { thresholds: [85] }),
      p('Power', 'watt', [q('gpu_power_watts', 'draw {{instance}} {{device}}'), q('gpu_power_limit_watts', 'limit {{instance}} {{device}}')]),
      p('SM clock', 'hertz', [q('gpu_sm_clock_hertz', '{{instance}} {{device}}')]),
      p('Throttle reasons active', 'short', [q('gpu_throttle_reasons == 1', '{{instance}} {{device}} {{reason}}')]),
      p('XID errors (15m)', 'short', [q('increase(gpu_xid_errors_total[15m])', '{{instance}} {{device}} xid {{xid}}')]),
      p('CUDA OOM errors (15m)', 'short', [q('increase(gpu_oom_events_total[15m])', '{{instance}} {{device}}')]),
      p('GPU memory per process', 'bytes', [q('gpu_process_mem_bytes', '{{instance}} {{device}} {{process}}')], { stack: true }),
      p('Decode latency vs GPU utilisation', 'ms', [
        q(`histogram_quantile(0.95, sum by (le) (rate(decode_iter_latency_ms_bucket{${M}}[${R}])))`, 'decode p95 (ms)'),
        q('avg(gpu_utilization_ratio) * 100', 'GPU busy (%)'),
      ]),
      p('GPU telemetry source', 'short', [q('gpu_telemetry_source', '{{instance}} {{source}}'), q('gpu_telemetry_stale', 'stale {{instance}}')]),
      { row: 'GPU efficiency (joins of GPU and engine counters)' },
      p('Energy per generated token', 'J', [q(`avg by (model) (energy_per_token_joules{${M}})`, '{{model}}')]),
      p('GPU energy (power integrated)', 'watt', [q(`sum by (device) (rate(gpu_energy_joules_total[${R}]))`, '{{device}}')]),
      p('Model FLOP utilisation (MFU)', 'percentunit', [q(`avg by (model) (model_flops_utilization_ratio{${M}})`, '{{model}}')], { thresholds: [0.4] }),
      p('Memory bandwidth utilisation', 'percentunit', [q(`avg by (model) (memory_bandwidth_utilization_ratio{${M}})`, '{{model}}')]),
      p('KV cache against VRAM (engines that report their pool: SGLang)', 'percentunit', [
        q(`kv_cache_bytes{${M}} / on (instance, device) group_left () gpu_mem_total_bytes`, '{{instance}} {{device}} {{model}}'),
      ]),
    ],
  },
  'infertel-usage': {
    title: 'infertel / Customer usage (per tenant)',
    // Tenants come from the inline proxy (request-level mode); without it series carry no tenant
    // and `tenant=~".*"` still matches them, so the panels fall back to one line per model.
    variables: ['tenant'],
    panels: [
      p('Token usage: output tokens per second by tenant', 'short', [
        q(`sum by (tenant, model) (rate(tokens_generated_total{${M},${T}}[${R}]))`, '{{tenant}} {{model}}'),
      ]),
      p('Token usage: prompt tokens per second by tenant', 'short', [
        q(`sum by (tenant, model) (rate(tokens_input_total{${M},${T}}[${R}]))`, '{{tenant}} {{model}}'),
      ]),
      p('Request rate by tenant', 'reqps', [q(`sum by (tenant, route) (rate(inference_requests_total{${M},${T}}[${R}]))`, '{{tenant}} {{route}}')]),
      p('Error requests by tenant (4xx rejected, 5xx failed)', 'reqps', [
        q(`sum by (tenant, code) (rate(inference_requests_total{${M},${T},code!="2xx"}[${R}]))`, '{{tenant}} {{code}}'),
      ]),
      p('Output tokens over the range by tenant', 'short', [q(`sum by (tenant) (increase(tokens_generated_total{${M},${T}}[$__range]))`, '{{tenant}}')], {
        type: 'stat',
      }),
      p('Time to first token P95 by tenant (as the client sees it)', 'ms', [
        q(`histogram_quantile(0.95, sum by (le, tenant) (rate(inference_ttft_ms_bucket{${M},${T}}[${R}])))`, '{{tenant}}'),
      ]),
      p('Rate-limited requests by tenant (001)', 'reqps', [
        q(`sum by (tenant, limit) (rate(rate_limited_requests_total{${T}}[${R}]))`, '{{tenant}} {{limit}}'),
      ]),
      p(
        'Limit usage by tenant (share of the limit used)',
        'percentunit',
        [q(`1 - max by (tenant, limit) (rate_limit_remaining_ratio{${T}})`, '{{tenant}} {{limit}}')],
        {
          thresholds: [0.8, 0.95],
        },
      ),
      p('Streams with unknown usage (ended before their usage chunk)', 'reqps', [
        q(`sum by (tenant) (rate(inference_requests_usage_unknown_total{${M},${T}}[${R}]))`, '{{tenant}}'),
      ]),
      p(
        'Per-stream decode speed vs the 30 tokens/s floor',
        'short',
        [
          q(
            `1000 / (sum by (model) (rate(decode_iter_latency_ms_sum{${M}}[${R}])) / sum by (model) (rate(decode_iter_latency_ms_count{${M}}[${R}])))`,
            '{{model}}',
          ),
        ],
        { thresholds: [30] },
      ),
    ],
  },
};

/** Panels two to a line, 8 high; a row header takes a full line of its own. */
function layout(panels) {
  let x = 0;
  let y = 0;
  return panels.map((panel) => {
    if (panel.row) {
      if (x) y += 8;
      const pos = { h: 1, w: 24, x: 0, y };
      x = 0;
      y += 1;
      return pos;
    }
    const pos = { h: 8, w: 12, x, y };
    x += 12;
    if (x === 24) {
      x = 0;
      y += 8;
    }
    return pos;
  });
}

function rowJson(panel, id, gridPos) {
  return { id, type: 'row', title: panel.row, collapsed: false, datasource: ds, gridPos, panels: [], targets: [] };
}

function panelJson(panel, id, gridPos) {
  const steps = [{ color: 'green', value: null }, ...(panel.thresholds ?? []).map((v, i) => ({ color: i === 0 ? 'orange' : 'red', value: v }))];
  return {
    id,
    type: panel.type ?? 'timeseries',
    title: panel.title,
    datasource: ds,
    gridPos,
    fieldConfig: {
      defaults: { unit: panel.unit, thresholds: { mode: 'absolute', steps }, custom: panel.stack ? { stacking: { mode: 'normal' } } : {} },
      overrides: [],
    },
    options: { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
    targets: panel.targets.map((t, i) => ({ datasource: ds, expr: t.expr, legendFormat: t.legend, refId: String.fromCharCode(65 + i) })),
  };
}

/** A multi-value Grafana variable over the values of one label of inference_requests_total. */
function labelVariable(name) {
  return {
    name,
    label: name[0].toUpperCase() + name.slice(1),
    type: 'query',
    datasource: ds,
    query: { query: `label_values(inference_requests_total, ${name})`, refId: `${name}s` },
    definition: `label_values(inference_requests_total, ${name})`,
    includeAll: true,
    multi: true,
    allValue: '.*',
    current: {},
    refresh: 2,
    hide: 0,
  };
}

function dashboardJson(uid, d) {
  const positions = layout(d.panels);
  return {
    uid,
    title: d.title,
    tags: ['infertel', 'llm'],
    editable: true,
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-3h', to: 'now' },
    templating: {
      list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0 },
        ...['model', ...(d.variables ?? [])].map(labelVariable),
      ],
    },
    panels: d.panels.map((panel, i) => (panel.row ? rowJson : panelJson)(panel, i + 1, positions[i])),
  };
}

const check = process.argv.includes('--check');
const outputs = new Map();
for (const [uid, d] of Object.entries(DASHBOARDS)) {
  const text = `${JSON.stringify(dashboardJson(uid, d), null, 2)}\n`;
  outputs.set(`config/dashboards/${uid}.json`, text);
  outputs.set(`helm/infertel/files/dashboards/${uid}.json`, text);
}
outputs.set('helm/infertel/files/infertel.rules.yaml', readFileSync('config/alerts/infertel.rules.yaml', 'utf8'));
let stale = 0;
for (const [file, text] of outputs) {
  const current = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
  if (current === text) continue;
  stale++;
  if (check) console.error(`out of date: ${file}`);
  else {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
  }
}
console.log(
  check ? (stale ? `${stale} file(s) out of date: run node scripts/gen-dashboards.mjs` : 'dashboards and chart files up to date') : `wrote ${stale} file(s)`,
);
process.exit(check && stale ? 1 : 0);
