// The demo's built-in load: a few requests a second through the proxy from several tenants,
// mostly streams, with the odd engine error and client abort, so every request-level series,
// request log line and trace has something in it.

import { hashKey } from '../proxy/tenants.js';

/** Demo tenants and their keys (the keys are demo values, printed so a user can send requests as them). */
export const DEMO_TENANTS = [
  { name: 'acme', key: 'sk-demo-acme-0001', weight: 5, sloClass: 'interactive' },
  { name: 'globex', key: 'sk-demo-globex-0002', weight: 3, sloClass: 'batch' },
  { name: 'initech', key: 'sk-demo-initech-0003', weight: 1, sloClass: 'interactive' },
] as const;

/** initech is held to 12 requests a minute, about half what the load sends it: the demo's rate-limited tenant. */
export function demoTenantConfig() {
  return DEMO_TENANTS.map((t) => ({
    name: t.name,
    keys: [hashKey(t.key)],
    sloClass: t.sloClass,
    ...(t.name === 'initech' ? { limits: { requestsPerMinute: 12 } } : {}),
  }));
}

export interface Load {
  stop(): Promise<void>;
}

function pick(r: number): (typeof DEMO_TENANTS)[number] | undefined {
  const total = DEMO_TENANTS.reduce((a, t) => a + t.weight, 0) + 1;
  let x = r * total;
  for (const t of DEMO_TENANTS) {
    x -= t.weight;
    if (x < 0) return t;
  }
  return undefined; // anonymous
}

export function startLoad(proxy: string, model: string, perSecond: number, random: () => number = Math.random): Load {
  const inFlight = new Set<Promise<void>>();
  const controllers = new Set<AbortController>();
  const one = async () => {
    const tenant = pick(random());
    const r = random();
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (tenant) headers.authorization = `Bearer ${tenant.key}`;
    if (r < 0.02) headers['x-sim-status'] = random() < 0.5 ? '503' : '400';
    headers['x-sim-tokens'] = String(8 + Math.floor(random() * 120));
    const route = r < 0.75 ? '/v1/chat/completions' : r < 0.9 ? '/v1/completions' : '/v1/embeddings';
    const body =
      route === '/v1/chat/completions'
        ? { model, stream: random() < 0.8, messages: [{ role: 'user', content: 'Summarise the quarterly report.' }], max_tokens: 256, temperature: 0.7 }
        : route === '/v1/completions'
          ? { model, stream: true, prompt: 'Once upon a time', max_tokens: 128, temperature: 1 }
          : { model, input: 'embedding me' };
    const ac = new AbortController();
    controllers.add(ac);
    // About one stream in fifty is abandoned by its client half-way.
    const abandon = random() < 0.02 ? setTimeout(() => ac.abort(), 400) : undefined;
    try {
      const res = await fetch(`${proxy}${route}`, { method: 'POST', headers, body: JSON.stringify(body), signal: ac.signal });
      await res.arrayBuffer();
    } catch {
      // Aborts and a stopped engine are part of the load.
    } finally {
      if (abandon) clearTimeout(abandon);
      controllers.delete(ac);
    }
  };
  const timer = setInterval(() => {
    if (inFlight.size > 200) return;
    const p = one().finally(() => inFlight.delete(p));
    inFlight.add(p);
  }, 1000 / perSecond);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      for (const c of controllers) c.abort();
      await Promise.allSettled([...inFlight]);
    },
  };
}
