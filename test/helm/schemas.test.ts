// Every manifest the chart renders, in every ci scenario, validated against the Kubernetes API
// schemas and the prometheus-operator and cert-manager CRD schemas (kubernetes-models), and the
// pod the webhook's patch produces validated as a Pod.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { mutatePod, type InjectionConfig } from '../../agent/webhook/mutate.js';
import { applyPatch } from '../webhook/patch.js';
import { CHART, findRenderer, manifests, type Manifest } from './render.js';

const renderer = findRenderer();
const scenarios = readdirSync(join(CHART, 'ci'))
  .filter((f) => f.endsWith('-values.yaml'))
  .sort();

/** The module that holds the model class of an apiVersion. */
function modelModule(apiVersion: string): string {
  if (apiVersion.startsWith('monitoring.coreos.com/')) return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  if (apiVersion.startsWith('cert-manager.io/')) return `@kubernetes-models/cert-manager/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

async function validate(m: Manifest): Promise<void> {
  const mod = (await import(modelModule(m.apiVersion))) as Record<string, new (o: unknown) => { validate(): void }>;
  const Model = mod[m.kind];
  assert.ok(Model, `no schema for ${m.apiVersion} ${m.kind}`);
  new Model(m).validate();
}

describe('chart manifests against the API and CRD schemas', { skip: !renderer && 'neither helm nor .tools/helmrender' }, () => {
  for (const f of scenarios) {
    it(`${f}: every rendered manifest validates`, async () => {
      const ms = manifests(renderer!.render([join(CHART, 'ci', f)]));
      assert.ok(ms.length >= 5);
      for (const m of ms) await assert.doesNotReject(validate(m), `${m.kind}/${m.metadata.name}`);
    });
  }

  it('a manifest that breaks the schema is caught (the check can fail)', async () => {
    const bad = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'x' },
      spec: { replicas: 'two', selector: {}, template: {} },
    } as unknown as Manifest;
    await assert.rejects(validate(bad));
    const badRule = {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PrometheusRule',
      metadata: { name: 'x' },
      spec: { groups: [{ rules: [{ alert: 5 }] }] },
    } as unknown as Manifest;
    await assert.rejects(validate(badRule));
  });

  it('the pod the webhook patch produces validates as a Pod (native sidecar and not)', async () => {
    const cfg: InjectionConfig = {
      image: 'ghcr.io/infertel/infertel:0.1.0',
      imagePullPolicy: 'IfNotPresent',
      port: 9400,
      upstream: 'http://127.0.0.1:8000/metrics',
      nativeSidecar: true,
      resources: { requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '256Mi' } },
      env: [{ name: 'HF_TOKEN', valueFrom: { secretKeyRef: { name: 'hf', key: 'token' } } }],
      configMap: 'infertel-agent',
      scrapeAnnotations: true,
    };
    for (const nativeSidecar of [true, false]) {
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'vllm-0', annotations: { 'infertel.io/inject': 'true' } },
        spec: { containers: [{ name: 'vllm', image: 'vllm/vllm-openai' }] },
      };
      const r = mutatePod(pod, 'ml', { ...cfg, nativeSidecar });
      assert.equal(r.skipped, undefined);
      await validate(applyPatch(pod, r.patch) as unknown as Manifest);
    }
  });
});
