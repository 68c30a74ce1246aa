// GPU telemetry: picks a probe along the fallback chain (NVML, AMD SMI, nvidia-smi or amd-smi, none), and is
// the loop's source named "gpu": each cycle polls the probe off the event loop with a deadline,
// keeps the last good values (marked stale) when a poll fails or hangs, and turns samples into an
// exposition (which the agent hands to the normaliser, like an engine's scrape) and the JSON summary. The loop (pipeline/runner.ts) records its health
// like an engine's: infertel_upstream_up{upstream="gpu"}, scrape duration and errors, a span.

import type { Catalogue, CanonicalMetric } from '../catalogue/catalogue.js';
import type { GpuDeviceSummary, GpuSummary } from '../export/summary.js';
import type { SelfMetrics } from '../export/self-metrics.js';
import type { Logger } from '../logger.js';
import type { UpstreamView } from '../normalize/normalizer.js';
import type { Family, FamilyType } from '../parse/exposition.js';
import { AmdSmiProbe } from './amd-probe.js';
import { AmdSmiCliProbe, amdSmiUnavailable } from './amd-smi-probe.js';
import { NvmlProbe } from './nvml-probe.js';
import { OomTail } from './oom.js';

import type { CycleReport, LoopedSource, SourceHealth } from '../pipeline/runner.js';
import { GPU_SOURCE_NAME } from '../sources/source.js';
import { attribute } from './processes.js';
import { emptyDevice, type GpuDevice, type GpuPoll, type GpuProbe, type GpuVendor, type MigDevice } from './probe.js';
import { SimulatedProbe } from './sim-probe.js';
import { SmiProbe, smiUnavailable } from './smi-probe.js';
import { visibleDevices, visibleMig } from './visible.js';

export const SPAN_GPU_POLL = 'infertel.gpu.poll';

/** The GPU half of the sidecar, as the agent sees it: a source of the loop once started. */
export interface GpuTelemetry extends LoopedSource {
  /** Chooses the probe; true when there is one to poll (the loop then runs it every intervalMs()). */
  start(): boolean;
  intervalMs(): number;
  stop(): Promise<void>;
  /** The GPUs as an exposition the normaliser ingests as the source named `gpu`. */
  exposition(): Family[];
  /** Whether a probe reads the GPUs (an engine's own GPU families are then not re-exported). */
  reading(): boolean;
  summary(): GpuSummary;
}

export type GpuSourceChoice = 'auto' | 'nvml' | 'amdsmi' | 'nvidia-smi' | 'amd-smi' | 'none';

export interface GpuConfig {
  nvmlLibrary?: string | undefined;
  amdSmiLibrary?: string | undefined;
  intervalMs: number;
  timeoutMs: number;
  source: GpuSourceChoice;
  processRoles: Readonly<Record<string, string>>;
  oomLogPath?: string | undefined;
  simulate: number;
  simulateVendor?: GpuVendor | undefined;
}

export interface GpuTelemetryDeps {
  catalogue: Catalogue;
  metrics: SelfMetrics;
  onChange: () => void;
  log: Logger;
  config: GpuConfig;
  env?: NodeJS.ProcessEnv;
  /** Override the probe choice (tests). */
  probe?: GpuProbe | null;
  /** gpu_energy_joules_total of a device as the normaliser keeps it (monotonic across driver reloads), for the JSON summary. */
  energyJoules?: (device: string) => number | undefined;
}

export interface ProbeChoice {
  probe: GpuProbe | null;
  /** Why the better sources were not used. */
  reasons: string[];
}

/** One link of the fallback chain: a probe, or why it cannot be had. */
type Link = { name: GpuSourceChoice; open: () => GpuProbe | string };

function describe(name: string, err: unknown): string {
  const e = err as Error & { nvmlReturn?: number; nvmlError?: string };
  return `${name}: ${e.message}${e.nvmlError ? ` (${e.nvmlError}, return ${e.nvmlReturn})` : ''}`;
}

function libraryLink(name: 'nvml' | 'amdsmi', label: string, open: () => GpuProbe): Link {
  return {
    name,
    open: () => {
      try {
        return open();
      } catch (err) {
        return describe(label, err);
      }
    },
  };
}

