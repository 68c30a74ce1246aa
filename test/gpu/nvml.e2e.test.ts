// The built CLI and the built addon against the fake libnvidia-ml.so.1 compiled from C.

import assert from 'node:assert/strict';
import { appendFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { addonBuilt, buildFakeNvmlLibrary, cargoAvailable, eventually, getText, REPO_ROOT, sampleValue, spawnAgent, tempDir } from '../helpers.js';

const skip = !addonBuilt() && 'the NVML addon is not built (no cargo)';

function gpuConfig(extra: Record<string, unknown> = {}): string {
  const f = join(tempDir('infertel-gpu-'), 'c.yaml');
  writeFileSync(f, JSON.stringify({ gpu: { interval: '200ms', timeout: '150ms', ...extra } }));
  return f;
}

async function metrics(base: string): Promise<string> {
  return (await getText(`${base}/metrics`)).body;
}

describe('GPU e2e: infertel run --nvml-library <fake>', { skip }, () => {
  it('values appear in /metrics and in the JSON summary', async () => {
    const lib = buildFakeNvmlLibrary();
    const agent = await spawnAgent(['--config', gpuConfig(), '--nvml-library', lib], {
      FAKE_NVML_DEVICES: '2',
      FAKE_NVML_UTIL: '55',
      FAKE_NVML_POWER_MW: '123456',
      FAKE_NVML_MINOR_BASE: '4',
    });
    try {
      const body = await eventually(
        async () => {
          const b = await metrics(agent.base);
          return b.includes('gpu_mem_bytes') && b;
        },
        5000,
        'gpu series',
      );
      assert.equal(sampleValue(body, 'gpu_utilization_ratio', 'device="nvidia4"'), 0.55);
      assert.equal(sampleValue(body, 'gpu_utilization_ratio', 'device="nvidia5"'), 0.56);
      assert.equal(sampleValue(body, 'gpu_power_watts', 'device="nvidia4"'), 123.456);
      assert.equal(sampleValue(body, 'gpu_mem_total_bytes', 'device="nvidia4"'), 81559 * 1024 * 1024);
      assert.equal(sampleValue(body, 'gpu_sm_clock_hertz', 'device="nvidia4"'), 1.98e9);
      assert.equal(sampleValue(body, 'gpu_throttle_reasons', 'device="nvidia4"', 'reason="gpu_idle"'), 1);
      assert.equal(sampleValue(body, 'gpu_telemetry_source', 'source="nvml"'), 1);
      // Energy: the fake's millijoules (device 0 from 1e6 mJ, device 1 from 2e6, +10 J a read) in joules, counting up.
      const e4 = sampleValue(body, 'gpu_energy_joules_total', 'device="nvidia4"')!;
      const e5 = sampleValue(body, 'gpu_energy_joules_total', 'device="nvidia5"')!;
      assert.ok(e4 >= 1000 && (e4 - 1000) % 10 === 0, String(e4));
      assert.equal(e5 - e4, 1000);
      const later = await eventually(async () => {
        const b = await metrics(agent.base);
        return sampleValue(b, 'gpu_energy_joules_total', 'device="nvidia4"')! > e4 && b;
      }, 5000);
      assert.ok(sampleValue(later, 'infertel_upstream_up', 'upstream="gpu"') === 1, 'the GPU is a source of the loop');
      assert.match(
        body,
        /gpu_info\{device="nvidia4",uuid="GPU-00000000-fake-4000-8000-000000000000",name="NVIDIA H100 80GB HBM3",pci_bus_id="00000000:18:00.0",driver="550.54.15-fake",vendor="nvidia"\} 1/,
      );
      const s = JSON.parse((await getText(`${agent.base}/metrics?format=json`)).body);
      assert.equal(s.gpu.nvml_unavailable, false);
      assert.equal(s.gpu.devices.length, 2);
      assert.deepEqual(
        Object.keys(s.gpu.devices[0])
          .filter((k) => k.endsWith('_bytes') || k.endsWith('_percent') || k === 'temperature_c' || k === 'power_w')
          .sort(),
        ['memory_free_bytes', 'memory_total_bytes', 'memory_used_bytes', 'power_w', 'temperature_c', 'utilization_gpu_percent'],
      );
      assert.equal(s.gpu.devices[0].utilization_gpu_percent, 55);
      assert.ok(s.gpu.devices[0].energy_joules >= 1000, 'the energy counter in the JSON too');
    } finally {
      await agent.stop();
    }
  });

  it('a lost GPU is marked in error and the others are still reported; NOT_SUPPORTED fields are absent', async () => {
    const agent = await spawnAgent(['--config', gpuConfig(), '--nvml-library', buildFakeNvmlLibrary()], {
      FAKE_NVML_DEVICES: '3',
      FAKE_NVML_LOST: '1',
      FAKE_NVML_NOT_SUPPORTED: 'power,ecc,energy',
    });
    try {
      const body = await eventually(
        async () => {
          const b = await metrics(agent.base);
          return b.includes('gpu_mem_bytes') && b;
        },
        5000,
        'gpu series',
      );
      assert.ok(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia0"')! > 0);
      assert.ok(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia2"')! > 0);
      assert.equal(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia1"'), undefined);
      assert.ok(sampleValue(body, 'gpu_poll_errors_total', 'device="nvidia1"', 'code="NVML_ERROR_GPU_IS_LOST"')! >= 1);
      assert.ok(!/^gpu_power_watts/m.test(body), 'NOT_SUPPORTED power is absent, not 0');
      assert.ok(!/^gpu_ecc_errors_total/m.test(body));
      assert.ok(!/^gpu_energy_joules_total/m.test(body), 'no energy counter where NVML has none (before Volta)');
      const s = JSON.parse((await getText(`${agent.base}/metrics?format=json`)).body);
      assert.equal(s.gpu.devices[1].error, 'NVML_ERROR_GPU_IS_LOST');
      assert.equal(s.gpu.devices[0].power_w, null);
    } finally {
      await agent.stop();
    }
  });

  it('a hung NVML call leaves /metrics answering at its normal latency; the poll times out and values go stale', async () => {
    const dir = tempDir('infertel-hang-');
    const hangFile = join(dir, 'hang');
    const agent = await spawnAgent(['--config', gpuConfig(), '--nvml-library', buildFakeNvmlLibrary()], {
      FAKE_NVML_SLEEP_MS: '3000',
      FAKE_NVML_SLEEP_FILE: hangFile,
    });
    try {
      await eventually(async () => (await metrics(agent.base)).includes('gpu_mem_bytes'), 5000, 'gpu series');
      writeFileSync(hangFile, '');
      const body = await eventually(
        async () => {
          const b = await metrics(agent.base);
          return sampleValue(b, 'gpu_telemetry_stale') === 1 && b;
        },
        5000,
        'stale',
      );
      assert.ok(sampleValue(body, 'gpu_poll_errors_total', 'device="all"', 'code="timeout"')! >= 1);
      assert.ok(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia0"')! > 0, 'last values kept');
      const lat: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        await metrics(agent.base);
        lat.push(performance.now() - t0);
      }
      lat.sort((a, b) => a - b);
      assert.ok(lat[18]! < 100, `/metrics p95 ${lat[18]!.toFixed(1)} ms while NVML hangs`);
      rmSync(hangFile);
      await eventually(async () => sampleValue(await metrics(agent.base), 'gpu_telemetry_stale') === 0, 8000, 'recovery after the hang');
    } finally {
      await agent.stop();
    }
  });

  it('MIG: each MIG device is a device of its own under its parent, and NVIDIA_VISIBLE_DEVICES=MIG-<uuid> narrows to it', async () => {
    const all = await spawnAgent(['--config', gpuConfig(), '--nvml-library', buildFakeNvmlLibrary()], {
      FAKE_NVML_DEVICES: '2',
      FAKE_NVML_MIG: '0:2',
      // A process on GPU instance 1 / compute instance 0 (2048 MiB), and one outside MIG (512 MiB).
      FAKE_NVML_PROCS_0: `${process.pid}:2048:1:0,${process.pid}:512`,
    });
    try {
      const body = await eventually(
        async () => {
          const b = await metrics(all.base);
          return b.includes('gpu_mig_info') && b;
        },
        5000,
        'MIG series',
      );
      // Two instances on nvidia0 (GPU instances 1 and 2, compute instance 0, 1 slice, 9984 MiB: "1g.10gb").
      assert.match(body, /\ngpu_mig_info\{device="nvidia0-gi1-ci0",parent="nvidia0",gpu_i_id="1",gpu_i_profile="1g\.10gb",ci_id="0"\} 1\n/);
      assert.match(body, /\ngpu_mig_info\{device="nvidia0-gi2-ci0",parent="nvidia0",gpu_i_id="2",gpu_i_profile="1g\.10gb",ci_id="0"\} 1\n/);
      assert.ok(!body.includes('parent="nvidia1"'), 'nvidia1 is not in MIG mode');
      // The fake gives instance k (k + 1) GiB used of 9984 MiB.
      assert.equal(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia0-gi1-ci0"'), 1024 ** 3);
      assert.equal(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia0-gi2-ci0"'), 2 * 1024 ** 3);
      assert.equal(sampleValue(body, 'gpu_mem_total_bytes', 'device="nvidia0-gi2-ci0"'), 9984 * 1024 ** 2);
      assert.equal(sampleValue(body, 'gpu_utilization_ratio', 'device="nvidia0-gi1-ci0"'), undefined, 'NVML has no utilisation for a MIG device: absent');
      assert.match(body, /gpu_info\{device="nvidia0-gi1-ci0",uuid="MIG-00000000-fake-4000-8000-000000000000",name="NVIDIA H100 80GB HBM3 MIG 1g\.10gb"/);
      assert.ok(sampleValue(body, 'gpu_power_watts', 'device="nvidia0"')! > 0, 'the parent keeps its whole-GPU fields');
      assert.equal(sampleValue(body, 'gpu_power_watts', 'device="nvidia0-gi1-ci0"'), undefined);
      assert.equal(sampleValue(body, 'gpu_process_mem_bytes', 'device="nvidia0-gi1-ci0"'), 2048 * 1024 ** 2, 'the process counts on its MIG instance');
      assert.equal(sampleValue(body, 'gpu_process_mem_bytes', 'device="nvidia0"'), 512 * 1024 ** 2, 'and not on the parent');
      assert.equal(sampleValue(body, 'gpu_process_mem_bytes', 'device="nvidia0-gi2-ci0"'), undefined);
    } finally {
      await all.stop();
    }
    const one = await spawnAgent(['--config', gpuConfig(), '--nvml-library', buildFakeNvmlLibrary()], {
      FAKE_NVML_DEVICES: '2',
      FAKE_NVML_MIG: '0:2',
      NVIDIA_VISIBLE_DEVICES: 'MIG-00000000-fake-4000-8000-000000000001',
    });
    try {
      const body = await eventually(
        async () => {
          const b = await metrics(one.base);
          return b.includes('gpu_mig_info') && b;
        },
        5000,
        'MIG series',
      );
      assert.equal(sampleValue(body, 'gpu_mig_info', 'device="nvidia0-gi2-ci0"'), 1);
      assert.equal(sampleValue(body, 'gpu_mig_info', 'device="nvidia0-gi1-ci0"'), undefined, "the other instance is not the pod's");
      assert.ok(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia0"')! > 0, 'its parent is visible');
      assert.equal(sampleValue(body, 'gpu_mem_bytes', 'device="nvidia1"'), undefined);
    } finally {
      await one.stop();
    }
  });

  it('NVIDIA_VISIBLE_DEVICES limits the devices reported', async () => {
    const agent = await spawnAgent(['--config', gpuConfig(), '--nvml-library', buildFakeNvmlLibrary()], {
      FAKE_NVML_DEVICES: '4',
      NVIDIA_VISIBLE_DEVICES: '1,GPU-00000000-fake-4000-8000-000000000003',
    });
    try {
      const body = await eventually(
        async () => {
          const b = await metrics(agent.base);
          return b.includes('gpu_mem_bytes') && b;
        },
        5000,
        'gpu series',
      );
      const devices = [...body.matchAll(/^gpu_mem_bytes\{device="(\w+)"\}/gm)].map((m) => m[1]);
      assert.deepEqual(devices, ['nvidia1', 'nvidia3']);
    } finally {
      await agent.stop();
    }
  });

  it('critical XID events are counted per device and code', async () => {
    const xidFile = join(tempDir('infertel-xid-'), 'xids');
    writeFileSync(xidFile, '');
    const agent = await spawnAgent(['--config', gpuConfig(), '--nvml-library', buildFakeNvmlLibrary()], { FAKE_NVML_XID_FILE: xidFile });
    try {
      await eventually(async () => (await metrics(agent.base)).includes('gpu_mem_bytes'), 5000, 'gpu series');
      appendFileSync(xidFile, '0 79\n1 48\n0 79\n');
      const body = await eventually(
        async () => {
          const b = await metrics(agent.base);
          return sampleValue(b, 'gpu_xid_errors_total', 'device="nvidia0"', 'xid="79"') === 2 && b;
        },
        5000,
        'xids',
      );
      assert.equal(sampleValue(body, 'gpu_xid_errors_total', 'device="nvidia1"', 'xid="48"'), 1);
      appendFileSync(xidFile, '0 79\n');
      await eventually(async () => sampleValue(await metrics(agent.base), 'gpu_xid_errors_total', 'device="nvidia0"', 'xid="79"') === 3, 5000, 'counter grows');
    } finally {
      await agent.stop();
    }
  });

  it('cargo test: the pure Rust core, and dl.rs against the fake library', { skip: !cargoAvailable() && 'no cargo' }, () => {
    const r = spawnSync('cargo', ['test', '--offline', '--quiet'], {
      cwd: join(REPO_ROOT, 'native'),
      encoding: 'utf8',
      env: { ...process.env, INFERTEL_TEST_NVML_LIBRARY: buildFakeNvmlLibrary() },
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    // Every #[test] in native/src ran (the count is the sources', not a number copied from a run).
    const declared = readdirSync(join(REPO_ROOT, 'native/src'))
      .filter((f) => f.endsWith('.rs'))
      .reduce((n, f) => n + (readFileSync(join(REPO_ROOT, 'native/src', f), 'utf8').match(/#\[test\]/g) ?? []).length, 0);
    assert.match(r.stdout, new RegExp(`test result: ok\\. ${declared} passed`));
  });
});

describe('GPU e2e: fallbacks', () => {
  it('no NVML library and no nvidia-smi: source none, nvml_unavailable, no crash', async () => {
    const agent = await spawnAgent(['--config', gpuConfig(), '--nvml-library', '/nonexistent/libnvidia-ml.so.1'], { PATH: '/usr/bin:/bin' });
    try {
      const body = await eventually(
        async () => {
          const b = await metrics(agent.base);
          return b.includes('gpu_telemetry_source') && b;
        },
        5000,
        'source',
      );
      assert.equal(sampleValue(body, 'gpu_telemetry_source', 'source="none"'), 1);
      const s = JSON.parse((await getText(`${agent.base}/metrics?format=json`)).body);
      assert.equal(s.gpu.nvml_unavailable, true);
      assert.deepEqual(s.gpu.devices, []);
      assert.match(s.gpu.reason, /NVML: /);
      assert.match(agent.output(), /"no GPU telemetry"/);
      assert.equal((await getText(`${agent.base}/readyz`)).status, 200, 'readiness does not depend on GPUs');
    } finally {
      await agent.stop();
    }
  });

  it('NVML init failure falls back to nvidia-smi (through systeminformation) with nvml_unavailable per device', async () => {
    const fakeBin = join(REPO_ROOT, 'test/fixtures/fake-smi');
    const agent = await spawnAgent(
      ['--config', gpuConfig({ timeout: '10s', interval: '20s' }), '--nvml-library', skip ? '/nonexistent/lib.so' : buildFakeNvmlLibrary()],
      { PATH: `${fakeBin}:${process.env.PATH}`, FAKE_NVML_INIT_RET: '9', FAKE_SMI_DEVICES: '2' },
    );
    try {
      const body = await eventually(
        async () => {
          const b = await metrics(agent.base);
          return b.includes('gpu_mem_bytes') && b;
        },
        15_000,
        'nvidia-smi values',
      );
      assert.equal(sampleValue(body, 'gpu_telemetry_source', 'source="nvidia-smi"'), 1);
      assert.equal(sampleValue(body, 'gpu_mem_total_bytes', 'device="nvidia0"'), 81559 * 1024 * 1024);
      const s = JSON.parse((await getText(`${agent.base}/metrics?format=json`)).body);
      assert.equal(s.gpu.source, 'nvidia-smi');
      assert.equal(s.gpu.devices[0].nvml_unavailable, true);
      if (!skip) assert.match(s.gpu.reason, /NVML_ERROR_DRIVER_NOT_LOADED/);
      assert.match(agent.output(), /lower precision/);
    } finally {
      await agent.stop();
    }
  });
});
