// Shutdown is real: the process ends by itself once its handles close (no forced exit on the
// normal path), a signal during start-up is handled, and a hung shutdown says so with status 1.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CLI, freePort, REPO_ROOT, sleep, spawnAgent, startServer } from '../helpers.js';

function exitOf(child: ReturnType<typeof spawn>): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, ms: Date.now() - t0 })));
}

describe('e2e: shutdown', () => {
  it('SIGTERM with scrapes in flight: exit 0 within 1 s, by itself', async () => {
    // An upstream that never answers keeps a scrape in flight at the moment of the signal.
    const hang = await startServer(() => {});
    const agent = await spawnAgent(['--upstream', `tgi=${hang.url}/metrics`, '--model', 'm', '--interval', '1s']);
    try {
      await sleep(300);
      const r = await agent.stop('SIGTERM');
      assert.equal(r.code, 0, agent.output());
      assert.ok(r.ms < 1000, `${r.ms} ms`);
      assert.ok(!agent.output().includes('shutdown did not finish'), 'no forced exit');
    } finally {
      await hang.close();
    }
  });

  /** main.ts names the process right after it starts watching signals (Node itself catches SIGTERM from boot, so SigCgt cannot tell). */
  const catchesSigterm = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('infertel');
    } catch {
      return false;
    }
  };

  /** Polls for the moment the process starts catching SIGTERM. */
  async function untilCatching(pid: number): Promise<void> {
    const t0 = Date.now();
    while (!catchesSigterm(pid)) {
      assert.ok(Date.now() - t0 < 10_000, 'SIGTERM never caught');
      await sleep(2);
    }
  }

  it('SIGTERM as soon as the process catches it (modules still loading, nothing listening) ends it cleanly, status 0', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'run', '--listen', `127.0.0.1:${port}`], { stdio: 'ignore' });
    const exited = exitOf(child);
    // Node's own boot (before any JavaScript) keeps the default action; from the first line of
    // main.ts on, the signal is caught. Poll for that moment and signal at once.
    await untilCatching(child.pid!);
    const listening = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      () => true,
      () => false,
    );
    child.kill('SIGTERM');
    const r = await exited;
    assert.equal(r.signal, null, 'not ended by the signal');
    assert.equal(r.code, 0);
    assert.equal(listening, false, 'the signal came during start-up');
  });

  it('SIGTERM 400 ms into start-up ends the process cleanly (status 0, not killed by the signal)', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'run', '--listen', `127.0.0.1:${port}`], { stdio: 'ignore' });
    const exited = exitOf(child);
    // Counted from the moment main.ts catches signals: on a loaded machine Node's own boot alone
    // can take longer than 400 ms, and a signal then takes the default action, as for any process.
    await untilCatching(child.pid!);
    await sleep(400);
    child.kill('SIGTERM');
    const r = await exited;
    assert.equal(r.signal, null, 'not ended by the signal');
    assert.equal(r.code, 0);
  });

  it('a shutdown that hangs is cut at the deadline and exits 1, saying why', async () => {
    const script = `import { watchSignals, stopOnSignal } from ${JSON.stringify(join(REPO_ROOT, 'dist/agent/signals.js'))};
      const s = watchSignals(); setInterval(() => {}, 1000); process.stdout.write('ready\\n');
      await stopOnSignal(s, () => new Promise(() => {}));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    await new Promise<void>((r) => child.stdout!.once('data', () => r()));
    const exited = exitOf(child);
    child.kill('SIGTERM');
    const r = await exited;
    assert.equal(r.code, 1);
    assert.match(err, /shutdown did not finish within 5000 ms/);
  });
});
