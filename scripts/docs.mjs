// Rewrites the README's metric table from config/taxonomy.yaml (run after npm run build).
import { readFileSync, writeFileSync } from 'node:fs';
import { withFreshTable } from '../dist/agent/catalogue/table.js';

const readme = readFileSync('README.md', 'utf8');
const next = withFreshTable(readme);
if (next !== readme) writeFileSync('README.md', next);
console.log(next === readme ? 'README metric table up to date' : 'README metric table rewritten');
