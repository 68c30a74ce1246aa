// Child process for the benchmark: the streaming stand-in engine (OpenAI-compatible API).

import { startSimOpenAi } from '../agent/demo/sim-openai.js';

const sim = await startSimOpenAi({ models: ['bench-model'], ttftMs: 20, itlMs: 20, tokens: 16 });
// Bench runs hold hundreds of streams open: keep the record of requests from growing.
setInterval(() => sim.seen.splice(0), 1000).unref();
process.stdout.write(`${sim.url}\n`);
