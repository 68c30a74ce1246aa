// The built CLI and the built addon against fake libamd_smi.so libraries compiled from C against the
// header excerpts of two AMD SMI generations, the amd-smi CLI fallback against a fake amd-smi, and
// the addon's symbols checked against the header text.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gpuRecords, metricToDevice, quantity } from '../../agent/gpu/amd-smi-probe.js';
import { visibleDevices } from '../../agent/gpu/visible.js';
import { emptyDevice } from '../../agent/gpu/probe.js';
import { addonBuilt, buildFakeAmdSmiLibrary, cargoAvailable, eventually, getText, REPO_ROOT, sampleValue, spawnAgent, tempDir } from '../helpers.js';

const skip = !addonBuilt() && 'the GPU addon is not built (no cargo)';
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

function gpuConfig(extra: Record<string, unknown> = {}): string {
  const f = join(tempDir('infertel-amd-'), 'c.yaml');
  writeFileSync(f, JSON.stringify({ gpu: { interval: '200ms', timeout: '150ms', ...extra } }));
  return f;
}

async function gpuMetrics(base: string, want = 'gpu_mem_bytes'): Promise<string> {
  return eventually(
    async () => {
      const b = (await getText(`${base}/metrics`)).body;
      return b.includes(want) && b;
    },
    6000,
    want,
  );
}

/**
 * Joules the fake reports after `reads` reads of GPU `g`: (1 + g) * 65536000 + 655360 * reads
 * counts of 15.259 uJ held in a float, as the C code computes them, rounded to whole millijoules.
 */
function fakeEnergyJ(g: number, reads: number): number {
  const counts = (1 + g) * 65536000 + 655360 * reads;
  return Math.round((counts * Math.fround(15.259)) / 1000) / 1000;
}

