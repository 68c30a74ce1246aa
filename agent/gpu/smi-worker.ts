// Worker thread for the nvidia-smi fallback: systeminformation's graphics() runs execFileSync
// (nvidia-smi, lspci, …) and would block the agent's event loop for ~35 ms per call.

import { parentPort } from 'node:worker_threads';
import si from 'systeminformation';

parentPort?.on('message', async () => {
  try {
    const g = await si.graphics();
    parentPort?.postMessage({ ok: true, controllers: g.controllers });
  } catch (err) {
    parentPort?.postMessage({ ok: false, error: (err as Error).message });
  }
});
