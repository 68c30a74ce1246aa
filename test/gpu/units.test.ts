import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildCatalogue } from '../../agent/catalogue/catalogue.js';
import { SelfMetrics } from '../../agent/export/self-metrics.js';
import { OomTail } from '../../agent/gpu/oom.js';
import { attribute, MAX_PROCESS_LABELS } from '../../agent/gpu/processes.js';
import { emptyDevice, type GpuPoll, type GpuProbe } from '../../agent/gpu/probe.js';
import { controllersToDevices } from '../../agent/gpu/smi-probe.js';
import { createGpuTelemetry, GPU_VIEW, migProfile, reportedDevices } from '../../agent/gpu/telemetry.js';
import { SeriesLimiter } from '../../agent/guard/cardinality.js';
import { makeLabelPolicy, newGuardCounts } from '../../agent/guard/labels.js';
import { Normalizer } from '../../agent/normalize/normalizer.js';
import { visibleDevices } from '../../agent/gpu/visible.js';
import { createLogger } from '../../agent/logger.js';
import { fakeProbe, tempDir } from '../helpers.js';

const dev = (index: number, uuid: string) => ({ ...emptyDevice(index), uuid });
const four = [dev(0, 'GPU-aaaa'), dev(1, 'GPU-bbbb'), dev(2, 'GPU-cccc'), dev(3, 'GPU-dddd')];

describe('visible devices', () => {
  const cases: Array<[string, NodeJS.ProcessEnv, number[]]> = [
    ['nothing set: all', {}, [0, 1, 2, 3]],
    ['NVIDIA_VISIBLE_DEVICES=all', { NVIDIA_VISIBLE_DEVICES: 'all' }, [0, 1, 2, 3]],
    ['NVIDIA_VISIBLE_DEVICES=none', { NVIDIA_VISIBLE_DEVICES: 'none' }, []],
    ['NVIDIA_VISIBLE_DEVICES=void', { NVIDIA_VISIBLE_DEVICES: 'void' }, []],
    ['NVIDIA indexes', { NVIDIA_VISIBLE_DEVICES: '1,3' }, [1, 3]],
    ['NVIDIA UUIDs', { NVIDIA_VISIBLE_DEVICES: 'GPU-cccc,GPU-aaaa' }, [0, 2]],
    ['CUDA indexes count within what NVIDIA left', { NVIDIA_VISIBLE_DEVICES: '1,2,3', CUDA_VISIBLE_DEVICES: '0,2' }, [1, 3]],
    ['CUDA UUID', { CUDA_VISIBLE_DEVICES: 'GPU-dddd' }, [3]],
    ['CUDA empty string hides all? no: empty means all here', { CUDA_VISIBLE_DEVICES: '' }, [0, 1, 2, 3]],
  ];
  for (const [name, env, want] of cases)
    it(name, () =>
      assert.deepEqual(
        visibleDevices(four, env).map((d) => d.index),
        want,
      ),
    );
});

describe('process attribution', () => {
  it('labels memory by process name or configured role, never by PID', () => {
    const names: Record<number, string> = { 10: 'python3', 11: 'python3', 12: 'tritonserver' };
    const got = attribute(
      [
        { pid: 10, usedMemoryBytes: 100 },
        { pid: 11, usedMemoryBytes: 50 },
        { pid: 12, usedMemoryBytes: 7 },
        { pid: 13, usedMemoryBytes: null },
      ],
      { python3: 'engine' },
      (pid) => names[pid] ?? 'unknown',
    );
    assert.deepEqual(
      [...got],
      [
        ['engine', 150],
        ['tritonserver', 7],
      ],
    );
  });
  it('caps distinct labels', () => {
    const procs = Array.from({ length: 40 }, (_, i) => ({ pid: i, usedMemoryBytes: 1 }));
    const got = attribute(procs, {}, (pid) => `p${pid}`);
    assert.equal(got.size, MAX_PROCESS_LABELS + 1);
    assert.equal(got.get('other'), 40 - MAX_PROCESS_LABELS);
  });
});