/** NVML, then AMD SMI (both through the addon), then nvidia-smi, then amd-smi, then none; `gpu.source` pins one. */
export function chooseProbe(cfg: GpuConfig): ProbeChoice {
  const reasons: string[] = [];
  if (cfg.simulate > 0) return { probe: new SimulatedProbe(cfg.simulate, cfg.simulateVendor ?? 'nvidia', Object.keys(cfg.processRoles)), reasons };
  if (cfg.source === 'none') return { probe: null, reasons: ['gpu.source is none'] };
  const chain: Link[] = [
    libraryLink('nvml', 'NVML', () => NvmlProbe.open(cfg.nvmlLibrary)),
    libraryLink('amdsmi', 'AMD SMI', () => AmdSmiProbe.open(cfg.amdSmiLibrary)),
    { name: 'nvidia-smi', open: () => smiUnavailable() ?? new SmiProbe() },
    { name: 'amd-smi', open: () => amdSmiUnavailable() ?? new AmdSmiCliProbe() },
  ];
  for (const link of chain) {
    if (cfg.source !== 'auto' && cfg.source !== link.name) continue;
    const got = link.open();
    if (typeof got !== 'string') return { probe: got, reasons };
    reasons.push(got);
  }
  return { probe: null, reasons };
}

interface Counters {
  xids: Map<string, number>;
  pollErrors: Map<string, number>;
  oom: Map<string, number>;
}

/** gpu_info labels whose values look like ids (a UUID, a PCI address) and are meant to. */
export const GPU_IDENTITY_LABELS = ['uuid', 'pci_bus_id'] as const;

/** How the normaliser sees the GPU source: its own flavor, field names as family names, no model. */
export const GPU_VIEW: UpstreamView = { name: GPU_SOURCE_NAME, flavors: ['gpu'], familyKey: (n) => n, modelLabels: [], defaultModel: '' };

const SEP = '\u0000';

function bump(m: Map<string, number>, key: string, by = 1): void {
  m.set(key, (m.get(key) ?? 0) + by);
}

/**
 * The `device` label as each vendor's own exporter names a GPU: dcgm-exporter's nvidia<minor>,
 * and for AMD the index the device-metrics exporter reports as gpu_id, prefixed amd<index>.
 */
export function deviceLabel(d: Pick<GpuDevice, 'minor' | 'index'>, vendor: GpuVendor = 'nvidia'): string {
  return vendor === 'amd' ? `amd${d.index}` : `nvidia${d.minor ?? d.index}`;
}

/**
 * A MIG profile name in NVIDIA's form, from the device's slices and memory: "1g.10gb", or
 * "1c.2g.20gb" for a compute instance smaller than its GPU instance. Memory is rounded up to whole
 * GiB, so the largest profiles can read a GB under NVIDIA's own name (7g.79gb for 7g.80gb).
 */
export function migProfile(m: Pick<MigDevice, 'gpuInstanceSlices' | 'computeInstanceSlices' | 'memorySizeMb'>): string {
  if (m.gpuInstanceSlices === null || m.memorySizeMb === null) return 'unknown';
  const base = `${m.gpuInstanceSlices}g.${Math.ceil(m.memorySizeMb / 1024)}gb`;
  return m.computeInstanceSlices !== null && m.computeInstanceSlices !== m.gpuInstanceSlices ? `${m.computeInstanceSlices}c.${base}` : base;
}

/** A device as reported: a whole GPU, or one MIG device under its parent. */
interface Reported {
  label: string;
  d: GpuDevice;
  mig: { parent: string; gpuInstance: string; computeInstance: string; profile: string } | undefined;
}

/** Each visible GPU, then each of its visible MIG devices as a device of its own (memory, utilisation where NVML has it). */
export function reportedDevices(devices: readonly GpuDevice[], env: NodeJS.ProcessEnv, vendor: GpuVendor = 'nvidia'): Reported[] {
  const out: Reported[] = [];
  for (const d of devices) {
    const parent = deviceLabel(d, vendor);
    const onInstance = (p: NonNullable<GpuDevice['processes']>[number]) => p.gpuInstanceId !== undefined && p.gpuInstanceId !== null;
    // In MIG mode a process's memory is its instance's, not the parent's.
    out.push({ label: parent, d: d.processes?.some(onInstance) ? { ...d, processes: d.processes.filter((p) => !onInstance(p)) } : d, mig: undefined });
    if (d.error) continue;
    for (const m of visibleMig(d, env)) {
      const gi = m.gpuInstanceId === null ? 'unknown' : String(m.gpuInstanceId);
      const ci = m.computeInstanceId === null ? 'unknown' : String(m.computeInstanceId);
      const profile = migProfile(m);
      out.push({
        label: `${parent}-gi${gi}-ci${ci}`,
        d: {
          ...emptyDevice(d.index),
          minor: d.minor,
          uuid: m.uuid,
          name: d.name === null ? null : `${d.name} MIG ${profile}`,
          pciBusId: d.pciBusId,
          utilizationGpu: m.utilizationGpu,
          memoryTotalBytes: m.memoryTotalBytes,
          memoryUsedBytes: m.memoryUsedBytes,
          memoryFreeBytes: m.memoryFreeBytes,
          processes:
            m.gpuInstanceId === null
              ? null
              : (d.processes ?? []).filter((p) => p.gpuInstanceId === m.gpuInstanceId && p.computeInstanceId === m.computeInstanceId),
        },
        mig: { parent, gpuInstance: gi, computeInstance: ci, profile },
      });
    }
  }
  return out;
}