describe('AMD SMI e2e: infertel run --amdsmi-library <fake>', { skip }, () => {
  for (const [generation, version, abi] of [
    ['24', '24.6.1', 'ROCm 6.x layouts'],
    ['26', '26.1.0', 'ROCm 7.x layouts'],
  ] as const) {
    it(`library ${version} (${abi}): every field in /metrics and the JSON summary, in the catalogue's units`, async () => {
      const lib = buildFakeAmdSmiLibrary(generation);
      const agent = await spawnAgent(['--config', gpuConfig({ source: 'amdsmi' }), '--amdsmi-library', lib], {
        FAKE_AMDSMI_DEVICES: '2',
        FAKE_AMDSMI_PROCS_0: `${process.pid}:${5 * GIB}`,
      });
      try {
        const body = await gpuMetrics(agent.base);
        const v = (name: string, ...labels: string[]) => sampleValue(body, name, ...labels);
        assert.equal(v('gpu_telemetry_source', 'source="amdsmi"'), 1);
        assert.equal(v('gpu_utilization_ratio', 'device="amd0"'), 0.4);
        assert.equal(v('gpu_utilization_ratio', 'device="amd1"'), 0.41);
        assert.equal(v('gpu_mem_bw_ratio', 'device="amd0"'), 0.2);
        assert.equal(v('gpu_mem_total_bytes', 'device="amd0"'), 196592 * MIB);
        assert.equal(v('gpu_mem_bytes', 'device="amd1"'), 65 * GIB);
        assert.equal(v('gpu_temperature_celsius', 'device="amd0"'), 45, 'degrees, not the millidegrees the 24.x header comment promises');
        assert.equal(v('gpu_hotspot_temperature_celsius', 'device="amd1"'), 61);
        // The power info layout differs by generation; the fake writes it through the real header.
        assert.equal(v('gpu_power_watts', 'device="amd0"'), 350);
        assert.equal(v('gpu_power_watts', 'device="amd1"'), 351);
        // The cap is in microwatts in both generations: 750000000 uW, 1 W less on amd1.
        assert.equal(v('gpu_power_limit_watts', 'device="amd0"'), 750);
        assert.equal(v('gpu_power_limit_watts', 'device="amd1"'), 749);
        assert.equal(v('gpu_sm_clock_hertz', 'device="amd0"'), 2.1e9);
        assert.equal(v('gpu_mem_clock_hertz', 'device="amd0"'), 1.3e9);
        assert.equal(v('gpu_ecc_errors_total', 'device="amd1"', 'type="corrected"'), 4);
        assert.equal(v('gpu_ecc_errors_total', 'device="amd1"', 'type="uncorrected"'), 1);
        assert.equal(v('gpu_throttle_reasons', 'device="amd0"'), undefined, 'AMD SMI has no NVML clock-event reasons: absent');
        const e0 = v('gpu_energy_joules_total', 'device="amd0"')!;
        const e1 = v('gpu_energy_joules_total', 'device="amd1"')!;
        const reads = Array.from({ length: 200 }, (_, k) => k);
        assert.ok(
          reads.some((k) => fakeEnergyJ(0, k) === e0),
          `amd0 energy ${e0} J is some read of the fake's counter`,
        );
        assert.ok(
          reads.some((k) => fakeEnergyJ(1, k) === e1),
          `amd1 energy ${e1} J is some read of the fake's counter`,
        );
        const comm = readFileSync(`/proc/${process.pid}/comm`, 'utf8').trim();
        assert.equal(v('gpu_process_mem_bytes', 'device="amd0"', `process="${comm}"`), 5 * GIB);
        assert.match(
          body,
          new RegExp(
            `gpu_info\\{device="amd0",uuid="10ff74a1-0000-1000-80e9-b9b3b3f9e2a0",name="AMD Instinct MI300X",pci_bus_id="0000:0c:00.0",driver="amdsmi-${version.replaceAll('.', '\\.')}",vendor="amd"\\} 1`,
          ),
        );
        const s = JSON.parse((await getText(`${agent.base}/metrics?format=json`)).body);
        assert.equal(s.gpu.source, 'amdsmi');
        assert.equal(s.gpu.nvml_unavailable, false, 'a vendor library is read');
        assert.equal(s.gpu.devices[1].vendor, 'amd');
        assert.equal(s.gpu.devices[1].device, 'amd1');
        assert.equal(s.gpu.devices[1].power_w, 351);
        assert.ok(s.gpu.devices[0].energy_joules >= fakeEnergyJ(0, 0));
        assert.match(agent.output(), /"GPU telemetry from AMD SMI"/);
      } finally {
        await agent.stop();
      }
    });
  }

  it('a lost GPU is marked and the others reported; NOT_SUPPORTED fields are absent, not 0', async () => {
    const agent = await spawnAgent(['--config', gpuConfig({ source: 'amdsmi' }), '--amdsmi-library', buildFakeAmdSmiLibrary('26')], {
      FAKE_AMDSMI_DEVICES: '3',
      FAKE_AMDSMI_LOST: '1',
      FAKE_AMDSMI_NOT_SUPPORTED: 'power,energy,hotspot',
    });
    try {
      const body = await gpuMetrics(agent.base);
      assert.equal(sampleValue(body, 'gpu_poll_errors_total', 'device="amd1"', 'code="AMDSMI_STATUS_NOT_FOUND"')! >= 1, true);
      assert.equal(sampleValue(body, 'gpu_mem_bytes', 'device="amd1"'), undefined);
      assert.equal(sampleValue(body, 'gpu_mem_bytes', 'device="amd2"'), 66 * GIB);
      assert.equal(sampleValue(body, 'gpu_temperature_celsius', 'device="amd0"'), 45);
      for (const absent of ['gpu_power_watts', 'gpu_energy_joules_total', 'gpu_hotspot_temperature_celsius'])
        assert.ok(!new RegExp(`^${absent}\\{`, 'm').test(body), `${absent} is absent`);
      const s = JSON.parse((await getText(`${agent.base}/metrics?format=json`)).body);
      assert.equal(s.gpu.devices[1].error, 'AMDSMI_STATUS_NOT_FOUND');
      assert.equal(s.gpu.devices[0].power_w, null);
    } finally {
      await agent.stop();
    }
  });

  it('a hung call is abandoned at gpu.timeout: counted, the values marked stale, /metrics still answers', async () => {
    const agent = await spawnAgent(['--config', gpuConfig({ source: 'amdsmi' }), '--amdsmi-library', buildFakeAmdSmiLibrary('26')], {
      FAKE_AMDSMI_HANG_MS: '1000',
    });
    try {
      const body = await gpuMetrics(agent.base, 'code="timeout"');
      assert.ok(sampleValue(body, 'gpu_poll_errors_total', 'device="all"', 'code="timeout"')! >= 1);
      assert.equal(sampleValue(body, 'gpu_telemetry_stale'), 1);
    } finally {
      await agent.stop();
    }
  });

  it('an init failure and an unknown library generation fall through the chain, with the reason logged once', async () => {
    for (const [env, why] of [
      [{ FAKE_AMDSMI_INIT_FAIL: '34' }, /AMD SMI: amdsmi_init failed: .*\(AMDSMI_STATUS_DRIVER_NOT_LOADED, return 34\)/],
      [{ FAKE_AMDSMI_VERSION: '27' }, /AMD SMI: AMD SMI library 27\.1\.0 is of generation 27, whose struct layouts this build does not know/],
    ] as const) {
      const agent = await spawnAgent(['--config', gpuConfig({ source: 'auto' }), '--amdsmi-library', buildFakeAmdSmiLibrary('26')], {
        ...env,
        INFERTEL_NVML_LIBRARY: '/nonexistent/libnvidia-ml.so.1',
        PATH: '/usr/bin:/bin',
      });
      try {
        const body = await gpuMetrics(agent.base, 'gpu_telemetry_source');
        assert.equal(sampleValue(body, 'gpu_telemetry_source', 'source="none"'), 1);
        const lines = agent
          .output()
          .split('\n')
          .filter((l) => l.includes('"no GPU telemetry"'));
        assert.equal(lines.length, 1);
        assert.match(lines[0]!, why);
      } finally {
        await agent.stop();
      }
    }
  });

  it('with an unknown generation and amd-smi on PATH, the CLI is used instead', async () => {
    const agent = await spawnAgent(['--config', gpuConfig({ source: 'auto' }), '--amdsmi-library', buildFakeAmdSmiLibrary('26')], {
      FAKE_AMDSMI_VERSION: '27',
      INFERTEL_NVML_LIBRARY: '/nonexistent/libnvidia-ml.so.1',
      PATH: `${join(REPO_ROOT, 'test/fixtures/fake-amd-smi')}:/usr/bin:/bin`,
    });
    try {
      const body = await gpuMetrics(agent.base);
      assert.equal(sampleValue(body, 'gpu_telemetry_source', 'source="amd-smi"'), 1);
      assert.equal(sampleValue(body, 'gpu_power_watts', 'device="amd1"'), 351);
      assert.equal(sampleValue(body, 'gpu_mem_total_bytes', 'device="amd0"'), 196592 * MIB);
      assert.equal(sampleValue(body, 'gpu_energy_joules_total', 'device="amd1"'), 2000.5);
      assert.match(
        body,
        /gpu_info\{device="amd0",uuid="10ff74a1-0000-1000-80e9-cli000000000",name="AMD Instinct MI300X",pci_bus_id="0000:0c:00.0",driver="",vendor="amd"\} 1/,
      );
      const line = agent
        .output()
        .split('\n')
        .find((l) => l.includes('GPU telemetry from amd-smi: lower precision, polled at most every 30 s'));
      assert.match(line ?? '', /generation 27/, 'the log line says why the library was not used');
    } finally {
      await agent.stop();
    }
  });

  it('ROCR_VISIBLE_DEVICES, then HIP_VISIBLE_DEVICES counting within what it left, limit the GPUs reported', async () => {
    const agent = await spawnAgent(['--config', gpuConfig({ source: 'amdsmi' }), '--amdsmi-library', buildFakeAmdSmiLibrary('24')], {
      FAKE_AMDSMI_DEVICES: '4',
      ROCR_VISIBLE_DEVICES: '1,12ff74a1-0000-1000-80e9-b9b3b3f9e2a2,3',
      HIP_VISIBLE_DEVICES: '0,2',
    });
    try {
      const body = await gpuMetrics(agent.base);
      assert.deepEqual(
        [...body.matchAll(/^gpu_mem_bytes\{device="(\w+)"\}/gm)].map((m) => m[1]),
        ['amd1', 'amd3'],
      );
    } finally {
      await agent.stop();
    }
  });

  it('cargo test: the AMD SMI binding against both fake generations', { skip: !cargoAvailable() && 'no cargo' }, () => {
    for (const generation of ['24', '26'] as const) {
      const r = spawnSync('cargo', ['test', '--offline', '--quiet', 'amd_dl', '--', '--nocapture'], {
        cwd: join(REPO_ROOT, 'native'),
        encoding: 'utf8',
        env: { ...process.env, INFERTEL_TEST_AMDSMI_LIBRARY: buildFakeAmdSmiLibrary(generation) },
      });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stderr + r.stdout, new RegExp(`AMD SMI ${generation}\\.\\d+\\.\\d+ \\(Rocm${generation === '24' ? 6 : 7}\\)`));
    }
  });
});

