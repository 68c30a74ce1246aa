// The sidecar injection as a pure function: pod + config -> JSONPatch. No I/O here.

import { FLAVORS, FLAVOR_TABLE, isFlavor } from '../sources/flavor.js';

export const ANNOTATION = {
  inject: 'infertel.io/inject',
  status: 'infertel.io/status',
  upstream: 'infertel.io/upstream',
  flavor: 'infertel.io/flavor',
  model: 'infertel.io/model',
  port: 'infertel.io/port',
  resources: 'infertel.io/resources',
  nativeSidecar: 'infertel.io/native-sidecar',
  proxyPort: 'infertel.io/proxy-port',
} as const;
export const INJECTED_LABEL = 'infertel.io/injected';
export const CONTAINER_NAME = 'infertel';
export const REFUSED_NAMESPACES = ['kube-system', 'kube-public'];
/**
 * Node flags of a sidecar in proxy mode, in place of the image's (`--max-semi-space-size=2`, which
 * keeps a scrape-only agent small). Streams keep each request's objects alive for its whole
 * length, and a small young generation promotes them to the old one, where collecting them costs
 * more. 32 MiB against 8 MiB, at 200 streams in five A/B runs (both arrival patterns, both
 * orders): 10-15% less CPU per relayed chunk for about 45 MB more RSS, 152-160 MB in all
 * (README, Request-level mode).
 */
export const PROXY_NODE_OPTIONS = '--max-semi-space-size=32 --max-old-space-size=160';

export interface InjectionConfig {
  image: string;
  imagePullPolicy: string;
  /** Default agent port. */
  port: number;
  /** Default upstream when the pod names none. */
  upstream: string;
  /** Put the agent in initContainers with restartPolicy Always (Kubernetes >= 1.29). */
  nativeSidecar: boolean;
  resources: Record<string, unknown>;
  /** Extra environment for the agent: literal values, or references (valueFrom: secretKeyRef, …). */
  env: Array<{ name: string; value: string } | { name: string; valueFrom: Record<string, unknown> }>;
  /** ConfigMap with the agent's default config, mounted at /etc/infertel. */
  configMap: string | undefined;
  /** Add prometheus.io/* annotations for annotation-based scrape configs. */
  scrapeAnnotations: boolean;
}

export interface PatchOp {
  op: 'add' | 'replace';
  path: string;
  value: unknown;
}

export interface MutationResult {
  patch: PatchOp[];
  /** Why nothing was injected (undefined when injected). */
  skipped: string | undefined;
  warnings: string[];
}

type Json = Record<string, unknown>;
interface Container {
  name?: string;
  env?: Array<{ name: string; value?: string }>;
  [k: string]: unknown;
}
interface Pod {
  metadata?: { name?: string; generateName?: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> };
  spec?: { containers?: Container[]; initContainers?: Container[]; volumes?: Json[]; hostNetwork?: boolean };
}

/** JSON pointer escaping (RFC 6901): "~" -> "~0", "/" -> "~1". */
export function pointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

function skip(reason: string, warnings: string[] = []): MutationResult {
  return { patch: [], skipped: reason, warnings };
}

/** `infertel.io/upstream` may be a URL or a bare port of the engine in the same pod. */
export function upstreamUrl(value: string | undefined, fallback: string, metricsPath = '/metrics'): string | undefined {
  if (value === undefined || value === '') return fallback;
  if (/^\d{1,5}$/.test(value)) return `http://127.0.0.1:${value}${metricsPath}`;
  try {
    const u = new URL(value);
    return u.protocol === 'http:' || u.protocol === 'https:' ? value : undefined;
  } catch {
    return undefined;
  }
}

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringMap = (v: unknown) => isObject(v) && Object.values(v).every((x) => typeof x === 'string');
const optional = (v: unknown, check: (x: unknown) => boolean) => v === undefined || check(v);
const isContainerList = (v: unknown) =>
  Array.isArray(v) &&
  v.every(
    (c) =>
      isObject(c) &&
      optional(c.name, (n) => typeof n === 'string') &&
      optional(c.env, (e) => Array.isArray(e) && e.every((x) => isObject(x) && typeof x.name === 'string' && optional(x.value, (y) => typeof y === 'string'))),
  );

