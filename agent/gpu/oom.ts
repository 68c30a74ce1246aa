// Counts CUDA out-of-memory errors in an engine log that infertel can read (gpu.oomLogPath).
// Pattern: PyTorch's "CUDA out of memory" / torch.OutOfMemoryError and CUDA's
// cudaErrorMemoryAllocation; "GPU <n>" in the line names the device index when present.

import { closeSync, openSync, readSync, statSync } from 'node:fs';

export const OOM_PATTERN = /CUDA out of memory|OutOfMemoryError|cudaErrorMemoryAllocation|CUDA error: out of memory/;
const DEVICE_IN_LINE = /\bGPU (\d+)\b/;
/** Bytes read per check at most, so a log flood cannot stall a poll. */
const MAX_READ = 1 << 20;

export class OomTail {
  private offset: number | undefined;
  private partial = '';

  constructor(
    private readonly path: string,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  /** New OOM lines since the last call, as device indexes (undefined when the line names none). */
  read(): Array<number | undefined> {
    let size: number;
    try {
      size = statSync(this.path).size;
    } catch (err) {
      this.onError(err);
      return [];
    }
    // Start at the end the first time: history before the agent started is not counted.
    if (this.offset === undefined || size < this.offset) {
      this.offset = this.offset === undefined ? size : 0;
      this.partial = '';
      if (size === this.offset) return [];
    }
    const length = Math.min(MAX_READ, size - this.offset);
    if (length <= 0) return [];
    const buf = Buffer.alloc(length);
    const fd = openSync(this.path, 'r');
    try {
      readSync(fd, buf, 0, length, this.offset);
    } finally {
      closeSync(fd);
    }
    this.offset += length;
    const lines = (this.partial + buf.toString('utf8')).split('\n');
    this.partial = lines.pop() ?? '';
    const out: Array<number | undefined> = [];
    for (const line of lines) {
      if (!OOM_PATTERN.test(line)) continue;
      const m = DEVICE_IN_LINE.exec(line);
      out.push(m ? Number(m[1]) : undefined);
    }
    return out;
  }
}
