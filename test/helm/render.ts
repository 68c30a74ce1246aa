// Renders the chart with `helm template` when helm is on PATH, else with the offline helmrender
// (built into .tools/ by .ci/run from ../shared/tools/helmrender). Generated certificates are
// masked so golden files are stable.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../helpers.js';

export const CHART = join(REPO_ROOT, 'helm/infertel');
export const RELEASE = 'infertel';
export const NAMESPACE = 'infertel';

export interface Renderer {
  name: string;
  render(valueFiles: string[], chart?: string): string;
}

export function findRenderer(): Renderer | undefined {
  if (spawnSync('sh', ['-c', 'command -v helm'], { stdio: 'ignore' }).status === 0) {
    return {
      name: 'helm',
      render: (files, chart = CHART) =>
        run('helm', ['template', RELEASE, chart, '--namespace', NAMESPACE, '--kube-version', '1.29.0', ...files.flatMap((f) => ['-f', f])]),
    };
  }
  const local = process.env.HELMRENDER ?? join(REPO_ROOT, '.tools/helmrender');
  if (existsSync(local)) {
    return {
      name: 'helmrender',
      render: (files, chart = CHART) => run(local, [...files.flatMap((f) => ['-f', f]), '-release', RELEASE, '-namespace', NAMESPACE, chart]),
    };
  }
  return undefined;
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

const GENERATED = /^(\s*(?:tls\.crt|tls\.key|ca\.crt|caBundle):\s*)\S+$/gm;

export function mask(rendered: string): string {
  return rendered.replace(GENERATED, '$1<generated>');
}

export type Manifest = {
  kind: string;
  apiVersion: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: any;
};

export function manifests(rendered: string): Manifest[] {
  return parseAllDocuments(rendered)
    .map((d) => d.toJS() as Manifest)
    .filter((m) => m && typeof m === 'object' && m.kind);
}
