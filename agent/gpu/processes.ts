// GPU processes by name or role, never by PID. Reading /proc/<pid>/comm works for the engine's
// processes when the pod shares its process namespace (shareProcessNamespace: true).

import { readFileSync } from 'node:fs';

export const UNKNOWN_PROCESS = 'unknown';
/** Distinct process labels per device before the rest become "other". */
export const MAX_PROCESS_LABELS = 16;

export function processName(pid: number, procRoot = '/proc'): string {
  try {
    return readFileSync(`${procRoot}/${pid}/comm`, 'utf8').trim() || UNKNOWN_PROCESS;
  } catch {
    return UNKNOWN_PROCESS;
  }
}

/** Memory per process label: configured role for the name, else the name; PIDs never leak. */
export function attribute(
  processes: ReadonlyArray<{ pid: number; usedMemoryBytes: number | null; name?: string }>,
  roles: Readonly<Record<string, string>>,
  nameOf: (pid: number) => string = (pid) => processName(pid),
): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of processes) {
    if (p.usedMemoryBytes === null) continue;
    const name = p.name ?? nameOf(p.pid);
    let label = roles[name] ?? name;
    if (!out.has(label) && out.size >= MAX_PROCESS_LABELS) label = 'other';
    out.set(label, (out.get(label) ?? 0) + p.usedMemoryBytes);
  }
  return out;
}
