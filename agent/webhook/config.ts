// The webhook's config (the chart renders it into a ConfigMap): what the injected sidecar gets.

import { z } from 'zod';
import { ConfigError, formatIssues, readConfigFile } from '../config/load.js';
import { VERSION } from '../version.js';
import type { InjectionConfig } from './mutate.js';

export const webhookConfigSchema = z.strictObject({
  /** Agent image for the injected container. */
  image: z.string().min(1).default(`ghcr.io/infertel/infertel:${VERSION}`),
  imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).default('IfNotPresent'),
  /** Agent port in the pod (infertel.io/port overrides). */
  port: z.number().int().min(1).max(65535).default(9400),
  /** Engine metrics URL when the pod names none (infertel.io/upstream overrides). */
  upstream: z.url().default('http://127.0.0.1:8000/metrics'),
  /** Native sidecar (initContainers, restartPolicy Always; Kubernetes >= 1.29). */
  nativeSidecar: z.boolean().default(true),
  resources: z.record(z.string(), z.unknown()).default({ requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '448Mi' } }),
  /** Add prometheus.io/scrape, /port and /path annotations to injected pods. */
  scrapeAnnotations: z.boolean().default(true),
  /** Literal values, or references to Secrets and ConfigMaps (which then never land in a ConfigMap themselves). */
  env: z
    .array(
      z.union([
        z.strictObject({ name: z.string().min(1), value: z.string() }),
        z.strictObject({ name: z.string().min(1), valueFrom: z.record(z.string(), z.unknown()) }),
      ]),
    )
    .default([]),
  /** ConfigMap holding the agent's default config.yaml, mounted at /etc/infertel. */
  configMap: z.string().min(1).optional(),
});

export function loadWebhookConfig(file: string | undefined): InjectionConfig {
  const raw = file ? readConfigFile(file) : {};
  const r = webhookConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(r.error.issues));
  return { ...r.data, configMap: r.data.configMap };
}