class Telemetry implements GpuTelemetry {
  private probe: GpuProbe | null = null;
  private reasons: string[] = [];
  private devices: GpuDevice[] = [];
  private reported: Reported[] = [];
  private readonly minors = new Map<number, number>();
  private stale = false;
  private inflight: Promise<GpuPoll> | undefined;
  readonly spanName = SPAN_GPU_POLL;
  readonly health: SourceHealth;
  private readonly counters: Counters = { xids: new Map(), pollErrors: new Map(), oom: new Map() };
  private readonly oom: OomTail | undefined;
  private readonly gpuMetrics: CanonicalMetric[];

  constructor(private readonly deps: GpuTelemetryDeps) {
    this.oom = deps.config.oomLogPath
      ? new OomTail(deps.config.oomLogPath, (err) => deps.metrics.errors.report('oom_log_unreadable', err, { component: 'gpu', path: deps.config.oomLogPath }))
      : undefined;
    this.gpuMetrics = deps.catalogue.metrics.filter((m) => m.sources?.some((s) => s.flavor === 'gpu'));
    if (deps.probe !== undefined) this.probe = deps.probe;
    this.health = {
      name: GPU_SOURCE_NAME,
      up: false,
      lastOutcome: 'pending',
      lastDetail: undefined,
      lastSuccessMs: undefined,
      intervalMs: deps.config.intervalMs,
      lastSeconds: undefined,
      parseErrorsTotal: 0,
    };
  }

  reading(): boolean {
    return this.probe !== null;
  }

  logContext(): Record<string, unknown> {
    return { upstream: GPU_SOURCE_NAME, component: 'gpu', source: this.probe?.source ?? 'none' };
  }

  /** The poll interval: gpu.interval, or the probe's own floor (nvidia-smi: 30 s) when longer. */
  intervalMs(): number {
    return Math.max(this.deps.config.intervalMs, this.probe?.minIntervalMs ?? 0);
  }

  start(): boolean {
    const { log, config } = this.deps;
    if (this.deps.probe === undefined) ({ probe: this.probe, reasons: this.reasons } = chooseProbe(config));
    const source = this.probe?.source ?? 'none';
    if (source === 'nvml') log.info({ component: 'gpu', source }, 'GPU telemetry from NVML');
    else if (source === 'amdsmi') log.info({ component: 'gpu', source, ...(this.reasons.length ? { why: this.reasons } : {}) }, 'GPU telemetry from AMD SMI');
    else if (source === 'nvidia-smi' || source === 'amd-smi')
      log.warn({ component: 'gpu', source, why: this.reasons }, `GPU telemetry from ${source}: lower precision, polled at most every 30 s`);
    else if (source === 'simulated') log.info({ component: 'gpu', source, devices: config.simulate }, 'GPU telemetry simulated');
    else log.warn({ component: 'gpu', source, why: this.reasons }, 'no GPU telemetry');
    this.health.intervalMs = this.intervalMs();
    this.deps.onChange();
    return this.probe !== null;
  }

  collect(signal: AbortSignal): Promise<CycleReport> {
    return this.pollOnce(signal);
  }

  private report(outcome: string, detail?: string): CycleReport {
    return {
      outcome,
      detail,
      parseErrors: 0,
      attributes: {
        'infertel.upstream': GPU_SOURCE_NAME,
        'infertel.gpu.source': this.probe?.source ?? 'none',
        'infertel.outcome': outcome,
        'infertel.gpu.devices': this.devices.length,
      },
    };
  }

