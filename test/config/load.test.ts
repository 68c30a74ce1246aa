import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, parseUpstreamSpec, validateConfig } from '../../agent/config/load.js';
import { buildCatalogue } from '../../agent/catalogue/catalogue.js';
import { REPO_ROOT, runCli, startServer, tempDir } from '../helpers.js';

function tmpFile(text: string): string {
  const dir = tempDir('infertel-cfg-');
  const f = join(dir, 'c.yaml');
  writeFileSync(f, text);
  return f;
}

describe('config', () => {
  it('defaults', () => {
    const c = validateConfig({});
    assert.equal(c.listen, '0.0.0.0:9400');
    assert.equal(c.interval, 10_000);
    assert.equal(c.timeout, 5000);
    assert.equal(c.units, 'ms');
    assert.equal(c.limits.seriesPerMetric, 2000);
    assert.equal(c.limits.labelValueLength, 128);
    assert.equal(c.limits.staleAfterScrapes, 3);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.limits));
  });

  it('precedence is flag > env > file > default', () => {
    const file = tmpFile('listen: 1.1.1.1:1\nmodel: from-file\ninterval: 30s\nunits: seconds\nupstreams:\n  - url: http://file:8000/metrics\n');
    const env = { INFERTEL_LISTEN: '2.2.2.2:2', INFERTEL_MODEL: 'from-env', INFERTEL_UPSTREAMS: 'tgi=http://env:3000/metrics, http://env2:1/metrics' };
    const c = loadConfig({ file, env, flags: { listen: '3.3.3.3:3' } });
    assert.equal(c.listen, '3.3.3.3:3', 'flag beats env');
    assert.equal(c.model, 'from-env', 'env beats file');
    assert.equal(c.interval, 30_000, 'file beats default');
    assert.equal(c.units, 'seconds');
    assert.deepEqual(
      c.upstreams.map((u) => [u.flavor, u.url, u.name]),
      [
        ['tgi', 'http://env:3000/metrics', 'env:3000'],
        ['auto', 'http://env2:1/metrics', 'env2:1'],
      ],
    );
    const c2 = loadConfig({ file, env, flags: { upstreams: ['vllm=http://flag:8000/metrics'], interval: '2s' } });
    assert.deepEqual(
      c2.upstreams.map((u) => [u.flavor, u.intervalMs]),
      [['vllm', 2000]],
    );
    assert.equal(c2.upstreams[0]!.timeoutMs, 1800, 'timeout defaults below the interval');
  });

  it('OTEL_EXPORTER_OTLP_ENDPOINT sets the tracing endpoint', () => {
    assert.equal(loadConfig({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, flags: {} }).tracing.endpoint, 'http://collector:4318');
  });

  it('parses [FLAVOR=]URL', () => {
    assert.deepEqual(parseUpstreamSpec('tgi=http://x/metrics'), { flavor: 'tgi', url: 'http://x/metrics' });
    assert.deepEqual(parseUpstreamSpec('http://x/metrics?a=b'), { url: 'http://x/metrics?a=b' });
  });

  it('lists every problem with its key path', () => {
    try {
      validateConfig({
        listen: 'nope',
        units: 'minutes',
        bogus: 1,
        interval: 'soon',
        upstreams: [{ url: 'ftp://x' }, { url: 'http://a/metrics', interval: '5s', timeout: '6s', flavour: 'vllm' }],
        limits: { seriesPerMetric: -1 },
      });
      assert.fail('should throw');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join('\n');
      for (const path of [
        'listen:',
        'units:',
        'bogus: unknown key',
        'interval:',
        'upstreams[0].url:',
        'upstreams[1].flavour: unknown key',
        'limits.seriesPerMetric:',
      ]) {
        assert.ok(text.includes(path), `missing ${path} in\n${text}`);
      }
    }
  });

  it('rejects a timeout not below the interval', () => {
    assert.throws(
      () => validateConfig({ upstreams: [{ url: 'http://a/metrics', interval: '5s', timeout: '6s' }] }),
      /upstreams\[0\]\.timeout: must be less than the interval/,
    );
  });

  it('the example config is valid', () => {
    const r = runCli(['check-config', join(REPO_ROOT, 'config/agent.example.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /valid \(2 upstreams\)/);
  });

  it('check-config exits 0 on a valid file and 2 naming each bad key', () => {
    const ok = runCli(['check-config', tmpFile('upstreams:\n  - url: http://127.0.0.1:8000/metrics\n    flavor: vllm\n')]);
    assert.equal(ok.code, 0, ok.stderr);
    const bad = runCli([
      'check-config',
      tmpFile('listen: 9400\nupstreams:\n  - url: http://x/metrics\n    flavor: mistralrs\n    interval: 0s\nextra: true\n'),
    ]);
    assert.equal(bad.code, 2);
    for (const p of ['listen:', 'upstreams[0].flavor:', 'upstreams[0].interval:', 'extra: unknown key'])
      assert.ok(bad.stderr.includes(p), `${p} in ${bad.stderr}`);
    const missing = runCli(['check-config', '/nonexistent/infertel.yaml']);
    assert.equal(missing.code, 2);
  });

  it('run with bad config exits 2 before listening', () => {
    const r = runCli(['run', '--listen', 'not-an-address', '--upstream', 'http://127.0.0.1:1/metrics']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /listen:/);
  });

  it('bounds every duration: 1e308, "99999999h", 0 and 1ms intervals are refused with their key paths', () => {
    try {
      validateConfig({
        interval: 1e308,
        timeout: '99999999h',
        gpu: { interval: '0s', timeout: '1ms' },
        upstreams: [{ url: 'http://a/metrics', interval: '1ms' }],
      });
      assert.fail('should throw');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join('\n');
      for (const p of [
        'interval: must be between 100ms and 1h',
        'timeout: must be between 10ms and 10m',
        'gpu.interval: must be between',
        'upstreams[0].interval: must be between',
      ]) {
        assert.ok(text.includes(p), `${p} in\n${text}`);
      }
    }
  });

  it('lists run-time problems too, all at once and with key paths, even beside schema errors', () => {
    const err = (() => {
      try {
        validateConfig({
          listen: '0.0.0.0:99999',
          units: 'minutes',
          upstreams: [
            { url: 'http://a/metrics', interval: '5s', timeout: '6s', auth: { bearerTokenFile: '/nonexistent/token' }, tls: { caFile: '/nonexistent/ca.pem' } },
            { url: 'http://b/metrics', auth: { basic: { username: 'u', passwordFile: '/nonexistent/pw' } } },
          ],
          buckets: { inference_ttft_ms: [10, 5], no_such_metric: [1], queue_time_ms: 'no_such_layout' },
        });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    assert.ok(err instanceof ConfigError);
    const text = err.problems.join('\n');
    for (const p of [
      'listen: port must be 0-65535',
      'units:',
      'upstreams[0].timeout: must be less than the interval',
      'upstreams[0].auth.bearerTokenFile: cannot read /nonexistent/token (ENOENT)',
      'upstreams[0].tls.caFile: cannot read',
      'upstreams[1].auth.basic.passwordFile: cannot read',
      'buckets.inference_ttft_ms: bounds must be strictly ascending',
      'buckets.no_such_metric: not a canonical histogram',
      'buckets.queue_time_ms: no layout named no_such_layout',
    ]) {
      assert.ok(text.includes(p), `missing ${p} in\n${text}`);
    }
  });

  it('takes a catalogue layout by name: one line keeps requests of minutes apart', () => {
    const c = validateConfig({ buckets: { inference_request_duration_ms: 'request_long' } });
    const secs = buildCatalogue('seconds', c.buckets).byName.get('inference_request_duration_ms')!.bounds!;
    const ms = buildCatalogue('ms', c.buckets).byName.get('inference_request_duration_ms')!.bounds!;
    assert.equal(ms.at(-1), 409_600);
    assert.equal(secs.at(-1), 409.6);
    assert.equal(buildCatalogue('ms').byName.get('inference_request_duration_ms')!.bounds!.at(-1), 12_800);
  });

  const hosts: Array<[string, boolean]> = [
    ['0.0.0.0:9400', true],
    ['[::1]:9400', true],
    [':9400', true],
    ['localhost:1', true],
    ['999.1.1.1:80', false],
    ['-bad-:80', false],
    ['a..b:80', false],
    ['[zz]:80', false],
    ['host:0', true],
    ['host:65536', false],
  ];
  for (const [listen, ok] of hosts)
    it(`listen ${listen} is ${ok ? 'valid' : 'refused'}`, () => (ok ? assert.doesNotThrow : assert.throws)(() => validateConfig({ listen })));

  it('start-up reports a port in use as a configuration problem (exit 2, key path), not a stack trace', async () => {
    const busy = await startServer(() => {});
    try {
      const r = runCli(['run', '--listen', `127.0.0.1:${busy.port}`]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`listen: cannot listen on 127\\.0\\.0\\.1:${busy.port} \\(EADDRINUSE\\)`));
      assert.ok(!/\n\s+at /.test(r.stderr), 'no stack trace');
    } finally {
      await busy.close();
    }
  });

  it('unknown flags print usage and exit 2', () => {
    const r = runCli(['run', '--no-such-flag']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown option/);
    assert.match(r.stderr, /Usage: infertel run/);
  });
});