/**
 * Where a pod object differs from the shape mutatePod reads (the parts it reads only), or
 * undefined when it fits. The API server never sends such a pod, but anything that reaches the
 * Service can; it must get an answer, never a crash.
 */
export function podShapeProblem(pod: unknown): string | undefined {
  if (!isObject(pod)) return 'object';
  const m = pod.metadata;
  if (!optional(m, isObject)) return 'metadata';
  if (isObject(m)) {
    for (const k of ['name', 'generateName', 'namespace'] as const) if (!optional(m[k], (x) => typeof x === 'string')) return `metadata.${k}`;
    if (!optional(m.annotations, isStringMap)) return 'metadata.annotations';
    if (!optional(m.labels, isStringMap)) return 'metadata.labels';
  }
  const spec = pod.spec;
  if (!optional(spec, isObject)) return 'spec';
  if (isObject(spec)) {
    if (!optional(spec.containers, isContainerList)) return 'spec.containers';
    if (!optional(spec.initContainers, isContainerList)) return 'spec.initContainers';
    if (!optional(spec.volumes, (v) => Array.isArray(v) && v.every(isObject))) return 'spec.volumes';
    if (!optional(spec.hostNetwork, (v) => typeof v === 'boolean')) return 'spec.hostNetwork';
  }
  return undefined;
}