describe('OOM log tail', () => {
  it('counts new CUDA OOM lines only, with the device when the line names it, across truncation', () => {
    const f = join(tempDir('infertel-oom-'), 'engine.log');
    writeFileSync(f, 'old: torch.OutOfMemoryError: CUDA out of memory. GPU 0\n');
    const t = new OomTail(f);
    assert.deepEqual(t.read(), [], 'history before start is not counted');
    appendFileSync(
      f,
      'INFO fine\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has a total capacity of 79 GiB\nRuntimeError: CUDA error: out of memory\npartial line with CUDA out of mem',
    );
    assert.deepEqual(t.read(), [1, undefined]);
    appendFileSync(f, 'ory\n');
    assert.deepEqual(t.read(), [undefined], 'a line split across reads counts once');
    writeFileSync(f, 'cudaErrorMemoryAllocation on GPU 2\n');
    assert.deepEqual(t.read(), [2], 'a rotated (smaller) file is read from the start');
  });
});

describe('nvidia-smi fallback mapping', () => {
  it('maps systeminformation controllers to devices, MiB to bytes, and skips other vendors', () => {
    const d = controllersToDevices([
      { vendor: 'Intel Corporation', model: 'UHD' },
      {
        vendor: 'NVIDIA Corporation',
        model: 'GH100',
        name: 'NVIDIA H100 80GB HBM3',
        memoryTotal: 81559,
        memoryUsed: 1024,
        utilizationGpu: 30,
        temperatureGpu: 40,
        powerDraw: 70.35,
        pciBus: '00000000:18:00.0',
      },
    ]);
    assert.equal(d.length, 1);
    assert.equal(d[0]!.memoryTotalBytes, 81559 * 1024 * 1024);
    assert.equal(d[0]!.powerW, 70.35);
    assert.equal(d[0]!.eccCorrected, null, 'what nvidia-smi does not give stays null');
  });
});

