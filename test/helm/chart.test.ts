import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Ajv from 'ajv';
import { parse as parseYaml } from 'yaml';
import { mutatePod } from '../../agent/webhook/mutate.js';
import { REPO_ROOT, tempDir } from '../helpers.js';
import { CHART, findRenderer, manifests, mask, type Manifest } from './render.js';

const renderer = findRenderer();
const skip = !renderer && 'neither helm nor the offline helmrender is available';
const scenarios = readdirSync(join(CHART, 'ci'))
  .filter((f) => f.endsWith('-values.yaml'))
  .sort();
const render = (file: string) => manifests(renderer!.render([join(CHART, 'ci', file)]));
const byKind = (ms: Manifest[], kind: string) => ms.filter((m) => m.kind === kind);

describe(`helm chart (${renderer?.name ?? 'no renderer'})`, { skip }, () => {
  it('has the four documented scenarios', () => {
    assert.deepEqual(scenarios, ['cert-manager-values.yaml', 'default-values.yaml', 'native-sidecar-off-values.yaml', 'podmonitor-only-values.yaml']);
  });

  for (const f of scenarios) {
    it(`${f}: renders and matches its golden output (scripts/helm-golden.mjs rewrites it)`, () => {
      const golden = readFileSync(join(REPO_ROOT, 'test/golden/helm', f.replace(/-values\.yaml$/, '.yaml')), 'utf8');
      assert.deepEqual(manifests(mask(renderer!.render([join(CHART, 'ci', f)]))), manifests(golden));
    });

    it(`${f}: names fit 63 characters and every object carries the app.kubernetes.io labels`, () => {
      for (const m of render(f)) {
        assert.ok(m.metadata.name.length <= 63, m.metadata.name);
        assert.equal(m.metadata.labels?.['app.kubernetes.io/name'], 'infertel', `${m.kind}/${m.metadata.name}`);
        assert.equal(m.metadata.labels?.['app.kubernetes.io/managed-by'], 'Helm');
      }
    });
  }

  it('default: webhook Deployment (2 replicas, PDB, probes, hardened), Service, ServiceAccount, MutatingWebhookConfiguration', () => {
    const ms = render('default-values.yaml');
    const [dep] = byKind(ms, 'Deployment');
    assert.equal(dep!.spec.replicas, 2);
    const sel = dep!.spec.selector.matchLabels;
    assert.deepEqual(dep!.spec.template.metadata.labels, sel, 'pod labels match the selector');
    const c = dep!.spec.template.spec.containers[0];
    assert.equal(c.args[0], 'inject-webhook');
    assert.equal(c.readinessProbe.httpGet.scheme, 'HTTPS');
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.equal(dep!.spec.template.spec.securityContext.runAsNonRoot, true);
    assert.equal(dep!.spec.template.spec.automountServiceAccountToken, false);
    const [pdb] = byKind(ms, 'PodDisruptionBudget');
    assert.deepEqual(pdb!.spec.selector.matchLabels, sel);
    const [svc] = byKind(ms, 'Service');
    assert.deepEqual(svc!.spec.selector, sel);
    assert.equal(byKind(ms, 'Role').length + byKind(ms, 'ClusterRole').length, 0, 'the webhook needs no API access');
    const [mwc] = byKind(ms, 'MutatingWebhookConfiguration');
    const w = mwc!.webhooks[0];
    assert.equal(w.failurePolicy, 'Ignore');
    assert.equal(w.sideEffects, 'None');
    assert.ok(w.timeoutSeconds <= 10);
    assert.deepEqual(w.admissionReviewVersions, ['v1']);
    assert.deepEqual(w.namespaceSelector, { matchLabels: { 'infertel.io/injection': 'enabled' } });
    assert.ok(w.objectSelector);
    assert.equal(w.clientConfig.service.name, svc!.metadata.name);
    assert.equal(w.clientConfig.service.path, '/mutate');
    assert.ok(w.clientConfig.caBundle, 'CA bundle from the generated CA');
    const [secret] = byKind(ms, 'Secret');
    assert.equal(secret!.type, 'kubernetes.io/tls');
    assert.equal(
      Buffer.from(secret!.data['ca.crt'], 'base64').toString(),
      Buffer.from(w.clientConfig.caBundle, 'base64').toString(),
      'caBundle is the CA that signed the serving cert',
    );
    const webhookCfg = parseYaml(byKind(ms, 'ConfigMap').find((m) => m.metadata.name.endsWith('-webhook'))!.data['webhook.yaml']);
    assert.equal(webhookCfg.nativeSidecar, true, 'native sidecar by default on Kubernetes >= 1.29');
  });

  it('cert-manager: a Certificate and Issuer, the CA injected by annotation, no generated Secret', () => {
    const ms = render('cert-manager-values.yaml');
    assert.equal(byKind(ms, 'Certificate').length, 1);
    assert.equal(byKind(ms, 'Issuer').length, 1);
    assert.equal(byKind(ms, 'Secret').length, 0);
    const [mwc] = byKind(ms, 'MutatingWebhookConfiguration');
    assert.match(mwc!.metadata.annotations!['cert-manager.io/inject-ca-from']!, /^infertel\//);
    assert.equal(mwc!.webhooks[0].clientConfig.caBundle, undefined);
  });

  it('podmonitor-only: no webhook objects; PodMonitor with sampleLimit, PrometheusRule, dashboards', () => {
    const ms = render('podmonitor-only-values.yaml');
    for (const kind of ['Deployment', 'MutatingWebhookConfiguration', 'Service', 'Secret']) assert.equal(byKind(ms, kind).length, 0, kind);
    const [pm] = byKind(ms, 'PodMonitor');
    assert.equal(pm!.spec.sampleLimit, 20000);
    assert.deepEqual(pm!.spec.selector, { matchLabels: { 'infertel.io/injected': 'true' } });
    assert.equal(pm!.spec.podMetricsEndpoints[0].port, 'infertel-metrics');
    assert.equal(pm!.metadata.labels!.release, 'kube-prometheus-stack');
    const [rule] = byKind(ms, 'PrometheusRule');
    const rules = parseYaml(readFileSync(join(REPO_ROOT, 'config/alerts/infertel.rules.yaml'), 'utf8'));
    assert.deepEqual(rule!.spec, rules, 'the PrometheusRule carries config/alerts/infertel.rules.yaml');
    const dashboards = byKind(ms, 'ConfigMap').filter((m) => m.metadata.labels?.grafana_dashboard === '1');
    assert.equal(dashboards.length, 4);
    for (const d of dashboards) JSON.parse(Object.values(d.data as Record<string, string>)[0]!);
  });

  it('native-sidecar-off: the webhook injects a regular container on the chosen port; no dashboards', () => {
    const ms = render('native-sidecar-off-values.yaml');
    const cfg = parseYaml(byKind(ms, 'ConfigMap').find((m) => m.metadata.name.endsWith('-webhook'))!.data['webhook.yaml']);
    assert.equal(cfg.nativeSidecar, false);
    assert.equal(cfg.port, 9464);
    assert.equal(byKind(ms, 'ConfigMap').filter((m) => m.metadata.labels?.grafana_dashboard).length, 0);
    assert.equal(byKind(ms, 'MutatingWebhookConfiguration')[0]!.webhooks[0].timeoutSeconds, 10);
  });

  for (const [what, dictArgs, annotations] of [
    ['', '', {}],
    [' (request-level mode)', ' "proxyPort" 8001', { 'infertel.io/proxy-port': '8001' }],
  ] as const) {
    it(`the infertel.sidecar named template renders the same container the webhook injects${what}`, () => {
      const dir = tempDir('infertel-chart-');
      cpSync(CHART, dir, { recursive: true });
      writeFileSync(
        join(dir, 'templates/example-vllm.yaml'),
        [
          'apiVersion: apps/v1',
          'kind: Deployment',
          'metadata:',
          '  name: vllm',
          '  labels:',
          '    {{- include "infertel.labels" . | nindent 4 }}',
          'spec:',
          '  selector: { matchLabels: { app: vllm } }',
          '  template:',
          '    metadata: { labels: { app: vllm } }',
          '    spec:',
          '      containers:',
          '        - name: vllm',
          '          image: vllm/vllm-openai:v0.11.0',
          `        {{- include "infertel.sidecar" (dict "root" $ "upstream" "vllm=http://127.0.0.1:8000/metrics"${dictArgs}) | nindent 8 }}`,
          '      volumes:',
          '        {{- include "infertel.sidecarVolumes" . | nindent 8 }}',
          '',
        ].join('\n'),
      );
      const ms = manifests(renderer!.render([join(CHART, 'ci/podmonitor-only-values.yaml')], dir));
      const dep = byKind(ms, 'Deployment').find((m) => m.metadata.name === 'vllm')!;
      const fromChart = dep.spec.template.spec.containers[1];
      const cfg = parseYaml(readFileSync(join(REPO_ROOT, 'helm/infertel/values.yaml'), 'utf8'));
      const injected = mutatePod(
        { metadata: { annotations: { 'infertel.io/inject': 'true', 'infertel.io/flavor': 'vllm', ...annotations } }, spec: { containers: [{ name: 'vllm' }] } },
        'ml',
        {
          image: fromChart.image,
          imagePullPolicy: 'IfNotPresent',
          port: cfg.sidecar.port,
          upstream: cfg.sidecar.upstream,
          nativeSidecar: false,
          resources: cfg.sidecar.resources,
          env: [],
          configMap: 'infertel-agent',
          scrapeAnnotations: true,
        },
      ).patch.find((o) => o.path === '/spec/containers/-')!.value as Record<string, any>;
      for (const k of ['name', 'image', 'args', 'ports', 'readinessProbe', 'livenessProbe', 'resources', 'securityContext', 'volumeMounts'])
        assert.deepEqual(fromChart[k], injected[k], k);
      assert.deepEqual(fromChart.env, injected.env);
      assert.deepEqual(
        dep.spec.template.spec.volumes.map((v: { name: string }) => v.name),
        ['infertel-tmp', 'infertel-config'],
      );
    });
  }
});

describe('chart values', () => {
  const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));
  const ajv = new Ajv.default({ allErrors: true, strict: false });
  const validate = ajv.compile(schema);

  it('values.yaml and every ci scenario validate against values.schema.json', () => {
    for (const f of ['values.yaml', ...scenarios.map((s) => `ci/${s}`)]) {
      const v = parseYaml(readFileSync(join(CHART, f), 'utf8')) ?? {};
      assert.ok(validate(v), `${f}: ${ajv.errorsText(validate.errors)}`);
    }
  });

  it('the schema rejects unknown keys and bad values', () => {
    for (const bad of [
      { nope: 1 },
      { webhook: { replica: 2 } },
      { webhook: { timeoutSeconds: 30 } },
      { sidecar: { nativeSidecar: 'maybe' } },
      { image: { pullPolicy: 'Sometimes' } },
    ]) {
      assert.equal(validate(bad), false, JSON.stringify(bad));
    }
  });

  it('every key has a description in the schema and a comment in values.yaml', () => {
    const walk = (node: any, path: string): void => {
      for (const [k, v] of Object.entries(node.properties ?? {}) as Array<[string, any]>) {
        assert.ok(v.description, `${path}${k} has no description`);
        walk(v, `${path}${k}.`);
      }
    };
    walk(schema, '');
    // Every line that sets a chart key (one the schema lists, not a key inside a free-form map
    // such as resources) has a "# --" comment right above it.
    const lines = readFileSync(join(CHART, 'values.yaml'), 'utf8').split('\n');
    const stack: Array<{ indent: number; node: any }> = [{ indent: -1, node: schema }];
    lines.forEach((line, i) => {
      const m = /^(\s*)([A-Za-z][\w]*):/.exec(line);
      if (!m) return;
      const indent = m[1]!.length;
      while (stack.length > 1 && stack[stack.length - 1]!.indent >= indent) stack.pop();
      const parent = stack[stack.length - 1]!.node;
      const node = parent?.properties?.[m[2]!];
      stack.push({ indent, node });
      if (!node) return;
      assert.match(lines[i - 1] ?? '', /^\s*# -- /, `values.yaml line ${i + 1} (${m[2]}) has no "# --" comment above it`);
    });
  });
});
