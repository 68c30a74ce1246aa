import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { mutatePod, review, safeReview, upstreamUrl, type InjectionConfig, type PatchOp } from '../../agent/webhook/mutate.js';
import { rng } from '../fuzz/corpus.js';
import { applyPatch } from './patch.js';
import { REPO_ROOT } from '../helpers.js';

const CFG: InjectionConfig = {
  image: 'ghcr.io/infertel/infertel:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  port: 9400,
  upstream: 'http://127.0.0.1:8000/metrics',
  nativeSidecar: true,
  resources: { requests: { cpu: '50m' } },
  env: [],
  configMap: 'infertel-agent',
  scrapeAnnotations: true,
};

const pod = (annotations: Record<string, string> | undefined, spec: Record<string, unknown> = {}) => ({
  metadata: { name: 'vllm-0', ...(annotations ? { annotations } : {}) },
  spec: { containers: [{ name: 'vllm', image: 'vllm/vllm-openai', env: [{ name: 'NVIDIA_VISIBLE_DEVICES', value: 'GPU-abc' }] }], ...spec },
});

interface Out {
  spec: { containers: Array<Record<string, any>>; initContainers?: Array<Record<string, any>>; volumes: Array<Record<string, any>> };
  metadata: { annotations: Record<string, string>; labels: Record<string, string> };
}
const sidecarOf = (o: Out) => [...(o.spec.initContainers ?? []), ...o.spec.containers].find((c) => c.name === 'infertel')!;
const envOf = (c: Record<string, any>) => Object.fromEntries((c.env as Array<{ name: string; value: string }>).map((e) => [e.name, e.value]));

describe('mutatePod: when to inject', () => {
  const cases: Array<[string, ReturnType<typeof pod>, string, RegExp | undefined]> = [
    ['no annotation: skipped', pod(undefined), 'default', /is not "true"/],
    ['annotation false: skipped', pod({ 'infertel.io/inject': 'false' }), 'default', /is not "true"/],
    ['kube-system is refused', pod({ 'infertel.io/inject': 'true' }), 'kube-system', /never injected/],
    ['kube-public is refused', pod({ 'infertel.io/inject': 'true' }), 'kube-public', /never injected/],
    ['already injected: idempotent', pod({ 'infertel.io/inject': 'true', 'infertel.io/status': 'injected' }), 'default', /already injected/],
    ['hostNetwork: skipped', pod({ 'infertel.io/inject': 'true' }, { hostNetwork: true }), 'default', /hostNetwork/],
    [
      'existing infertel container: skipped',
      { ...pod({ 'infertel.io/inject': 'true' }), spec: { containers: [{ name: 'infertel' }] } } as ReturnType<typeof pod>,
      'default',
      /already has a container/,
    ],
    ['opted in: injected', pod({ 'infertel.io/inject': 'true' }), 'ml', undefined],
  ];
  for (const [name, p, ns, skipped] of cases) {
    it(name, () => {
      const r = mutatePod(p, ns, CFG);
      if (skipped) {
        assert.match(r.skipped!, skipped);
        assert.deepEqual(r.patch, []);
      } else {
        assert.equal(r.skipped, undefined);
        assert.ok(r.patch.length > 0);
      }
    });
  }

  it('a second pass over the patched pod changes nothing', () => {
    const first = applyPatch(pod({ 'infertel.io/inject': 'true' }), mutatePod(pod({ 'infertel.io/inject': 'true' }), 'ml', CFG).patch);
    const second = mutatePod(first, 'ml', CFG);
    assert.deepEqual(second.patch, []);
    assert.equal(second.skipped, 'already injected');
  });
});

