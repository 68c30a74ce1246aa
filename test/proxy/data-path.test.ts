// Which data path carries the proxy's bytes (proxy.dataPath): the agent's default is the native
// loop where the addon is built; https targets and targets with a base path stay on Node's stack,
// and asking for native where it cannot run is a configuration error at start.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type GpuAddon, loadAddon } from '../../agent/gpu/addon.js';
import { openAiHandler, startSimOpenAi } from '../../agent/demo/sim-openai.js';
import { getText, spawnAgent, tempDir, threadsOf } from '../helpers.js';
import type { ProxyDeps } from '../../agent/proxy/exchange.js';
import { NativeProxy, nativeUnfit } from '../../agent/proxy/native-proxy.js';
import { post, send, startHarness, sumOf } from './harness.js';

const built = loadAddon().ok;

const SCHED_OTHER = 0;
const SCHED_IDLE = 5;

/** Each thread of `pid` as [name, scheduling policy], from /proc (policy is stat's 41st field). */
function threadPolicies(pid: number): Array<[string, number]> {
  return threadsOf(pid).map(({ tid, name }) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // The name may hold spaces and parentheses: the fields after it start at its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [name, Number(fields[41 - 3])];
  });
}

describe('proxy.dataPath', () => {
  it('nativeUnfit: plain http with no base path is fit; https and a base path are not', () => {
    const cases: Array<[string, RegExp | undefined]> = [
      ['http://127.0.0.1:8000', undefined],
      ['http://127.0.0.1:8000/', undefined],
      ['http://[::1]:8000', undefined],
      ['http://engine.local', undefined],
      ['https://127.0.0.1:8443', /not plain http/],
      ['http://127.0.0.1:8000/engine', /base path/],
    ];
    for (const [target, why] of cases) {
      const got = nativeUnfit(target);
      if (why) assert.match(got ?? '', why, target);
      else assert.equal(got, undefined, target);
    }
  });

  it('auto runs the native data path where the addon is built, and says which in its log', async () => {
    const h = await startHarness({ proxy: { dataPath: 'auto' } });
    try {
      assert.equal(h.agent.proxy?.dataPath, built ? 'native' : 'node');
      assert.match(h.agentLogs(), new RegExp(`"data_path":"${built ? 'native' : 'node'}"`));
    } finally {
      await h.close();
    }
  });

  it('node runs the Node proxy even where the addon is built', async () => {
    const h = await startHarness({ proxy: { dataPath: 'node' } });
    try {
      assert.equal(h.agent.proxy?.dataPath, 'node');
    } finally {
      await h.close();
    }
  });

  it('auto keeps an https target on the Node data path; native refuses it at start, naming the key', async () => {
    const h = await startHarness({ proxy: { dataPath: 'auto', target: 'https://127.0.0.1:9' } });
    try {
      assert.equal(h.agent.proxy?.dataPath, 'node');
    } finally {
      await h.close();
    }
    await assert.rejects(
      startHarness({ proxy: { dataPath: 'native', target: 'https://127.0.0.1:9' } }),
      /proxy\.dataPath: native is not available here \(the target is not plain http/,
    );
  });

  for (const path of ['native', 'node'] as const)
    it(`${path}: an error while recording one request is counted and the proxy goes on answering`, {
      skip: path === 'native' && !built && 'the addon is not built',
    }, async () => {
      const h = await startHarness({ proxy: { dataPath: path } });
      try {
        const metrics = h.agent.proxyMetrics!;
        const record = metrics.record.bind(metrics);
        metrics.record = () => {
          throw new Error('recording failed');
        };
        const first = await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'a' });
        assert.equal(first.status, 200);
        metrics.record = record;
        const second = await post(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: 'b' });
        assert.equal(second.status, 200);
        const m = await h.metrics();
        assert.equal(sumOf(m, 'infertel_proxy_events_total', { event: 'internal_error' }), 1);
        assert.equal(sumOf(m, 'inference_requests_total', { route: '/v1/completions' }), 1, 'the second request is recorded');
        assert.match(h.agentLogs(), /"event":"proxy_internal_error"/);
      } finally {
        await h.close();
      }
    });

  it('native: a scrape right after the answers holds every one of them (the scrape waits for the loop to tell JS)', {
    skip: !built && 'the addon is not built',
  }, async () => {
    const h = await startHarness({ proxy: { dataPath: 'native' } });
    try {
      for (const round of [1, 2, 3]) {
        // send(), not post(), which would wait for the records itself.
        const answers = await Promise.all(
          Array.from({ length: 20 }, (_, i) => send(`${h.proxy}/v1/completions`, { model: 'sim-llama', prompt: `${round}-${i}` })),
        );
        assert.deepEqual(new Set(answers.map((a) => a.status)), new Set([200]));
        const m = await getText(`${h.base}/metrics`);
        assert.equal(sumOf(m.body, 'inference_requests_total', { route: '/v1/completions' }), 20 * round, `round ${round}`);
      }
      // Not timing: with nothing told and unseen it returns at once, not after its 5 s bound.
      const idle = performance.now();
      await h.agent.proxy!.settled(5000);
      assert.ok(performance.now() - idle < 2500, 'settled() waited with nothing to wait for');
    } finally {
      await h.close();
    }
  });

  it('native: an empty listen host listens on every address, as the Node proxy does', { skip: !built && 'the addon is not built' }, async () => {
    const h = await startHarness({ proxy: { dataPath: 'native', listen: ':0' } });
    try {
      const port = h.agent.proxy!.address().split(':').at(-1);
      const r = await post(`http://127.0.0.1:${port}/v1/completions`, { model: 'sim-llama', prompt: 'a' });
      assert.equal(r.status, 200);
    } finally {
      await h.close();
    }
  });

  it('native: an IPv6 engine target is connected to and streamed from (the loop builds a sockaddr_in6)', {
    skip: !built && 'the addon is not built',
  }, async (t) => {
    const engine = http.createServer(openAiHandler({ models: ['v6-model'], ttftMs: 1, itlMs: 1, tokens: 3 }));
    const listening = await new Promise<boolean>((resolve) => {
      engine.once('error', () => resolve(false));
      engine.listen(0, '::1', () => resolve(true));
    });
    // A machine (or container) without IPv6 loopback has no address to test against.
    if (!listening) return t.skip('this machine has no IPv6 loopback (::1)');
    const { port } = engine.address() as AddressInfo;
    const h = await startHarness({ proxy: { dataPath: 'native', target: `http://[::1]:${port}` } });
    try {
      assert.equal(h.agent.proxy?.dataPath, 'native');
      const plain = await post(`${h.proxy}/v1/completions`, { model: 'v6-model', prompt: 'a' });
      assert.equal(plain.status, 200, plain.text);
      assert.equal((JSON.parse(plain.text) as { model: string }).model, 'v6-model');
      const streamed = await post(`${h.proxy}/v1/chat/completions`, { model: 'v6-model', stream: true, messages: [{ role: 'user', content: 'a' }] });
      assert.equal(streamed.status, 200, streamed.text);
      // One content chunk per token the stand-in was told to send, then its finish chunk; the usage chunk the proxy asked for is stripped.
      assert.equal(streamed.text.match(/"delta":\{"content":/g)?.length, 3, streamed.text);
      assert.match(streamed.text, /"finish_reason":"length"/);
      assert.doesNotMatch(streamed.text, /"usage"/);
      assert.match(streamed.text, /data: \[DONE\]/);
      assert.equal(sumOf(await h.metrics(), 'inference_requests_total', { code: '2xx' }), 2);
    } finally {
      await h.close();
      await new Promise((resolve) => engine.close(resolve));
    }
  });

  for (const dataPath of ['node', 'native'] as const) {
    it(`${dataPath}: a burst of connects while the proxy cannot accept is queued by the kernel, not dropped (listen backlog 4096)`, {
      skip: dataPath === 'native' && !built && 'the addon is not built',
    }, async () => {
      const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
      const burst = 800;
      // Node's default backlog (511) queues 512 connections; the kernel caps any backlog at somaxconn.
      assert.ok(somaxconn > burst, `somaxconn ${somaxconn} would cap the backlog below the burst`);
      const engine = await startSimOpenAi({ models: ['m'], ttftMs: 1, itlMs: 1, tokens: 2 });
      const configFile = join(tempDir('infertel-backlog-'), 'config.yaml');
      writeFileSync(configFile, `proxy:\n  dataPath: ${dataPath}\n`);
      const agent = await spawnAgent(['--config', configFile, '--proxy-listen', '127.0.0.1:0', '--proxy-target', engine.url]);
      const [host, port] = [new URL(agent.proxyBase!).hostname, Number(new URL(agent.proxyBase!).port)];
      const sockets: net.Socket[] = [];
      agent.child.kill('SIGSTOP');
      try {
        // Stopped, the agent accepts nothing: each handshake the kernel completes sits in the accept queue, and a SYN past the queue's bound is dropped.
        let connected = 0;
        for (let i = 0; i < burst; i++) {
          const s = net.connect(port, host, () => connected++);
          s.on('error', () => undefined);
          sockets.push(s);
        }
        await new Promise((r) => setTimeout(r, 700));
        assert.equal(connected, burst, `${connected} of ${burst} connects completed within 0.7 s`);
      } finally {
        agent.child.kill('SIGCONT');
        for (const s of sockets) s.destroy();
        await agent.stop();
        await engine.close();
      }
    });
  }

  it('native: a scrape counts every request answered before it (the records follow the answers by a moment)', {
    skip: !built && 'the addon is not built',
  }, async () => {
    // The agent in its own process, as a scraper meets it: a client reads /metrics the moment it has its answer.
    const engine = await startSimOpenAi({ models: ['m'], ttftMs: 1, itlMs: 1, tokens: 2 });
    const agent = await spawnAgent(['--proxy-listen', '127.0.0.1:0', '--proxy-target', engine.url]);
    try {
      for (let i = 1; i <= 100; i++) {
        await send(`${agent.proxyBase}/v1/completions`, '{"model":"m","prompt":"a"}');
        const m = (await getText(`${agent.base}/metrics`)).body;
        assert.equal(sumOf(m, 'inference_requests_total', { route: '/v1/completions' }), i, `scrape after answer ${i}`);
      }
    } finally {
      await agent.stop();
      await engine.close();
    }
  });

  it('native with nothing to decide per request: every agent thread but the loop and its launcher runs under SCHED_IDLE', {
    skip: !built && 'the addon is not built',
  }, async () => {
    const engine = await startSimOpenAi({ models: ['m'], ttftMs: 1, itlMs: 1, tokens: 2 });
    const agent = await spawnAgent(['--proxy-listen', '127.0.0.1:0', '--proxy-target', engine.url]);
    try {
      // Work for the threads libuv starts when first asked: they are started by an idled thread.
      for (let i = 0; i < 3; i++) {
        const r = await post(`${agent.proxyBase}/v1/completions`, { model: 'm', prompt: 'a' });
        assert.equal(r.status, 200);
        await getText(`${agent.base}/metrics`);
      }
      const threads = threadPolicies(agent.child.pid!);
      const kept = threads.filter(([name]) => name === 'infertel-edge' || name === 'infertel-launch');
      assert.deepEqual(kept.map(([name, policy]) => [name, policy]).sort(), [
        ['infertel-edge', SCHED_OTHER],
        ['infertel-launch', SCHED_OTHER],
      ]);
      const rest = threads.filter((t) => !kept.includes(t));
      assert.ok(rest.length >= 5, `the main thread and V8's and libuv's workers: ${JSON.stringify(threads)}`);
      assert.deepEqual(
        rest.filter(([, policy]) => policy !== SCHED_IDLE),
        [],
        'every other thread is SCHED_IDLE',
      );
      assert.match(agent.output(), /"agent_threads":"idle"/);
    } finally {
      await agent.stop();
      await engine.close();
    }
  });

  it('an addon built before idleOtherThreads idles nothing and says why, rather than failing the start', () => {
    const options = {
      listen: '127.0.0.1:0',
      target: 'http://127.0.0.1:9',
      maxBodyBytes: 1,
      upstreamTimeoutMs: 1,
      traceTokenEvery: 1,
      maxConcurrent: 1,
      stallAfterMs: 1,
    };
    const deps = { metrics: { gapBoundsMs: () => [] } } as unknown as ProxyDeps;
    const proxy = new NativeProxy(options, deps, {} as GpuAddon);
    assert.deepEqual(proxy.idleOtherThreads(), { idled: 0, kept: 0, failed: 1, error: 'the addon predates idleOtherThreads (rebuild it)' });
  });

  for (const [what, config, env] of [
    ['proxy.agentThreads: normal', 'proxy:\n  agentThreads: normal\n', {}],
    ['tracing on (each request waits for JS)', '{}\n', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' }],
  ] as const)
    it(`native with ${what}: no thread is idled`, { skip: !built && 'the addon is not built' }, async () => {
      const engine = await startSimOpenAi({ models: ['m'], ttftMs: 1, itlMs: 1, tokens: 2 });
      const file = join(tempDir('infertel-threads-'), 'config.yaml');
      writeFileSync(file, config);
      const agent = await spawnAgent(['--config', file, '--proxy-listen', '127.0.0.1:0', '--proxy-target', engine.url], env);
      try {
        const r = await post(`${agent.proxyBase}/v1/completions`, { model: 'm', prompt: 'a' });
        assert.equal(r.status, 200);
        const threads = threadPolicies(agent.child.pid!);
        assert.ok(
          threads.some(([name]) => name === 'infertel-edge'),
          'on the native data path',
        );
        assert.deepEqual(
          threads.filter(([, policy]) => policy !== SCHED_OTHER),
          [],
        );
        assert.doesNotMatch(agent.output(), /"agent_threads"/);
      } finally {
        await agent.stop();
        await engine.close();
      }
    });
});
