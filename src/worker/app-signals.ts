// A worker's SIGTERM and SIGINT reach prefork first: the app's own listeners for them run only when the worker's
// shutdown gives them their turn (once in-flight requests are done), not the moment the signal arrives.
import { constants } from 'node:os';

const SHUTDOWN_SIGNALS = ['SIGTERM', 'SIGINT'] as const;
export type ShutdownSignal = (typeof SHUTDOWN_SIGNALS)[number];

const isShutdownSignal = (event: unknown): event is ShutdownSignal => SHUTDOWN_SIGNALS.includes(event as ShutdownSignal);

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

/** An error of an app listener, as Node would meet it: an uncaught exception (a rejection included: Node's default). */
function uncaught(error: unknown): void {
  process.nextTick(() => {
    throw error;
  });
}

/**
 * Does what Node would have done on `signal`: calls the app's listeners, as Node calls them, and returns a promise
 * for each that settles when what it returned does (an async listener's cleanup, to be waited for); with no
 * listener, the default action, which ends the process by the signal.
 */
export function deliverToApp(signal: ShutdownSignal): Array<Promise<void>> {
  const listeners = (process.rawListeners(signal) as Array<(...args: unknown[]) => unknown>).filter((listener) => listener !== keepSignalHandled);
  if (listeners.length === 0) {
    process.off(signal, keepSignalHandled);
    process.kill(process.pid, signal);
    return [];
  }
  return listeners.map((listener) => {
    try {
      return Promise.resolve(listener.call(process, signal, constants.signals[signal])).then(() => {}, uncaught);
    } catch (error) {
      uncaught(error);
      return Promise.resolve();
    }
  });
}
