#!/usr/bin/env node
// The entry point. It takes SIGTERM and SIGINT before anything else loads, so a signal during
// start-up ends the process through the same clean shutdown (exit 0), never by the signal.

import { watchSignals } from './signals.js';

const signals = watchSignals();
// `ps` shows the agent by name; it also marks, for the shutdown test, the moment signals are caught.
process.title = 'infertel';
const { main } = await import('./cli.js');
await main(process.argv, signals);
