// A worker's SIGTERM and SIGINT reach prefork first: the app's own listeners for them run only when the worker's
// shutdown gives them their turn (once in-flight requests are done), not the moment the signal arrives.
import { constants } from 'node:os';

export const SHUTDOWN_SIGNALS = ['SIGTERM', 'SIGINT'] as const;
export type ShutdownSignal = (typeof SHUTDOWN_SIGNALS)[number];

const isShutdownSignal = (event: unknown): event is ShutdownSignal => event === 'SIGTERM' || event === 'SIGINT';

/** Keeps Node's handler for the signal installed, so its default action (the process ends) never applies. */
function keepSignalHandled(): void {}

/**
 * From now on a SIGTERM or SIGINT calls `onSignal` instead of the process's listeners. Node binds `process.emit`
 * when a signal's first listener is added, so listeners added before this are removed and added again (after
 * ours) for their signal to come through here too. Once per process.
 */
export function takeShutdownSignals(onSignal: (signal: ShutdownSignal) => void): void {
  const emit = process.emit;
  process.emit = function emitUnlessShutdownSignal(this: NodeJS.Process, event: string | symbol, ...args: unknown[]) {
    if (isShutdownSignal(event)) {
      onSignal(event);
      return true;
    }
    return (emit as (...all: unknown[]) => boolean).call(this, event, ...args);
  } as typeof process.emit;
  for (const signal of SHUTDOWN_SIGNALS) {
    const earlier = process.rawListeners(signal) as Array<(...args: unknown[]) => void>;
    process.removeAllListeners(signal);
    process.on(signal, keepSignalHandled);
    for (const listener of earlier) process.on(signal, listener);
  }
}

/** Whether the app listens for `signal` (prefork's own listener aside). */
export function appListensFor(signal: ShutdownSignal): boolean {
  return process.listenerCount(signal) > (process.listeners(signal).includes(keepSignalHandled) ? 1 : 0);
}

/**
 * Does what Node would have done on `signal`: calls the app's listeners, as Node calls them, and returns what
 * each returned (an async listener's promise, so its cleanup can be waited for); with no listener, the default
 * action, which ends the process by the signal (an app that removed its listeners and raised it again wants that).
 */
export function deliverToApp(signal: ShutdownSignal): unknown[] {
  const listeners = (process.rawListeners(signal) as Array<(...args: unknown[]) => unknown>).filter((listener) => listener !== keepSignalHandled);
  if (listeners.length === 0) {
    process.off(signal, keepSignalHandled);
    process.kill(process.pid, signal);
    return [];
  }
  return listeners.map((listener) => {
    try {
      return listener.call(process, signal, constants.signals[signal]);
    } catch (error) {
      process.nextTick(() => {
        throw error; // as when Node calls it: an uncaught exception
      });
      return undefined;
    }
  });
}
