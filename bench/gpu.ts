// GPU poll costs: the addon over NVML next to the systeminformation (nvidia-smi) path, in one run.
// Default: the fake libnvidia-ml.so.1 (compiled here with gcc) and fake nvidia-smi/lspci on PATH.
// With INFERTEL_BENCH_NVML=<library> (e.g. libnvidia-ml.so.1 on a GPU machine): the real driver,
// and the real nvidia-smi when it is on PATH.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { type GpuAddon, loadAddon } from '../agent/gpu/addon.js';
import { AmdSmiCliProbe } from '../agent/gpu/amd-smi-probe.js';
import { buildFakeAmdSmiLibrary } from '../test/helpers.js';
import { pct } from './stats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export function buildFakeNvml(): string {
  const dir = mkdtempSync(join(tmpdir(), 'infertel-fakenvml-'));
  const out = join(dir, 'libnvidia-ml.so.1');
  execFileSync('gcc', ['-O2', '-shared', '-fPIC', '-Wl,-soname,libnvidia-ml.so.1', '-o', out, join(ROOT, 'test/fixtures/fake-nvml/fake_nvml.c')]);
  return out;
}

export async function benchGpu(say: (s?: string) => void): Promise<void> {
  const real = process.env.INFERTEL_BENCH_NVML;
  say(`### GPU poll (${real ? `real NVML: ${real}` : 'fake libnvidia-ml.so.1 with 8 devices; fake nvidia-smi and lspci on PATH'})`);
  say();
  const load = loadAddon();
  if (!load.ok) {
    say(`(skipped: ${load.reason})`);
    say();
    return;
  }
  const addon = load.addon;
  const lib = real ?? buildFakeNvml();
  /** Back-to-back polls: wall per poll and the Rust core's own time. */
  const measure = async (devices: number | undefined, polls: number) => {
    if (devices !== undefined) process.env.FAKE_NVML_DEVICES = String(devices);
    const n = addon.init(lib).deviceCount;
    for (let i = 0; i < 100; i++) await addon.poll();
    const wall: number[] = [];
    const core: number[] = [];
    for (let i = 0; i < polls; i++) {
      const t0 = performance.now();
      const r = await addon.poll();
      wall.push((performance.now() - t0) * 1000);
      core.push(r.elapsedUs);
    }
    return { n, wall, core };
  };
  const one = real ? undefined : await measure(1, 20_000);
  if (one) addon.shutdown();
  const many = await measure(real ? undefined : 8, real ? 500 : 20_000);
  const n = many.n;
  // At the agent's own cadence (a poll every few ms), how long can a poll hold the event loop?
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  for (let i = 0; i < 500; i++) {
    await addon.poll();
    await new Promise((r) => setTimeout(r, 2));
  }
  loop.disable();
  // Anchor: the same loop without polls (timer jitter and GC alone).
  const idle = monitorEventLoopDelay({ resolution: 1 });
  idle.enable();
  for (let i = 0; i < 500; i++) await new Promise((r) => setTimeout(r, 2));
  idle.disable();
  const addonP50 = pct(many.wall, 50);
  say('| path | devices | per poll p50 | per poll p99 | per device | max event-loop delay |');
  say('|---|---|---|---|---|---|');
  if (one) {
    const marginal = (addonP50 - pct(one.wall, 50)) / (n - 1);
    say(`| addon \`poll()\` (Promise, libuv worker), wall | 1 | ${pct(one.wall, 50).toFixed(1)} µs | ${pct(one.wall, 99).toFixed(1)} µs | | |`);
    say(
      `| addon \`poll()\` (Promise, libuv worker), wall | ${n} | ${addonP50.toFixed(1)} µs | ${pct(many.wall, 99).toFixed(1)} µs | ${marginal.toFixed(2)} µs marginal | ${(loop.max / 1e6).toFixed(2)} ms (poll every 2 ms; same loop without polls: ${(idle.max / 1e6).toFixed(2)} ms) |`,
    );
  } else {
    say(
      `| addon \`poll()\` (Promise, libuv worker), wall | ${n} | ${addonP50.toFixed(1)} µs | ${pct(many.wall, 99).toFixed(1)} µs | ${(addonP50 / n).toFixed(1)} µs | ${(loop.max / 1e6).toFixed(2)} ms (poll every 2 ms; same loop without polls: ${(idle.max / 1e6).toFixed(2)} ms) |`,
    );
  }
  say(
    `| of which NVML calls (Rust core) | ${n} | ${pct(many.core, 50).toFixed(1)} µs | ${pct(many.core, 99).toFixed(1)} µs | ${(pct(many.core, 50) / n).toFixed(2)} µs | |`,
  );

  const env = real ? process.env : { ...process.env, PATH: `${join(ROOT, 'test/fixtures/fake-smi')}:${process.env.PATH}`, FAKE_SMI_DEVICES: String(n) };
  if (spawnSync('sh', ['-c', 'command -v nvidia-smi'], { env }).status === 0) {
    const spawnMs: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      spawnSync(
        'nvidia-smi',
        ['--query-gpu=driver_version,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw', '--format=csv,noheader,nounits'],
        { env, encoding: 'utf8' },
      );
      spawnMs.push(performance.now() - t0);
    }
    say(
      `| anchor: one \`nvidia-smi --query-gpu\` spawn | ${n} | ${(pct(spawnMs, 50) * 1000).toFixed(0)} µs | ${(pct(spawnMs, 99) * 1000).toFixed(0)} µs | | (blocks if spawned synchronously) |`,
    );
    const si = (await import('systeminformation')).default;
    const saved = process.env.PATH;
    process.env.PATH = env.PATH;
    process.env.FAKE_SMI_DEVICES = String(n);
    const siMs: number[] = [];
    const siLoop = monitorEventLoopDelay({ resolution: 1 });
    siLoop.enable();
    let controllers = 0;
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      controllers = (await si.graphics()).controllers.length;
      siMs.push(performance.now() - t0);
    }
    siLoop.disable();
    process.env.PATH = saved;
    say(
      `| anchor: systeminformation \`graphics()\` (${controllers} controllers) | ${n} | ${(pct(siMs, 50) * 1000).toFixed(0)} µs | ${(pct(siMs, 99) * 1000).toFixed(0)} µs | | ${(siLoop.max / 1e6).toFixed(1)} ms (why the agent runs it in a worker) |`,
    );
    say();
    say(
      `systeminformation / addon per poll: **${((pct(siMs, 50) * 1000) / addonP50).toFixed(0)}×**; nvidia-smi spawn / addon: **${((pct(spawnMs, 50) * 1000) / addonP50).toFixed(0)}×**.`,
    );
  } else {
    say();
    say('(nvidia-smi not on PATH: the systeminformation anchor was not measured)');
  }
  addon.shutdown();
  say();
  if (!real) await benchAmd(say, addon, addonP50, pct(many.core, 50), n);
}