describe('mutatePod: the injected container', () => {
  it('native sidecar: first init container with restartPolicy Always, probes, hardened security context', () => {
    const out = applyPatch(pod({ 'infertel.io/inject': 'true' }), mutatePod(pod({ 'infertel.io/inject': 'true' }), 'ml', CFG).patch) as unknown as Out;
    const c = out.spec.initContainers![0]!;
    assert.equal(c.name, 'infertel');
    assert.equal(c.restartPolicy, 'Always');
    assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'infertel-metrics' });
    assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'infertel-metrics' });
    assert.equal(c.securityContext.runAsNonRoot, true);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(out.spec.containers.length, 1);
    assert.deepEqual(
      out.spec.volumes.map((v) => v.name),
      ['infertel-tmp', 'infertel-config'],
    );
    assert.equal(out.metadata.annotations['infertel.io/status'], 'injected');
    assert.equal(out.metadata.annotations['prometheus.io/port'], '9400');
    assert.equal(out.metadata.labels['infertel.io/injected'], 'true');
  });

  it('native-sidecar "false" makes it a regular container; existing init containers and volumes are kept', () => {
    const p = pod(
      { 'infertel.io/inject': 'true', 'infertel.io/native-sidecar': 'false' },
      { initContainers: [{ name: 'download' }], volumes: [{ name: 'models' }] },
    );
    const out = applyPatch(p, mutatePod(p, 'ml', CFG).patch) as unknown as Out;
    assert.equal(out.spec.containers[1]!.name, 'infertel');
    assert.equal(out.spec.containers[1]!.restartPolicy, undefined);
    assert.deepEqual(
      out.spec.initContainers!.map((c) => c.name),
      ['download'],
    );
    assert.deepEqual(
      out.spec.volumes.map((v) => v.name),
      ['models', 'infertel-tmp', 'infertel-config'],
    );
  });

  const envCases: Array<[string, Record<string, string>, Record<string, string>]> = [
    ['defaults', {}, { INFERTEL_LISTEN: '0.0.0.0:9400', INFERTEL_UPSTREAMS: 'http://127.0.0.1:8000/metrics', NVIDIA_VISIBLE_DEVICES: 'GPU-abc' }],
    [
      'upstream as a port, flavor, model, port',
      { 'infertel.io/upstream': '3000', 'infertel.io/flavor': 'tgi', 'infertel.io/model': 'mistral', 'infertel.io/port': '9500' },
      { INFERTEL_LISTEN: '0.0.0.0:9500', INFERTEL_UPSTREAMS: 'tgi=http://127.0.0.1:3000/metrics', INFERTEL_MODEL: 'mistral' },
    ],
    [
      'upstream as a URL',
      { 'infertel.io/upstream': 'http://127.0.0.1:8080/metrics', 'infertel.io/flavor': 'vllm' },
      { INFERTEL_UPSTREAMS: 'vllm=http://127.0.0.1:8080/metrics' },
    ],
    [
      'bad values fall back with warnings',
      { 'infertel.io/upstream': 'not a url', 'infertel.io/port': '99999' },
      { INFERTEL_LISTEN: '0.0.0.0:9400', INFERTEL_UPSTREAMS: 'http://127.0.0.1:8000/metrics' },
    ],
  ];
  for (const [name, ann, want] of envCases) {
    it(`environment from annotations: ${name}`, () => {
      const p = pod({ 'infertel.io/inject': 'true', ...ann });
      const r = mutatePod(p, 'ml', CFG);
      const env = envOf(sidecarOf(applyPatch(p, r.patch) as unknown as Out));
      for (const [k, v] of Object.entries(want)) assert.equal(env[k], v, k);
      if (name.startsWith('bad')) assert.equal(r.warnings.length, 2);
    });
  }

  it('resources from the annotation (JSON), else the defaults', () => {
    const p = pod({ 'infertel.io/inject': 'true', 'infertel.io/resources': '{"limits":{"memory":"128Mi"}}' });
    assert.deepEqual(sidecarOf(applyPatch(p, mutatePod(p, 'ml', CFG).patch) as unknown as Out).resources, { limits: { memory: '128Mi' } });
  });

  it('escapes "/" in annotation keys as ~1 when annotations already exist', () => {
    const r = mutatePod(pod({ 'infertel.io/inject': 'true' }), 'ml', CFG);
    assert.ok(r.patch.some((o) => o.path === '/metadata/annotations/infertel.io~1status'));
  });

  it('upstreamUrl', () => {
    assert.equal(upstreamUrl(undefined, 'd'), 'd');
    assert.equal(upstreamUrl('8000', 'd'), 'http://127.0.0.1:8000/metrics');
    assert.equal(upstreamUrl('ftp://x', 'd'), undefined);
  });
});

describe('review: AdmissionReview in, AdmissionReview out', () => {
  it('answers the uid with a base64 JSONPatch', () => {
    const { response } = review(
      {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: { uid: 'u1', kind: { kind: 'Pod' }, namespace: 'ml', object: pod({ 'infertel.io/inject': 'true' }) },
      },
      CFG,
    );
    assert.equal(response.response.uid, 'u1');
    assert.equal(response.response.allowed, true);
    assert.equal(response.response.patchType, 'JSONPatch');
    assert.ok(Array.isArray(JSON.parse(Buffer.from(response.response.patch!, 'base64').toString())));
  });
  const malformed: Array<[string, unknown]> = [
    ['null', null],
    ['no request', { kind: 'AdmissionReview' }],
    ['no uid', { request: { object: {} } }],
    ['a string', 'x'],
  ];
  for (const [name, body] of malformed) {
    it(`malformed (${name}): allowed with a warning, never an error`, () => {
      const { response } = review(body, CFG);
      assert.equal(response.response.allowed, true);
      assert.equal(response.response.patch, undefined);
      assert.ok(response.response.warnings?.length);
    });
  }
});