  /** One poll with a deadline. A hung poll is left to finish on its worker thread, never awaited twice. */
  async pollOnce(signal?: AbortSignal): Promise<CycleReport> {
    const probe = this.probe;
    if (!probe) return this.report('error', 'no GPU probe');
    if (this.inflight) {
      bump(this.counters.pollErrors, `all${SEP}in_flight`);
      this.markStale();
      return this.report('in_flight', 'the previous poll has not returned');
    }
    const started = performance.now();
    const p = probe.poll();
    this.inflight = p;
    void p
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => {
        if (this.inflight === p) this.inflight = undefined;
      });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), this.deps.config.timeoutMs);
    });
    // Shutdown does not wait out the deadline; stop() then lets the poll finish on its thread.
    let onAbort: (() => void) | undefined;
    const stopping = new Promise<'stopped'>((r) => {
      onAbort = () => r('stopped');
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      const r = await Promise.race([p, deadline, stopping]);
      if (r === 'stopped') return this.report('stopped');
      if (r === 'timeout') {
        bump(this.counters.pollErrors, `all${SEP}timeout`);
        this.deps.metrics.errors.report('gpu_poll_timeout', undefined, { component: 'gpu', timeoutMs: this.deps.config.timeoutMs });
        this.markStale();
        return this.report('timeout', `no answer within ${this.deps.config.timeoutMs} ms`);
      }
      this.accept(r);
      this.deps.metrics.gpuPollDuration.set((performance.now() - started) / 1000);
      return this.report('ok');
    } catch (err) {
      bump(this.counters.pollErrors, `all${SEP}${(err as { code?: string }).code ?? 'error'}`);
      this.deps.metrics.errors.report('gpu_poll_failed', err, { component: 'gpu' });
      this.markStale();
      return this.report('error', (err as Error).message);
    } finally {
      clearTimeout(timer);
      // The loop's signal lives as long as the agent: one listener per poll would pile up.
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  private markStale(): void {
    if (!this.stale) {
      this.stale = true;
      this.deps.onChange();
    }
  }

  private get vendor(): GpuVendor {
    return this.probe?.vendor ?? 'nvidia';
  }

  private label(d: Pick<GpuDevice, 'minor' | 'index'>): string {
    return deviceLabel(d, this.vendor);
  }

  private accept(r: GpuPoll): void {
    const env = this.deps.env ?? process.env;
    const devices = visibleDevices(r.devices, env, this.vendor);
    const visible = new Set(devices.map((d) => d.index));
    for (const d of devices) {
      if (d.minor !== null) this.minors.set(d.index, d.minor);
      else d.minor = this.minors.get(d.index) ?? null;
      const label = this.label(d);
      if (d.error) bump(this.counters.pollErrors, `${label}${SEP}${d.error.code}`);
      for (const e of d.fieldErrors) bump(this.counters.pollErrors, `${label}${SEP}${e.code}`);
    }
    for (const x of r.xids) {
      if (!visible.has(x.index)) continue;
      bump(this.counters.xids, `${this.label({ index: x.index, minor: this.minors.get(x.index) ?? null })}${SEP}${x.xid}`);
    }
    for (const idx of this.oom?.read() ?? []) {
      const label = idx === undefined ? 'unknown' : this.label({ index: idx, minor: this.minors.get(idx) ?? null });
      bump(this.counters.oom, label);
    }
    this.devices = devices;
    this.reported = reportedDevices(devices, env, this.vendor);
    this.stale = false;
    this.deps.onChange();
  }

  /**
   * The GPUs as an exposition, like an engine's scrape: one family per catalogue source field
   * (`gpu` sources name fields where engine sources name families), labelled by device. The
   * normaliser turns it into the canonical GPU families, with the engines' guards and counter
   * reset handling. The last good values stay in it while polls fail (marked stale).
   */
  exposition(): Family[] {
    const out = new Map<string, Family>();
    const source = this.probe?.source ?? 'none';
    const add = (field: string, type: FamilyType, labels: Array<[string, string]>, value: number) => {
      let fam = out.get(field);
      if (!fam) out.set(field, (fam = { name: field, type, help: undefined, samples: [] }));
      fam.samples.push({ name: field, labels: labels.flat(), value });
    };
    for (const m of this.gpuMetrics) {
      const type: FamilyType = m.type === 'counter' ? 'counter' : 'gauge';
      for (const spec of m.sources ?? []) {
        const field = spec.field!;
        if (out.has(field)) continue;
        if (field === 'source') add(field, type, [['source', source]], 1);
        else if (field === 'stale') {
          if (this.probe) add(field, type, [], this.stale ? 1 : 0);
        } else if (field === 'xids')
          for (const [k, v] of this.counters.xids) {
            const [device, xid] = k.split(SEP);
            add(
              field,
              type,
              [
                ['device', device!],
                ['xid', xid!],
              ],
              v,
            );
          }
        else if (field === 'pollErrors')
          for (const [k, v] of this.counters.pollErrors) {
            const [device, code] = k.split(SEP);
            add(
              field,
              type,
              [
                ['device', device!],
                ['code', code!],
              ],
              v,
            );
          }
        else if (field === 'oom') {
          if (this.oom) for (const [device, v] of this.counters.oom) add(field, type, [['device', device]], v);
        } else if (field === 'mig') {
          for (const r of this.reported)
            if (r.mig)
              add(
                field,
                type,
                [
                  ['device', r.label],
                  ['parent', r.mig.parent],
                  ['gpu_i_id', r.mig.gpuInstance],
                  ['gpu_i_profile', r.mig.profile],
                  ['ci_id', r.mig.computeInstance],
                ],
                1,
              );
        } else {
          for (const { d, label: device } of this.reported) {
            if (d.error) continue;
            if (field === 'info')
              add(
                field,
                type,
                [
                  ['device', device],
                  ['uuid', d.uuid ?? ''],
                  ['name', d.name ?? ''],
                  ['pci_bus_id', d.pciBusId ?? ''],
                  ['driver', this.probe?.driverVersion ?? ''],
                  ['vendor', this.vendor],
                ],
                1,
              );
            else if (field === 'processes') {
              for (const [process, bytes] of attribute(d.processes ?? [], this.deps.config.processRoles))
                add(
                  field,
                  type,
                  [
                    ['device', device],
                    ['process', process],
                  ],
                  bytes,
                );
            } else if (spec.bits) {
              const mask = d.throttleReasons;
              if (mask === null) continue;
              for (const [reason, bit] of Object.entries(spec.bits))
                add(
                  field,
                  type,
                  [
                    ['device', device],
                    ['reason', reason],
                  ],
                  (mask & bit) !== 0 ? 1 : 0,
                );
            } else {
              // One family per device field; a field with several sources (ECC) is read once each.
              const v = (d as unknown as Record<string, number | null>)[field];
              if (typeof v === 'number') add(field, type, [['device', device]], v);
            }
          }
        }
      }
    }
    return [...out.values()];
  }

  summary(): GpuSummary {
    const source = this.probe?.source ?? 'none';
    const library = source === 'nvml' || source === 'amdsmi';
    const vendor = this.vendor;
    const devices: GpuDeviceSummary[] = this.reported.map(({ d, label, mig }) => ({
      device: label,
      vendor,
      index: d.index,
      uuid: d.uuid,
      name: d.name,
      utilization_gpu_percent: d.utilizationGpu,
      memory_total_bytes: d.memoryTotalBytes,
      memory_used_bytes: d.memoryUsedBytes,
      memory_free_bytes: d.memoryFreeBytes,
      temperature_c: d.temperatureC,
      power_w: d.powerW,
      energy_joules: ((e) => (e === undefined ? null : +e.toFixed(3)))(this.deps.energyJoules?.(label)),
      error: d.error ? d.error.code : null,
      stale: this.stale,
      ...(mig ? { mig: { parent: mig.parent, gpu_instance_id: mig.gpuInstance, compute_instance_id: mig.computeInstance, profile: mig.profile } } : {}),
      ...(library ? {} : { nvml_unavailable: true as const }),
    }));
    return { source, nvml_unavailable: !library, ...(this.reasons.length ? { reason: this.reasons.join('; ') } : {}), devices };
  }

  /** After the loop has stopped: closes the probe once no poll is in flight. */
  async stop(): Promise<void> {
    // A hung poll holds the NVML lock on its worker thread: shut down only when it has finished.
    const done = await Promise.race([
      this.inflight?.then(
        () => true,
        () => true,
      ) ?? Promise.resolve(true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 200)),
    ]);
    if (done) await this.probe?.close();
  }
}

export function createGpuTelemetry(deps: GpuTelemetryDeps): GpuTelemetry {
  return new Telemetry(deps);
}