export function mutatePod(pod: Pod, namespace: string, cfg: InjectionConfig): MutationResult {
  const annotations = pod.metadata?.annotations ?? {};
  const warnings: string[] = [];
  if (annotations[ANNOTATION.inject] !== 'true') return skip(`annotation ${ANNOTATION.inject} is not "true"`);
  if (REFUSED_NAMESPACES.includes(namespace)) return skip(`namespace ${namespace} is never injected`);
  if (annotations[ANNOTATION.status] === 'injected') return skip('already injected');
  if (pod.spec?.hostNetwork) return skip("hostNetwork pods are not injected (the agent port would be the node's)");
  const containers = pod.spec?.containers ?? [];
  const inits = pod.spec?.initContainers ?? [];
  if ([...containers, ...inits].some((c) => c.name === CONTAINER_NAME)) return skip(`the pod already has a container named ${CONTAINER_NAME}`);
  if (containers.length === 0) return skip('the pod has no containers', ['infertel: pod has no containers; not injected']);

  let port = cfg.port;
  const portAnn = annotations[ANNOTATION.port];
  if (portAnn !== undefined) {
    const n = Number(portAnn);
    if (Number.isInteger(n) && n > 0 && n < 65536) port = n;
    else warnings.push(`infertel: ${ANNOTATION.port}="${portAnn}" is not a port; using ${cfg.port}`);
  }
  const flavorAnn = annotations[ANNOTATION.flavor];
  const flavor = flavorAnn !== undefined && isFlavor(flavorAnn) ? flavorAnn : undefined;
  if (flavorAnn !== undefined && !flavor && flavorAnn !== 'auto')
    warnings.push(`infertel: ${ANNOTATION.flavor}="${flavorAnn}" is unknown (${[...FLAVORS, 'auto'].join(', ')}); using auto`);
  // A bare port means the engine's own metrics path (trtllm-serve serves /prometheus/metrics).
  let upstream = upstreamUrl(annotations[ANNOTATION.upstream], cfg.upstream, flavor ? FLAVOR_TABLE[flavor].metricsPath : '/metrics');
  if (!upstream) {
    warnings.push(`infertel: ${ANNOTATION.upstream}="${annotations[ANNOTATION.upstream]}" is not a URL or port; using ${cfg.upstream}`);
    upstream = cfg.upstream;
  }
  const spec = flavor ? `${flavor}=${upstream}` : upstream;
  let resources = cfg.resources;
  const resourcesAnnotation = annotations[ANNOTATION.resources];
  if (resourcesAnnotation !== undefined) {
    try {
      const r = JSON.parse(resourcesAnnotation) as unknown;
      if (r && typeof r === 'object' && !Array.isArray(r)) resources = r as Record<string, unknown>;
      else throw new Error('not an object');
    } catch {
      warnings.push(`infertel: ${ANNOTATION.resources} is not a JSON object; using the defaults`);
    }
  }
  const nativeAnn = annotations[ANNOTATION.nativeSidecar];
  const native = nativeAnn === undefined ? cfg.nativeSidecar : nativeAnn === 'true';

  const env: InjectionConfig['env'] = [
    { name: 'INFERTEL_LISTEN', value: `0.0.0.0:${port}` },
    { name: 'INFERTEL_UPSTREAMS', value: spec },
  ];
  const model = annotations[ANNOTATION.model];
  if (model) env.push({ name: 'INFERTEL_MODEL', value: model });
  // Request-level mode: the proxy listens on its own port and forwards to the engine's origin
  // (the upstream's host and port). A Service's targetPort moves to this port (README).
  const proxyAnn = annotations[ANNOTATION.proxyPort];
  let proxyPort: number | undefined;
  if (proxyAnn !== undefined) {
    const n = Number(proxyAnn);
    if (!Number.isInteger(n) || n <= 0 || n >= 65536) warnings.push(`infertel: ${ANNOTATION.proxyPort}="${proxyAnn}" is not a port; proxy not enabled`);
    else if (n === port) warnings.push(`infertel: ${ANNOTATION.proxyPort}="${proxyAnn}" is the agent's own port; proxy not enabled`);
    else if (n === Number(new URL(upstream).port || 80))
      warnings.push(`infertel: ${ANNOTATION.proxyPort}="${proxyAnn}" is the engine's port; proxy not enabled`);
    else proxyPort = n;
  }
  if (proxyPort !== undefined) {
    env.push({ name: 'INFERTEL_PROXY_LISTEN', value: `0.0.0.0:${proxyPort}` }, { name: 'INFERTEL_PROXY_TARGET', value: new URL(upstream).origin });
    // The chart's own env may set NODE_OPTIONS; then it is the operator's choice and stays.
    if (!cfg.env.some((e) => e.name === 'NODE_OPTIONS')) env.push({ name: 'NODE_OPTIONS', value: PROXY_NODE_OPTIONS });
  }
  // The sidecar must see the engine's GPUs, not all of the node's.
  const gpuEnv = containers.flatMap((c) => c.env ?? []).find((e) => e.name === 'NVIDIA_VISIBLE_DEVICES' && e.value !== undefined);
  if (gpuEnv) env.push({ name: 'NVIDIA_VISIBLE_DEVICES', value: gpuEnv.value! });
  if (cfg.configMap) env.push({ name: 'INFERTEL_CONFIG', value: '/etc/infertel/config.yaml' });
  env.push(...cfg.env);

  const probe = (path: string, period: number) => ({
    httpGet: { path, port: 'infertel-metrics' },
    periodSeconds: period,
    timeoutSeconds: 2,
    failureThreshold: 3,
  });
  const volumeMounts: Json[] = [{ name: 'infertel-tmp', mountPath: '/tmp' }];
  if (cfg.configMap) volumeMounts.push({ name: 'infertel-config', mountPath: '/etc/infertel', readOnly: true });
  const container: Json = {
    name: CONTAINER_NAME,
    image: cfg.image,
    imagePullPolicy: cfg.imagePullPolicy,
    args: ['run'],
    env,
    ports: [
      { name: 'infertel-metrics', containerPort: port, protocol: 'TCP' },
      ...(proxyPort !== undefined ? [{ name: 'infertel-proxy', containerPort: proxyPort, protocol: 'TCP' }] : []),
    ],
    // With the proxy on, /readyz also needs the proxy listening and the engine answering.
    readinessProbe: probe('/readyz', proxyPort !== undefined ? 5 : 10),
    livenessProbe: probe('/healthz', 20),
    resources,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts,
    ...(native ? { restartPolicy: 'Always' } : {}),
  };

  const patch: PatchOp[] = [];
  if (native) {
    if (pod.spec?.initContainers) patch.push({ op: 'add', path: '/spec/initContainers/0', value: container });
    else patch.push({ op: 'add', path: '/spec/initContainers', value: [container] });
  } else patch.push({ op: 'add', path: '/spec/containers/-', value: container });
  const volumes: Json[] = [{ name: 'infertel-tmp', emptyDir: { sizeLimit: '16Mi' } }];
  if (cfg.configMap) volumes.push({ name: 'infertel-config', configMap: { name: cfg.configMap } });
  if (pod.spec?.volumes) for (const v of volumes) patch.push({ op: 'add', path: '/spec/volumes/-', value: v });
  else patch.push({ op: 'add', path: '/spec/volumes', value: volumes });

  const newAnnotations: Record<string, string> = { [ANNOTATION.status]: 'injected' };
  if (cfg.scrapeAnnotations)
    Object.assign(newAnnotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' });
  if (pod.metadata?.annotations) {
    for (const [k, v] of Object.entries(newAnnotations))
      patch.push({ op: annotations[k] === undefined ? 'add' : 'replace', path: `/metadata/annotations/${pointer(k)}`, value: v });
  } else patch.push({ op: 'add', path: '/metadata/annotations', value: newAnnotations });
  if (pod.metadata?.labels)
    patch.push({
      op: pod.metadata.labels[INJECTED_LABEL] === undefined ? 'add' : 'replace',
      path: `/metadata/labels/${pointer(INJECTED_LABEL)}`,
      value: 'true',
    });
  else patch.push({ op: 'add', path: '/metadata/labels', value: { [INJECTED_LABEL]: 'true' } });
  return { patch, skipped: undefined, warnings };
}

export interface AdmissionReviewResponse {
  apiVersion: 'admission.k8s.io/v1';
  kind: 'AdmissionReview';
  response: { uid: string; allowed: true; patchType?: 'JSONPatch'; patch?: string; warnings?: string[] };
}

/**
 * Answer an AdmissionReview. Never blocks pod creation: anything malformed is allowed with a
 * warning (the chart also sets failurePolicy: Ignore).
 */
export function review(body: unknown, cfg: InjectionConfig): { response: AdmissionReviewResponse; result: MutationResult } {
  const req = (body as { request?: { uid?: unknown; namespace?: unknown; object?: unknown; kind?: { kind?: unknown } } } | null)?.request;
  const uid = typeof req?.uid === 'string' ? req.uid : '';
  const answer = (result: MutationResult): { response: AdmissionReviewResponse; result: MutationResult } => {
    const response: AdmissionReviewResponse['response'] = { uid, allowed: true };
    if (result.patch.length) {
      response.patchType = 'JSONPatch';
      response.patch = Buffer.from(JSON.stringify(result.patch)).toString('base64');
    }
    if (result.warnings.length) response.warnings = result.warnings;
    return { response: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }, result };
  };
  if (!req || !uid) return answer(skip('malformed AdmissionReview', ['infertel: malformed AdmissionReview; pod admitted without the sidecar']));
  if (req.kind?.kind !== undefined && req.kind.kind !== 'Pod') return answer(skip(`not a Pod (${String(req.kind.kind)})`));
  if (!req.object || typeof req.object !== 'object') return answer(skip('no pod in the review', ['infertel: AdmissionReview without a pod; not injected']));
  const problem = podShapeProblem(req.object);
  if (problem) return answer(skip(`malformed pod (${problem})`, [`infertel: pod ${problem} is malformed; admitted without the sidecar`]));
  const pod = req.object as Pod;
  const namespace = typeof req.namespace === 'string' ? req.namespace : (pod.metadata?.namespace ?? 'default');
  return answer(mutatePod(pod, namespace, cfg));
}

/** review(), with any failure of its own turned into an allowed answer (belt and braces for the server). */
export function safeReview(body: unknown, cfg: InjectionConfig): { response: AdmissionReviewResponse; result: MutationResult; error?: string } {
  try {
    return review(body, cfg);
  } catch (err) {
    const req = (body as { request?: { uid?: unknown } } | null)?.request;
    const uid = typeof req?.uid === 'string' ? req.uid : '';
    const result = skip('internal error', ['infertel: the webhook failed on this pod; admitted without the sidecar']);
    return {
      response: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: true, warnings: result.warnings } },
      result,
      error: (err as Error).message,
    };
  }
}