describe('AMD SMI: the addon against the header text', () => {
  const source = readFileSync(join(REPO_ROOT, 'native/src/amd_dl.rs'), 'utf8');
  const symbols = [...new Set([...source.matchAll(/"(amdsmi_[a-z_]+)"/g)].map((m) => m[1]!))];

  it('resolves only functions both header excerpts declare', () => {
    assert.ok(symbols.length >= 15, `found ${symbols.length} symbols`);
    for (const generation of ['24', '26']) {
      const header = readFileSync(join(REPO_ROOT, `test/fixtures/amdsmi/amdsmi-${generation}.h`), 'utf8');
      for (const s of symbols) assert.match(header, new RegExp(`^amdsmi_status_t ${s}\\(`, 'm'), `${s} declared in amdsmi-${generation}.h`);
    }
  });

  it("the addon's hand-written offsets are the C compiler's, for both generations", () => {
    // offsetof/sizeof from gcc against each excerpt, compared with native/src/amdsmi.rs's Layout.
    const rust = readFileSync(join(REPO_ROOT, 'native/src/amdsmi.rs'), 'utf8');
    for (const [generation, variant] of [
      ['24', 'Rocm6'],
      ['26', 'Rocm7'],
    ] as const) {
      const layout = new RegExp(`Abi::${variant} => \\{?\\s*Layout \\{([^}]*)\\}`).exec(rust)?.[1];
      assert.ok(layout, `Layout of ${variant}`);
      const want = Object.fromEntries([...layout.matchAll(/(\w+): (\d+)/g)].map((m) => [m[1], Number(m[2])]));
      const dir = tempDir('infertel-offsets-');
      const c = join(dir, 'offsets.c');
      writeFileSync(
        c,
        `#include "${join(REPO_ROOT, `test/fixtures/amdsmi/amdsmi-${generation}.h`)}"
#include <stdio.h>
#include <stddef.h>
int main(void) {
  printf("power_info_size %zu\\ncurrent_socket_power %zu\\naverage_socket_power %zu\\n", sizeof(amdsmi_power_info_t),
         offsetof(amdsmi_power_info_t, current_socket_power), offsetof(amdsmi_power_info_t, average_socket_power));
  printf("proc_info_size %zu\\nproc_pid %zu\\nproc_vram %zu\\n", sizeof(amdsmi_proc_info_t), offsetof(amdsmi_proc_info_t, pid),
         offsetof(amdsmi_proc_info_t, memory_usage.vram_mem));
  return 0;
}
`,
      );
      const exe = join(dir, 'offsets');
      const cc = spawnSync('gcc', ['-o', exe, c], { encoding: 'utf8' });
      assert.equal(cc.status, 0, cc.stderr);
      const got = Object.fromEntries(
        spawnSync(exe, { encoding: 'utf8' })
          .stdout.trim()
          .split('\n')
          .map((l) => l.split(' '))
          .map(([k, n]) => [k, Number(n)]),
      );
      assert.deepEqual(got, want, `amdsmi-${generation}.h`);
    }
  });
});

