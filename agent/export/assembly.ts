// Assembles the /metrics body: canonical families, then each upstream's passthrough, then the
// families several upstreams share. Each upstream's guarded passthrough set is rendered into
// per-format blocks once (when the loop hands over a new set), and the body once per data
// version, so a scrape of the agent only copies text.

import type { CanonicalFamily } from '../normalize/normalizer.js';
import type { Family } from '../parse/exposition.js';
import {
  canonicalClaims,
  renderCanonical,
  renderPassthrough,
  renderShared,
  sharedFamilies,
  toPassthroughFamilies,
  type ExpositionFormat,
  type PassthroughFamily,
} from './render.js';
import type { SelfMetrics } from './self-metrics.js';

/** An upstream's passthrough as the loop keeps it: each version's set is handed over once. */
export interface PassthroughSource {
  readonly name: string;
  readonly passthroughVersion: number;
  takePassthrough(): readonly Family[];
}

export class Assembly {
  private readonly blocks = new Map<string, { version: number; families: PassthroughFamily[] }>();
  private readonly rendered = new Map<ExpositionFormat, { version: number; body: string }>();

  constructor(private readonly metrics: SelfMetrics) {}

  /** One upstream's rendered blocks, rebuilt only when it handed over a new set. */
  private blocksOf(u: PassthroughSource): PassthroughFamily[] {
    const hit = this.blocks.get(u.name);
    if (hit && hit.version === u.passthroughVersion) return hit.families;
    const families = toPassthroughFamilies(u.takePassthrough());
    this.blocks.set(u.name, { version: u.passthroughVersion, families });
    for (const format of ['text', 'openmetrics'] as const) {
      this.metrics.unexpressed.set(
        { upstream: u.name, format },
        families.reduce((a, f) => a + f.droppedIn[format], 0),
      );
    }
    return families;
  }

  /** Renders the blocks of every upstream that handed over a new set, so the body's turn only joins text. */
  prepare(upstreams: readonly PassthroughSource[]): void {
    for (const u of upstreams) this.blocksOf(u);
  }

  /** The data part of /metrics (self-metrics are appended by the cache), once per version. */
  render(format: ExpositionFormat, version: number, canonicalOf: () => readonly CanonicalFamily[], upstreams: readonly PassthroughSource[]): string {
    const hit = this.rendered.get(format);
    if (hit && hit.version === version) return hit.body;
    const canonical = canonicalOf();
    const sets = upstreams.map((u) => ({ upstream: u.name, families: this.blocksOf(u) }));
    // The claims leave out any family whose sample names another family already took.
    const claims = canonicalClaims(canonical, format);
    const shared = sharedFamilies(sets);
    let body = renderCanonical(canonical, format);
    for (const s of sets) body += renderPassthrough(s.families, format, shared, claims);
    body += renderShared(sets, shared, format, claims);
    this.metrics.setFamilyClashes(format, claims.clashes);
    this.rendered.set(format, { version, body });
    return body;
  }
}
