// The primary's signals, as gunicorn and nginx take them: TERM/INT stop, HUP reloads, TTIN/TTOU scale by one.
import { MAX_WORKERS } from '../limits';

/** What the signals act on (the supervisor). */
export interface SignalTarget {
  readonly workerCount: number;
  readonly shuttingDown: boolean;
  shutdown(): Promise<void>;
  reload(): Promise<void>;
  scale(workers: number): Promise<void>;
  killAll(): void;
}

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU'] as const;

/** Installs the handlers; returns the function that removes them. A failure is one line on stderr. */
export function handleSignals(target: SignalTarget): () => void {
  const report = (error: Error) => process.stderr.write(`prefork: ${error.message}\n`);
  const handlers: Record<(typeof SIGNALS)[number], () => void> = {
    SIGTERM: () => void target.shutdown(),
    // A second Ctrl-C does not wait for in-flight requests.
    SIGINT: () => (target.shuttingDown ? target.killAll() : void target.shutdown()),
    SIGHUP: () => void target.reload().catch(report),
    SIGTTIN: () => void target.scale(Math.min(MAX_WORKERS, target.workerCount + 1)).catch(report),
    SIGTTOU: () => void (target.workerCount > 1 ? target.scale(target.workerCount - 1).catch(report) : undefined),
  };
  for (const signal of SIGNALS) process.on(signal, handlers[signal]);
  return () => {
    for (const signal of SIGNALS) process.off(signal, handlers[signal]);
  };
}