describe('amd-smi CLI output', () => {
  const metricRecord = {
    gpu: 1,
    usage: { gfx_activity: { value: 87, unit: '%' }, umc_activity: 'N/A' },
    power: { socket_power: { value: 612, unit: 'W' } },
    clock: { gfx_0: { clk: { value: 2100, unit: 'MHz' } }, mem_0: { clk: 'N/A' } },
    temperature: { edge: { value: 51, unit: 'C' }, hotspot: { value: 70, unit: 'C' } },
    mem_usage: { total_vram: { value: 196592, unit: 'MB' }, used_vram: { value: 1024, unit: 'MB' } },
    ecc: { total_correctable_count: 2, total_uncorrectable_count: 'N/A' },
    energy: { total_energy_consumption: { value: 1500, unit: 'mJ' } },
  };

  it('both output shapes give the same GPU records', () => {
    assert.deepEqual(gpuRecords([metricRecord]), [metricRecord]);
    assert.deepEqual(gpuRecords({ gpu_data: [metricRecord] }), [metricRecord]);
    assert.deepEqual(gpuRecords('oops'), []);
    assert.deepEqual(gpuRecords({ gpu_data: 'N/A' }), []);
  });

  it('quantities convert by their unit, and N/A is null, never 0', () => {
    const rows: Array<[unknown, string, number | null]> = [
      [{ value: 196592, unit: 'MB' }, 'B', 196592 * MIB],
      [{ value: 350, unit: 'W' }, 'W', 350],
      [{ value: 350000, unit: 'mW' }, 'W', 350],
      [{ value: 1500, unit: 'mJ' }, 'J', 1.5],
      ['139 W', 'W', 139],
      ['42 %', '%', 42],
      [17, 'C', 17],
      ['N/A', 'W', null],
      [{ value: 'N/A', unit: 'W' }, 'W', null],
      [{ value: 3, unit: 'furlongs' }, 'W', null],
    ];
    for (const [input, unit, want] of rows) assert.equal(quantity(input, unit), want, JSON.stringify(input));
  });

  it('a metric record becomes a device with the identity the list gave', () => {
    const d = metricToDevice(metricRecord, 1, { bdf: '0000:1c:00.0', uuid: 'u1', name: 'AMD Instinct MI300X' });
    assert.equal(d.index, 1);
    assert.equal(d.utilizationGpu, 87);
    assert.equal(d.utilizationMemory, null);
    assert.equal(d.powerW, 612);
    assert.equal(d.memClockMhz, null);
    assert.equal(d.memoryFreeBytes, (196592 - 1024) * MIB, 'free from total - used when amd-smi gives no free_vram');
    assert.equal(d.temperatureHotspotC, 70);
    assert.equal(d.eccCorrected, 2);
    assert.equal(d.eccUncorrected, null);
    assert.equal(d.energyJoules, 1.5);
    assert.equal(d.pciBusId, '0000:1c:00.0');
  });
});

describe('AMD visibility', () => {
  const devices = [0, 1, 2, 3].map((i) => ({ ...emptyDevice(i), uuid: `uuid-${i}` }));
  const rows: Array<[NodeJS.ProcessEnv, number[]]> = [
    [{}, [0, 1, 2, 3]],
    [{ ROCR_VISIBLE_DEVICES: '2,3' }, [2, 3]],
    [{ HIP_VISIBLE_DEVICES: '1' }, [1]],
    [{ ROCR_VISIBLE_DEVICES: '2,3', HIP_VISIBLE_DEVICES: '1' }, [3]],
    [{ ROCR_VISIBLE_DEVICES: 'uuid-0' }, [0]],
    [{ NVIDIA_VISIBLE_DEVICES: '0', CUDA_VISIBLE_DEVICES: '0' }, [0, 1, 2, 3]],
  ];
  for (const [env, want] of rows)
    it(`${JSON.stringify(env)} -> ${want.join(',')}`, () => {
      assert.deepEqual(
        visibleDevices(devices, env, 'amd').map((d) => d.index),
        want,
      );
    });
});
