// Durations in config and flags: "500ms", "10s", "1m", "1h" (or a bare number of seconds).

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds, or undefined when the text is not a duration. */
export function parseDuration(text: string | number): number | undefined {
  if (typeof text === 'number') return Number.isFinite(text) && text >= 0 ? text * 1000 : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  const unit = m ? UNITS[m[2] ?? 's'] : undefined;
  return m && unit !== undefined ? Number(m[1]) * unit : undefined;
}