describe('nvidia-smi fallback prerequisites', () => {
  it('needs lspci as well as nvidia-smi (systeminformation reads GPUs only through lspci)', async () => {
    const { smiUnavailable } = await import('../../agent/gpu/smi-probe.js');
    const { symlinkSync } = await import('node:fs');
    const { REPO_ROOT } = await import('../helpers.js');
    const onlySmi = tempDir('infertel-smi-');
    symlinkSync(join(REPO_ROOT, 'test/fixtures/fake-smi/nvidia-smi'), join(onlySmi, 'nvidia-smi'));
    const saved = process.env.PATH;
    try {
      process.env.PATH = `${onlySmi}:/usr/bin:/bin`;
      assert.match(smiUnavailable() ?? '', /lspci/);
      process.env.PATH = `${join(REPO_ROOT, 'test/fixtures/fake-smi')}:/usr/bin:/bin`;
      assert.equal(smiUnavailable(), undefined);
      process.env.PATH = '/nonexistent';
      assert.match(smiUnavailable() ?? '', /nvidia-smi: not on PATH/);
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe('GPU telemetry with an injected probe', () => {
  function setup(probe: GpuProbe, timeoutMs = 50) {
    const catalogue = buildCatalogue('ms');
    const metrics = new SelfMetrics(
      'test',
      () => new Map(),
      () => ({}),
    );
    let changes = 0;
    const t = createGpuTelemetry({
      catalogue,
      metrics,
      onChange: () => changes++,
      log: createLogger('silent'),
      probe,
      env: {},
      config: { intervalMs: 1_000_000, timeoutMs, source: 'auto', processRoles: {}, simulate: 0 },
    });
    return { t, changes: () => changes };
  }
  const sample = (util: number): GpuPoll => ({
    devices: [{ ...emptyDevice(0), minor: 0, uuid: 'GPU-x', utilizationGpu: util, memoryTotalBytes: 10, memoryUsedBytes: 4 }],
    xids: [{ index: 0, xid: 79 }],
    elapsedUs: 1,
  });
  // The GPU's exposition through a real normaliser, as the agent ingests it after each poll.
  const normalizers = new WeakMap<object, Normalizer>();
  const value = (t: ReturnType<typeof setup>['t'], metric: string, ...labels: string[]) => {
    let n = normalizers.get(t);
    if (!n) {
      n = new Normalizer(buildCatalogue('ms'), {
        histograms: 'rebucket',
        staleAfterScrapes: 3,
        seriesPerMetric: 1000,
        labelPolicy: makeLabelPolicy([], 256, ['uuid', 'pci_bus_id']),
        limiter: new SeriesLimiter({ perMetric: 1000, total: 10_000 }),
        guardCounts: newGuardCounts(),
        invalid: {},
      });
      normalizers.set(t, n);
    }
    n.ingest(GPU_VIEW, t.exposition());
    return n
      .snapshot()
      .find((f) => f.metric.name === metric)
      ?.series.find((s) => labels.every((l) => s.labels.some(([k, v]) => `${k}=${v}` === l)))?.value;
  };

  it('a hung poll times out, is counted, keeps the last values marked stale, and is not started twice', async () => {
    let hang = false;
    let calls = 0;
    const probe = fakeProbe(() => {
      calls++;
      return hang ? new Promise(() => {}) : Promise.resolve(sample(42));
    });
    const { t } = setup(probe);
    await (t as unknown as { pollOnce(): Promise<void> }).pollOnce();
    assert.equal(value(t, 'gpu_utilization_ratio', 'device=nvidia0'), 0.42);
    hang = true;
    await (t as unknown as { pollOnce(): Promise<void> }).pollOnce();
    await (t as unknown as { pollOnce(): Promise<void> }).pollOnce();
    assert.equal(calls, 2, 'no second call while one hangs');
    assert.equal(value(t, 'gpu_utilization_ratio', 'device=nvidia0'), 0.42, 'last good value kept');
    assert.equal(value(t, 'gpu_telemetry_stale'), 1);
    assert.equal(value(t, 'gpu_poll_errors_total', 'device=all', 'code=timeout'), 1);
    assert.equal(value(t, 'gpu_poll_errors_total', 'device=all', 'code=in_flight'), 1);
    assert.equal(t.summary().devices[0]!.stale, true);
  });

  it('XIDs accumulate as a counter per device and code', async () => {
    const probe = fakeProbe(async () => sample(1));
    const { t } = setup(probe);
    for (let i = 0; i < 3; i++) await (t as unknown as { pollOnce(): Promise<void> }).pollOnce();
    assert.equal(value(t, 'gpu_xid_errors_total', 'device=nvidia0', 'xid=79'), 3);
  });

  it('energy stays a counter across a driver reload (the raw count restarting from 0), by the offset rule', async () => {
    const readings = [100, 150, 20, 30, 5];
    let i = 0;
    const probe = fakeProbe(async () => ({ devices: [{ ...emptyDevice(0), minor: 0, energyJoules: readings[i++]! }], xids: [], elapsedUs: 1 }));
    const { t } = setup(probe);
    const seen: number[] = [];
    for (let n = 0; n < readings.length; n++) {
      await (t as unknown as { pollOnce(): Promise<void> }).pollOnce();
      seen.push(value(t, 'gpu_energy_joules_total', 'device=nvidia0')!);
    }
    // 100, 150; reload: 150 + 20, 150 + 30; reload again: 150 + 30 + 5.
    assert.deepEqual(seen, [100, 150, 170, 180, 185]);
  });

  it('MIG profile names from slices and memory', () => {
    const rows: Array<[number | null, number | null, number | null, string]> = [
      [1, 1, 9984, '1g.10gb'],
      [3, 3, 40192, '3g.40gb'],
      // Memory is rounded up to whole GiB: NVIDIA's own name for this one is 7g.80gb (documented).
      [7, 7, 80896, '7g.79gb'],
      [2, 1, 19968, '1c.2g.20gb'],
      [null, null, null, 'unknown'],
    ];
    for (const [gi, ci, mb, want] of rows) assert.equal(migProfile({ gpuInstanceSlices: gi, computeInstanceSlices: ci, memorySizeMb: mb }), want);
  });

  it('reported devices: MIG devices after their parent, narrowed by MIG-<uuid> entries; a lost parent has none', () => {
    const mig = (gi: number) => ({
      gpuInstanceId: gi,
      computeInstanceId: 0,
      uuid: `MIG-${gi}`,
      gpuInstanceSlices: 1,
      computeInstanceSlices: 1,
      memorySizeMb: 9984,
      utilizationGpu: null,
      memoryTotalBytes: 1,
      memoryUsedBytes: 1,
      memoryFreeBytes: 0,
    });
    const parent = { ...emptyDevice(0), minor: 0, name: 'NVIDIA A100-SXM4-80GB', mig: [mig(1), mig(2)] };
    const lost = { ...emptyDevice(1), minor: 1, mig: [mig(3)], error: { code: 'NVML_ERROR_GPU_IS_LOST', nvmlReturn: 15, message: 'all' } };
    const labels = (env: NodeJS.ProcessEnv) => reportedDevices([parent, lost], env).map((r) => r.label);
    assert.deepEqual(labels({}), ['nvidia0', 'nvidia0-gi1-ci0', 'nvidia0-gi2-ci0', 'nvidia1']);
    assert.deepEqual(labels({ NVIDIA_VISIBLE_DEVICES: 'MIG-2' }), ['nvidia0', 'nvidia0-gi2-ci0', 'nvidia1']);
    assert.equal(reportedDevices([parent], {})[1]!.d.name, 'NVIDIA A100-SXM4-80GB MIG 1g.10gb');
    // A process on a MIG instance counts on that instance, not on the parent.
    const withProcs = {
      ...parent,
      processes: [
        { pid: 1, usedMemoryBytes: 100, gpuInstanceId: 1, computeInstanceId: 0 },
        { pid: 2, usedMemoryBytes: 50, gpuInstanceId: null, computeInstanceId: null },
      ],
    };
    const r = reportedDevices([withProcs], {});
    assert.deepEqual(
      r.map((x) => [x.label, (x.d.processes ?? []).map((p) => p.pid)]),
      [
        ['nvidia0', [2]],
        ['nvidia0-gi1-ci0', [1]],
        ['nvidia0-gi2-ci0', []],
      ],
    );
  });

  it('the JSON summary lists each MIG device after its parent, with its instance ids and profile', async () => {
    const mig = {
      gpuInstanceId: 2,
      computeInstanceId: 0,
      uuid: 'MIG-x',
      gpuInstanceSlices: 3,
      computeInstanceSlices: 3,
      memorySizeMb: 40192,
      utilizationGpu: null,
      memoryTotalBytes: 40192 * 1024 * 1024,
      memoryUsedBytes: 1024,
      memoryFreeBytes: 40192 * 1024 * 1024 - 1024,
    };
    const probe = fakeProbe(async () => ({ devices: [{ ...emptyDevice(0), minor: 3, name: 'NVIDIA A100-SXM4-80GB', mig: [mig] }], xids: [], elapsedUs: 1 }));
    const { t } = setup(probe);
    await (t as unknown as { pollOnce(): Promise<void> }).pollOnce();
    const devices = t.summary().devices;
    assert.deepEqual(
      devices.map((d) => [d.device, d.vendor, d.mig?.parent, d.mig?.gpu_instance_id, d.mig?.compute_instance_id, d.mig?.profile]),
      [
        ['nvidia3', 'nvidia', undefined, undefined, undefined, undefined],
        ['nvidia3-gi2-ci0', 'nvidia', 'nvidia3', '2', '0', '3g.40gb'],
      ],
    );
    assert.equal(devices[1]!.memory_total_bytes, 40192 * 1024 * 1024);
  });

  it("polls on the loop's long-lived signal leave no abort listener behind", async () => {
    const probe = fakeProbe(async () => sample(1));
    const { t } = setup(probe);
    const ac = new AbortController();
    for (let i = 0; i < 20; i++) await t.collect(ac.signal);
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
  });
});
