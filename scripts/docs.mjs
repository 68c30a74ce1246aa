// Rewrites the README's support matrix and metric table from the engine table and config/taxonomy.yaml (run after npm run build).
import { readFileSync, writeFileSync } from 'node:fs';
import { withFreshDocs } from '../dist/agent/catalogue/table.js';

const readme = readFileSync('README.md', 'utf8');
const next = withFreshDocs(readme);
if (next !== readme) writeFileSync('README.md', next);
console.log(next === readme ? 'README generated sections up to date' : 'README generated sections rewritten');
