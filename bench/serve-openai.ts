// Child process for the benchmark: the streaming stand-in engine (OpenAI-compatible API).

import http from 'node:http';
import { openAiHandler, type SeenRequest } from '../agent/demo/sim-openai.js';

const seen: SeenRequest[] = [];
// Bench runs hold hundreds of streams open: keep the record of requests from growing.
setInterval(() => seen.splice(0), 1000).unref();
// Keep-alive past the bench's rounds: each path sits idle while the others run, and a shorter
// timeout (Node's 5 s) would make every round start with new connections to the engine.
const server = http.createServer({ keepAliveTimeout: 65_000 }, openAiHandler({ models: ['bench-model'], ttftMs: 20, itlMs: 20, tokens: 16 }, seen));
server.listen(0, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}\n`);
});
