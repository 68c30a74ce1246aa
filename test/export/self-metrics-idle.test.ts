// The agent's own metrics must not keep an idle process busy: a sidecar sits idle most of its life.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../helpers.js';

// In a process of its own, so that no other test's timers wake the thread counted.
const IDLE_PROCESS = `
import { readFileSync } from 'node:fs';
import { SelfMetrics } from ${JSON.stringify(join(REPO_ROOT, 'dist/agent/export/self-metrics.js'))};
const metrics = new SelfMetrics('t', () => new Map(), () => ({}));
const runs = () => Number(readFileSync('/proc/self/task/' + process.pid + '/schedstat', 'utf8').trim().split(' ')[2]);
await new Promise((r) => setTimeout(r, 300));
const before = runs();
await new Promise((r) => setTimeout(r, 2000));
const woken = runs() - before;
console.log(JSON.stringify({ woken, exposition: await metrics.text.metrics() }));
`;

describe('self-metrics when idle', () => {
  it("the event-loop lag is still exported, and sampling it wakes the main thread well under prom-client's 100 times a second", (t) => {
    if (!existsSync('/proc/self/schedstat')) return t.skip('this kernel gives no schedstat to count runs by');
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', IDLE_PROCESS], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const { woken, exposition } = JSON.parse(child.stdout) as { woken: number; exposition: string };
    assert.match(exposition, /^infertel_nodejs_eventloop_lag_p99_seconds \d/m);
    // Two registries sampled every 100 ms give about 20 runs a second at most; prom-client's 10 ms default gave about 100.
    assert.ok(woken < 2 * 30, `the idle main thread ran ${woken} times in 2 s`);
  });
});
