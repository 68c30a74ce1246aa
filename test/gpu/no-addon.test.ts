// Without cargo the addon is not built: npm install still succeeds and the agent says why, once.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { eventually, getText, loggedListen, REPO_ROOT, sampleValue } from '../helpers.js';

describe('without the NVML addon', () => {
  it('scripts/build-native.mjs succeeds and explains itself when cargo is missing', () => {
    const r = spawnSync(process.execPath, ['scripts/build-native.mjs'], { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, PATH: '/nonexistent' } });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /cargo not found; the NVML addon is not built/);
  });

  it('the agent runs, reports source none and logs one line naming the missing addon', async () => {
    // A copy of the built agent with no native/ next to it (node_modules still resolve from the repo).
    mkdirSync(join(REPO_ROOT, '.test-tmp'), { recursive: true });
    const root = mkdtempSync(join(REPO_ROOT, '.test-tmp', 'noaddon-'));
    try {
      for (const p of ['dist/agent', 'config', 'ui', 'package.json']) cpSync(join(REPO_ROOT, p), join(root, p), { recursive: true });
      const child = spawn(process.execPath, [join(root, 'dist/agent/main.js'), 'run', '--listen', '127.0.0.1:0'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, PATH: '/usr/bin:/bin' },
      });
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (out += d));
      try {
        const listen = await eventually(async () => loggedListen(out, 'listening'), 10_000, 'the agent listening');
        const body = await eventually(async () => (await getText(`http://${listen}/metrics`)).body, 10_000, 'agent');
        assert.equal(sampleValue(body, 'gpu_telemetry_source', 'source="none"'), 1);
        const lines = out.split('\n').filter((l) => l.includes('"no GPU telemetry"'));
        assert.equal(lines.length, 1);
        assert.match(lines[0]!, /the GPU addon is not built \(npm install builds it when cargo is available\)/);
      } finally {
        child.kill('SIGTERM');
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
