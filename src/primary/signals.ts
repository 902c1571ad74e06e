// The primary's signals, as gunicorn and nginx take them: TERM/INT stop, HUP reloads, TTIN/TTOU scale by one,
// USR2 upgrades the primary itself. Under npm, npm's exit stops it too (npm-parent.ts).
import { followNpm } from './npm-parent';

/** What the signals act on (the supervisor). */
export interface SignalTarget {
  readonly shuttingDown: boolean;
  shutdown(): Promise<void>;
  reload(): Promise<void>;
  scaleBy(delta: 1 | -1): Promise<void>;
  upgrade(): Promise<unknown>;
  killAll(): void;
}

export const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU', 'SIGUSR2'] as const;

/** What each one does, for `prefork --help` and the docs. */
export const SIGNAL_ACTIONS: Record<(typeof SIGNALS)[number], string> = {
  SIGTERM: 'stop gracefully: workers finish their requests (up to the shutdown timeout)',
  SIGINT: 'the same (Ctrl-C); a second one kills the workers at once',
  SIGHUP: 'rolling reload: worker by worker, each new one ready before the old one drains',
  SIGTTIN: 'one worker more',
  SIGTTOU: 'one worker fewer',
  SIGUSR2: 'hot upgrade: a new primary (new code of prefork and of Node) takes over the sockets, then this one exits (as PID 1: stays as an init)',
};

/** Installs the handlers; returns the function that removes them. A failure is one line on stderr. */
export function handleSignals(target: SignalTarget): () => void {
  const report = (error: Error) => process.stderr.write(`prefork: ${error.message}\n`);
  const handlers: Record<(typeof SIGNALS)[number], () => void> = {
    SIGTERM: () => void target.shutdown(),
    // A second Ctrl-C does not wait for in-flight requests.
    SIGINT: () => (target.shuttingDown ? target.killAll() : void target.shutdown()),
    SIGHUP: () => void target.reload().catch(report),
    // The step reads the count when it runs: two TTINs during a reload make two more workers.
    SIGTTIN: () => void target.scaleBy(1).catch(report),
    SIGTTOU: () => void target.scaleBy(-1).catch(report),
    // A failed upgrade reports itself on stderr; a refused one (one already running) is reported here.
    SIGUSR2: () => void target.upgrade().catch((error: Error & { code?: string }) => error.code !== 'ERR_PREFORK_UPGRADE_FAILED' && report(error)),
  };
  for (const signal of SIGNALS) process.on(signal, handlers[signal]);
  // npm's SIGTERM ends the shell it ran us with, not us: npm's exit is our SIGTERM (never a second Ctrl-C's kill).
  const stopFollowingNpm = followNpm(() => void target.shutdown());
  return () => {
    for (const signal of SIGNALS) process.off(signal, handlers[signal]);
    stopFollowingNpm();
  };
}
