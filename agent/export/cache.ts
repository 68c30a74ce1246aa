// Bodies for /metrics, rendered once per collection cycle and reused by every scrape until the
// next one (prom-client rebuilds every line per scrape; the canonical part is rendered here once).
// The agent's own metrics are refreshed at most once per second.

import { gzipSync } from 'node:zlib';
import type { ExpositionFormat } from './render.js';

export interface CacheSources {
  /** Incremented whenever the canonical or passthrough data changed. */
  version(): number;
  renderData(format: ExpositionFormat): string;
  renderSelf(format: ExpositionFormat): Promise<string>;
}

interface Entry {
  version: number;
  at: number;
  plain: Buffer;
  gzip: Buffer | undefined;
}

const SELF_REFRESH_MS = 1000;

export class ExpositionCache {
  private readonly entries = new Map<ExpositionFormat, Entry>();
  private readonly inflight = new Map<ExpositionFormat, Promise<Entry>>();

  constructor(
    private readonly src: CacheSources,
    private readonly now: () => number = Date.now,
  ) {}

  async get(format: ExpositionFormat, gzip: boolean): Promise<Buffer> {
    const entry = await this.entry(format);
    if (!gzip) return entry.plain;
    entry.gzip ??= gzipSync(entry.plain, { level: 1 });
    return entry.gzip;
  }

  private entry(format: ExpositionFormat): Promise<Entry> {
    const e = this.entries.get(format);
    if (e && e.version === this.src.version() && this.now() - e.at < SELF_REFRESH_MS) return Promise.resolve(e);
    let p = this.inflight.get(format);
    if (!p) {
      p = this.build(format).finally(() => this.inflight.delete(format));
      this.inflight.set(format, p);
    }
    return p;
  }

  private async build(format: ExpositionFormat): Promise<Entry> {
    const version = this.src.version();
    const data = this.src.renderData(format);
    const self = await this.src.renderSelf(format);
    // prom-client's OpenMetrics output ends with the one `# EOF`, so the agent's own part goes last.
    const entry: Entry = { version, at: this.now(), plain: Buffer.from(data + self, 'utf8'), gzip: undefined };
    this.entries.set(format, entry);
    return entry;
  }
}
