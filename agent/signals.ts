// Shutdown signals, watched from the first line of the process.

export interface Signals {
  /** Resolves with the first SIGTERM or SIGINT. */
  readonly received: Promise<NodeJS.Signals>;
  /** Whether one has arrived (start-up code checks before each slow step). */
  arrived(): boolean;
}

export function watchSignals(): Signals {
  let got: NodeJS.Signals | undefined;
  const received = new Promise<NodeJS.Signals>((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      got = sig;
      resolve(sig);
    };
    process.once('SIGTERM', on);
    process.once('SIGINT', on);
  });
  return { received, arrived: () => got !== undefined };
}

/** How long a shutdown may take before the process gives up on it and says so with status 1. */
export const SHUTDOWN_DEADLINE_MS = 5000;

/**
 * After a signal: stop, then let the process end by itself once its last handle closes. Nothing
 * forces the exit on the normal path; a shutdown that hangs is cut at the deadline and exits 1,
 * so the exit status tells the truth.
 */
export async function stopOnSignal(signals: Signals, stop: () => Promise<void>): Promise<void> {
  await signals.received;
  const watchdog = setTimeout(() => {
    process.stderr.write(`infertel: shutdown did not finish within ${SHUTDOWN_DEADLINE_MS} ms; exiting with status 1\n`);
    process.exit(1);
  }, SHUTDOWN_DEADLINE_MS);
  watchdog.unref();
  try {
    await stop();
    process.exitCode = 0;
  } catch (err) {
    process.stderr.write(`infertel: shutdown failed: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
