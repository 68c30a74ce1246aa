// Applies JSONPatch output the way the API server would, for the webhook tests.
import type { PatchOp } from '../../agent/webhook/mutate.js';

/** Minimal RFC 6902 add/replace, enough to check what the API server would make of the patch. */
export function applyPatch<T>(doc: T, patch: PatchOp[]): T {
  const out = structuredClone(doc) as Record<string, unknown>;
  for (const op of patch) {
    const parts = op.path
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop()!;
    let target: Record<string, unknown> | unknown[] = out;
    for (const p of parts) target = (target as Record<string, unknown>)[p] as Record<string, unknown>;
    if (Array.isArray(target)) {
      if (last === '-') target.push(op.value);
      else target.splice(Number(last), op.op === 'add' ? 0 : 1, op.value);
    } else {
      if (op.op === 'replace' && !(last in target)) throw new Error(`replace of missing ${op.path}`);
      if (op.op === 'add' && parts.length && !(last in target) && target === undefined) throw new Error(`no parent for ${op.path}`);
      target[last] = op.value;
    }
  }
  return out as T;
}
