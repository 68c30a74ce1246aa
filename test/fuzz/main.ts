// `npm run fuzz [cases] [seed]`: the CI fuzz property at a larger size (1,000,000 by default).
import { runFuzz } from './run.js';

const cases = Number(process.argv[2] ?? 1_000_000);
const seed = Number(process.argv[3] ?? Date.now() % 2 ** 31);
const started = performance.now();
const report = runFuzz(cases, seed, { promtool: true, python: true });
process.stdout.write(
  `fuzz: ${report.cases} cases, seed ${seed}, ${report.promtoolBatches} promtool batches, ${report.openmetricsChecked} OpenMetrics bodies, ${((performance.now() - started) / 1000).toFixed(0)} s\n`,
);
for (const f of report.failures.slice(0, 5)) process.stdout.write(`\n${f}\n`);
process.stdout.write(`${report.failures.length === 0 ? 'no failures' : `${report.failures.length} failures`}\n`);
process.exit(report.failures.length ? 1 : 0);