describe('review: hostile shapes never crash it', () => {
  const base = () => ({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: { uid: 'u1', kind: { kind: 'Pod' }, namespace: 'ml', object: pod({ 'infertel.io/inject': 'true' }) },
  });
  // The shapes that used to throw a TypeError (and kill the replica).
  const known: Array<[string, (r: any) => void]> = [
    ['spec.containers = {}', (r) => (r.request.object.spec.containers = {})],
    ['spec.containers = 5', (r) => (r.request.object.spec.containers = 5)],
    ['spec.containers = "abc"', (r) => (r.request.object.spec.containers = 'abc')],
    ['spec.containers = [null]', (r) => (r.request.object.spec.containers = [null])],
    ['spec.initContainers = {}', (r) => (r.request.object.spec.initContainers = {})],
    ['env = [null]', (r) => (r.request.object.spec.containers[0].env = [null])],
    ['annotations = 5', (r) => (r.request.object.metadata.annotations = 5)],
    ['annotations with an object value', (r) => (r.request.object.metadata.annotations['infertel.io/port'] = { x: 1 })],
    ['labels = []', (r) => (r.request.object.metadata.labels = [])],
    ['spec = "x"', (r) => (r.request.object.spec = 'x')],
  ];
  for (const [what, mutate] of known) {
    it(`${what}: allowed, with a warning, no patch`, () => {
      const body = base();
      mutate(body);
      const { response } = review(body, CFG);
      assert.equal(response.response.allowed, true);
      assert.equal(response.response.uid, 'u1');
      assert.equal(response.response.patch, undefined);
      assert.ok(
        response.response.warnings?.some((w) => w.includes('malformed')),
        JSON.stringify(response.response.warnings),
      );
    });
  }

  it('20,000 random JSON shapes grafted anywhere into a review: always an allowed answer, patches that apply', () => {
    const r = rng(42);
    const leaves = [
      null,
      0,
      5,
      -1,
      1e308,
      '',
      'abc',
      'true',
      true,
      false,
      [],
      [null],
      [5],
      {},
      { name: 5 },
      { name: 'x', env: {} },
      [{}],
      [{ name: null }],
      [[]],
    ];
    const randomValue = (depth: number): unknown => {
      const k = r();
      if (depth > 2 || k < 0.6) return structuredClone(leaves[Math.floor(r() * leaves.length)]);
      if (k < 0.8) return Array.from({ length: Math.floor(r() * 3) }, () => randomValue(depth + 1));
      return Object.fromEntries(
        Array.from({ length: Math.floor(r() * 3) }, (_, i) => [
          ['name', 'env', 'value', 'containers', 'annotations', String(i)][Math.floor(r() * 6)]!,
          randomValue(depth + 1),
        ]),
      );
    };
    /** Every path to an object property or array element in a document. */
    const paths = (v: unknown, at: Array<string | number> = []): Array<Array<string | number>> => {
      if (!v || typeof v !== 'object') return [];
      const keys: Array<string | number> = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v);
      return keys.flatMap((k) => [[...at, k], ...paths((v as any)[k], [...at, k])]);
    };
    let injected = 0;
    for (let n = 0; n < 20_000; n++) {
      const body: any = base();
      for (let g = 1 + Math.floor(r() * 3); g > 0; g--) {
        const all = paths(body);
        const path = all[Math.floor(r() * all.length)]!;
        let target = body;
        for (const p of path.slice(0, -1)) target = target[p];
        if (target && typeof target === 'object') target[path[path.length - 1]!] = randomValue(0);
      }
      const out = safeReview(body, CFG);
      assert.equal(out.error, undefined, `review threw on ${JSON.stringify(body)}: ${out.error}`);
      assert.equal(out.response.response.allowed, true);
      if (out.response.response.patch) {
        injected++;
        const patch = JSON.parse(Buffer.from(out.response.response.patch, 'base64').toString()) as PatchOp[];
        assert.doesNotThrow(() => applyPatch(body.request.object, patch), JSON.stringify(body));
      }
    }
    assert.ok(injected > 1000, `some grafts leave the pod injectable (${injected})`);
  });
});

