// `npm run lint`: Biome over the TypeScript, then rustfmt and clippy over the addon. The Rust checks
// need cargo's rustfmt and clippy components; a machine without them says so and skips only those.
import { spawnSync } from 'node:child_process';

const run = (command, args, options = {}) => spawnSync(command, args, { stdio: 'inherit', ...options }).status === 0;
const has = (component) => spawnSync('cargo', [component, '--version'], { stdio: 'ignore' }).status === 0;

let failed = !run(process.execPath, ['node_modules/@biomejs/biome/bin/biome', 'check']);
for (const [component, args] of [
  ['fmt', ['fmt', '--check']],
  ['clippy', ['clippy', '--release', '--all-targets', '--quiet', '--', '-D', 'warnings']],
]) {
  if (!has(component)) {
    console.log(`lint: cargo ${component} is not installed; the addon's ${component} check is skipped.`);
    continue;
  }
  if (!run('cargo', args, { cwd: 'native' })) failed = true;
}
process.exit(failed ? 1 : 0);