/**
 * The AMD SMI poll next to the NVML one just measured: the same addon, a fake libamd_smi.so of the
 * ROCm 7 generation with the same number of devices, the same back-to-back loop; and one amd-smi
 * CLI poll (the fake script) as the fallback's anchor.
 */
async function benchAmd(say: (s?: string) => void, addon: GpuAddon, nvmlWallP50: number, nvmlCoreP50: number, n: number): Promise<void> {
  say(`### AMD SMI poll (fake libamd_smi.so 26.1 with ${n} devices), next to the NVML poll above`);
  say();
  process.env.FAKE_AMDSMI_DEVICES = String(n);
  const info = addon.amdInit(buildFakeAmdSmiLibrary('26'));
  for (let i = 0; i < 100; i++) await addon.amdPoll();
  const wall: number[] = [];
  const core: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    const t0 = performance.now();
    const r = await addon.amdPoll();
    wall.push((performance.now() - t0) * 1000);
    core.push(r.elapsedUs);
  }
  addon.amdShutdown();
  const cli = new AmdSmiCliProbe(join(ROOT, 'test/fixtures/fake-amd-smi/amd-smi'));
  process.env.FAKE_AMD_SMI_DEVICES = String(n);
  await cli.poll();
  const cliMs: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    await cli.poll();
    cliMs.push(performance.now() - t0);
  }
  say('| path | devices | per poll p50 | per poll p99 | ratio to the NVML poll (p50) |');
  say('|---|---|---|---|---|');
  say(
    `| addon \`amdPoll()\`, wall | ${info.deviceCount} | ${pct(wall, 50).toFixed(1)} µs | ${pct(wall, 99).toFixed(1)} µs | **${(pct(wall, 50) / nvmlWallP50).toFixed(2)}×** |`,
  );
  say(
    `| of which AMD SMI calls (Rust core) | ${info.deviceCount} | ${pct(core, 50).toFixed(1)} µs | ${pct(core, 99).toFixed(1)} µs | ${(pct(core, 50) / nvmlCoreP50).toFixed(2)}× |`,
  );
  say(
    `| anchor: one \`amd-smi metric --json\` poll (fake script, child process) | ${info.deviceCount} | ${(pct(cliMs, 50) * 1000).toFixed(0)} µs | ${(pct(cliMs, 99) * 1000).toFixed(0)} µs | ${((pct(cliMs, 50) * 1000) / nvmlWallP50).toFixed(0)}× |`,
  );
  say();
}
