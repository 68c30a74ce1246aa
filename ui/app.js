// The status page: listens to /api/v1/status/stream (a document per collection cycle) and draws it. No inline script, no
// third-party request; uPlot is served by the agent itself.
(() => {
  const $ = (id) => document.getElementById(id);
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const fmt = (v, digits = 1) => (v === undefined || v === null ? '–' : Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en') : (+v).toFixed(digits));
  const bytes = (v) => (v === undefined || v === null ? '–' : `${(v / 2 ** 30).toFixed(1)} GiB`);
  const ago = (ms) => (ms === undefined || ms === null ? 'never' : `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago`);
  const text = (el, t) => {
    el.textContent = t;
    return el;
  };
  const cell = (row, t, cls) => {
    const td = text(document.createElement('td'), t);
    if (cls) td.className = cls;
    row.appendChild(td);
  };

  const compact = (v) => (Math.abs(v) >= 1e6 ? `${+(v / 1e6).toFixed(1)}M` : Math.abs(v) >= 1e3 ? `${+(v / 1e3).toFixed(1)}k` : `${+v.toFixed(2)}`);
  const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
  const charts = new Map();

  /** One chart per panel: `series` are names in the history, drawn against its timestamps. */
  function chart(panel, series, labels, data) {
    const el = document.querySelector(`[data-panel="${panel}"] .chart`);
    const width = Math.max(200, el.clientWidth);
    let c = charts.get(panel);
    const key = series.join('|');
    if (c && c.key !== key) {
      c.plot.destroy();
      c = undefined;
    }
    if (!c) {
      const opts = {
        width,
        height: 150,
        legend: { show: true },
        axes: [
          { stroke: css('--muted'), grid: { stroke: css('--line') } },
          { stroke: css('--muted'), grid: { stroke: css('--line') }, size: 46, values: (_u, ticks) => ticks.map(compact) },
        ],
        series: [{}, ...series.map((s, i) => ({ label: labels[i] ?? s, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))],
      };
      c = { key, plot: new uPlot(opts, data, el) };
      charts.set(panel, c);
    } else {
      if (c.plot.width !== width) c.plot.setSize({ width, height: 150 });
      c.plot.setData(data);
    }
    el.dataset.points = String(data[0].length);
    el.dataset.filled = String(data.slice(1).some((s) => s.some((v) => v !== null)));
  }

  function draw(doc) {
    text($('pod'), doc.pod ? `· ${doc.pod}` : '');
    const ready = $('ready');
    text(ready, doc.ready ? 'ready' : 'not ready');
    ready.className = `pill ${doc.ready ? 'ok' : 'bad'}`;
    text($('models'), doc.models.length ? `models: ${doc.models.join(', ')}` : 'no model seen yet');
    const ub = $('upstreams').tBodies[0];
    ub.replaceChildren();
    for (const u of doc.upstreams) {
      const row = ub.insertRow();
      row.dataset.upstream = u.name;
      row.dataset.state = u.up ? 'up' : 'down';
      cell(row, u.name);
      cell(row, u.flavor);
      cell(row, u.version || '–');
      cell(row, u.up ? 'up' : 'down', u.up ? 'ok' : 'bad');
      cell(row, ago(u.lastSuccessMs));
      cell(row, u.up ? '' : `${u.lastOutcome}${u.lastDetail ? `: ${u.lastDetail}` : ''}`);
    }
    const gpu = doc.gpu;
    text($('gpusource'), gpu ? `GPU telemetry: ${gpu.source}${gpu.reason ? ` (${gpu.reason})` : ''}` : '');

    const now = doc.current;
    for (const id of ['active_streams', 'queue_depth', 'request_p95_ms', 'ttft_p95_ms', 'rate_preemptions'])
      text($(id), fmt(now[id], id.startsWith('rate') ? 2 : 0));

    const t = doc.history.t.map((ms) => ms / 1000);
    const s = (name) => doc.history.series[name] ?? t.map(() => null);
    const codes = ['2xx', '4xx', '5xx', 'unknown'].filter((c) => doc.history.series[`rate_requests_${c}`]);
    chart('requests', codes, codes, [t, ...codes.map((c) => s(`rate_requests_${c}`))]);
    chart(
      'latency',
      ['p50', 'p95', 'p99', 'ttft50', 'ttft95', 'ttft99'],
      ['request p50', 'request p95', 'request p99', 'TTFT p50', 'TTFT p95', 'TTFT p99'],
      [t, s('request_p50_ms'), s('request_p95_ms'), s('request_p99_ms'), s('ttft_p50_ms'), s('ttft_p95_ms'), s('ttft_p99_ms')],
    );
    chart('tokens', ['prefill', 'decode'], ['prefill', 'decode'], [t, s('tokens_per_second_prefill'), s('tokens_per_second_decode')]);
    chart('kv', ['usage', 'hit'], ['usage', 'hit ratio'], [t, s('kv_cache_usage_ratio'), s('kv_cache_hit_ratio')]);
    const devices = (gpu?.devices ?? []).map((d) => d.device);
    chart('gpuutil', devices, devices, [t, ...devices.map((d) => s(`gpu_${d}_utilization_percent`))]);

    const bars = $('context');
    bars.replaceChildren();
    const buckets = Object.entries(doc.context_buckets);
    const max = Math.max(1, ...buckets.map(([, n]) => n));
    for (const [name, n] of buckets) {
      const row = document.createElement('div');
      row.dataset.bucket = name;
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.width = `${Math.round((n / max) * 160)}px`;
      row.append(
        Object.assign(document.createElement('span'), { className: 'label', textContent: name }),
        bar,
        Object.assign(document.createElement('span'), { className: 'n', textContent: fmt(n, 0) }),
      );
      bars.appendChild(row);
    }

    const db = $('devices').tBodies[0];
    db.replaceChildren();
    for (const d of gpu?.devices ?? []) {
      const row = db.insertRow();
      row.dataset.device = d.device;
      cell(row, d.device);
      cell(row, d.name ?? '–');
      cell(row, d.utilization_gpu_percent === null ? '–' : `${d.utilization_gpu_percent}%`);
      cell(row, `${bytes(d.memory_used_bytes)} / ${bytes(d.memory_total_bytes)}`);
      cell(row, d.power_w === null ? '–' : `${fmt(d.power_w, 0)} W`);
      cell(row, d.temperature_c === null ? '–' : `${d.temperature_c} °C`);
      const clock = now[`gpu_${d.device}_sm_clock_hz`];
      cell(row, clock === undefined ? '–' : `${Math.round(clock / 1e6)} MHz`);
      const thr = doc.throttle?.[d.device] ?? [];
      cell(row, thr.length ? thr.join(', ') : 'none', thr.length ? 'warn' : '');
    }

    const h = doc.health;
    const hl = $('health');
    hl.replaceChildren();
    const item = (k, v, cls) => {
      hl.append(text(document.createElement('dt'), k));
      const dd = text(document.createElement('dd'), v);
      if (cls) dd.className = cls;
      hl.append(dd);
    };
    if (h) {
      item('canonical series', `${h.seriesAdmitted} / ${h.seriesCap}`, h.seriesAdmitted >= h.seriesCap ? 'bad' : '');
      item('folded into overflow', fmt(h.overflowTotal, 0), h.overflowTotal ? 'warn' : '');
      item('parse errors', fmt(h.parseErrorsTotal, 0), h.parseErrorsTotal ? 'warn' : '');
      item('RSS', `${(h.rssBytes / 2 ** 20).toFixed(0)} MiB`);
      for (const [u, sec] of Object.entries(h.scrapeSeconds)) item(`scrape ${u}`, `${(sec * 1000).toFixed(1)} ms`);
      item('history', `${(h.historyBytes / 1024).toFixed(0)} KiB bound`);
    }
    document.body.dataset.updated = String(Date.now());
  }

  // Server-sent events: a new document after every collection cycle (EventSource reconnects by itself).
  const stream = new EventSource('api/v1/status/stream');
  stream.onmessage = (e) => draw(JSON.parse(e.data));
  stream.onerror = () => {
    text($('ready'), 'agent unreachable').className = 'pill bad';
  };
})();