describe('mutatePod: request-level mode (infertel.io/proxy-port)', () => {
  const inject = (extra: Record<string, string>) => {
    const p = pod({ 'infertel.io/inject': 'true', ...extra });
    const r = mutatePod(p, 'ml', CFG);
    return { r, out: applyPatch(p, r.patch) as unknown as Out };
  };

  it('turns the proxy on, forwarding to the engine origin of the upstream, with a named port', () => {
    const { r, out } = inject({ 'infertel.io/proxy-port': '8001', 'infertel.io/upstream': '8000', 'infertel.io/flavor': 'vllm' });
    assert.deepEqual(r.warnings, []);
    const c = sidecarOf(out);
    const env = envOf(c);
    assert.equal(env.INFERTEL_PROXY_LISTEN, '0.0.0.0:8001');
    assert.equal(env.INFERTEL_PROXY_TARGET, 'http://127.0.0.1:8000');
    assert.equal(env.NODE_OPTIONS, '--max-semi-space-size=32 --max-old-space-size=160', 'the proxy-mode heap flags');
    assert.deepEqual(
      c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]),
      [
        ['infertel-metrics', 9400],
        ['infertel-proxy', 8001],
      ],
    );
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  });

  it("the README's CPU sizing example gives a proxy-mode sidecar that CPU request, with the memory it restates", () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const block = /```yaml\nmetadata:\n {2}annotations:\n((?: {4}infertel\.io\/[\w-]+: .+\n)+)```/.exec(
      readme.slice(readme.indexOf('is sized for scraping')),
    )?.[1];
    assert.ok(block, 'the annotations example under the CPU sizing paragraph');
    const annotations = Object.fromEntries(
      block
        .trim()
        .split('\n')
        .map((l) => /^\s*([\w./-]+): (?:"([^"]*)"|'([^']*)')$/.exec(l)!)
        .map((m) => [m[1]!, m[2] ?? m[3]!]),
    );
    const { r, out } = inject(annotations);
    assert.deepEqual(r.warnings, []);
    const c = sidecarOf(out);
    assert.equal(envOf(c).INFERTEL_PROXY_LISTEN, '0.0.0.0:8001');
    assert.deepEqual(c.resources, { requests: { cpu: '250m', memory: '160Mi' }, limits: { memory: '448Mi' } });
  });

  it('a trtllm upstream port proxies to the engine origin, not its metrics path', () => {
    const { out } = inject({ 'infertel.io/proxy-port': '8001', 'infertel.io/upstream': '8000', 'infertel.io/flavor': 'trtllm' });
    const env = envOf(sidecarOf(out));
    assert.equal(env.INFERTEL_UPSTREAMS, 'trtllm=http://127.0.0.1:8000/prometheus/metrics');
    assert.equal(env.INFERTEL_PROXY_TARGET, 'http://127.0.0.1:8000');
  });

  const refused: Array<[string, RegExp]> = [
    ['abc', /is not a port/],
    ['70000', /is not a port/],
    ['9400', /the agent's own port/],
    ['8000', /the engine's port/],
  ];
  for (const [value, why] of refused) {
    it(`proxy-port "${value}" is refused with a warning, the rest still injected`, () => {
      const { r, out } = inject({ 'infertel.io/proxy-port': value });
      assert.match(r.warnings.join('\n'), why);
      const env = envOf(sidecarOf(out));
      assert.equal(env.INFERTEL_PROXY_LISTEN, undefined);
      assert.equal(sidecarOf(out).ports.length, 1);
    });
  }

  it("an operator's NODE_OPTIONS in the chart's env stays, once", () => {
    const p = pod({ 'infertel.io/inject': 'true', 'infertel.io/proxy-port': '8001' });
    const r = mutatePod(p, 'ml', { ...CFG, env: [{ name: 'NODE_OPTIONS', value: '--max-old-space-size=300' }] });
    const env = (sidecarOf(applyPatch(p, r.patch) as unknown as Out).env as Array<{ name: string; value: string }>).filter((e) => e.name === 'NODE_OPTIONS');
    assert.deepEqual(env, [{ name: 'NODE_OPTIONS', value: '--max-old-space-size=300' }]);
  });

  it('without the annotation the proxy stays off, and the image keeps its own Node flags', () => {
    const { out } = inject({});
    assert.equal(envOf(sidecarOf(out)).INFERTEL_PROXY_LISTEN, undefined);
    assert.equal(envOf(sidecarOf(out)).NODE_OPTIONS, undefined);
  });
});
