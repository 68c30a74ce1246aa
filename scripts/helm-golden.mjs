// Rewrites test/golden/helm/<scenario>.yaml from helm/infertel/ci/<scenario>-values.yaml (after
// npm run build). Certificates generated at render time are masked.
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHART, findRenderer, mask } from '../dist/test/helm/render.js';

const renderer = findRenderer();
if (!renderer) {
  console.error('neither helm nor .tools/helmrender is available (bash ../shared/tools/helmrender/build.sh .tools/helmrender)');
  process.exit(1);
}
for (const f of readdirSync(join(CHART, 'ci'))
  .filter((x) => x.endsWith('-values.yaml'))
  .sort()) {
  const scenario = f.replace(/-values\.yaml$/, '');
  writeFileSync(join('test/golden/helm', `${scenario}.yaml`), mask(renderer.render([join(CHART, 'ci', f)])));
  console.log(`wrote test/golden/helm/${scenario}.yaml (${renderer.name})`);
}
