// The Supervisor's events: every name and its listener's arguments, in one place, for on/once/off/emit.
import type { SocketAddress } from '../protocol/messages';
import type { RecycleLimit } from './recycle';
import type { UpgradeEvent } from './upgrade';
import type { ExitReason, Worker } from './worker-process';

export type { UpgradeEvent } from './upgrade';

/** Event name → the arguments its listeners get. */
export interface SupervisorEvents {
  /** A worker process was started (first start, restart, reload, recycling or scaling). */
  fork: [worker: Worker];
  /** The worker's prefork side is running (before the app listens). */
  online: [worker: Worker];
  /** The worker listens on one of the addresses. */
  listening: [worker: Worker, address: SocketAddress];
  /** The worker listens on every address (or called ready() with waitReady). */
  ready: [worker: Worker];
  /** A worker process exited: its exit code, or the signal that ended it, and why. */
  exit: [worker: Worker, code: number | null, signal: NodeJS.Signals | null, reason: ExitReason | null];
  /** A slot's worker was replaced after an exit nobody asked for, `delay` ms after it (the backoff). */
  restart: [old: Worker, next: Worker, delay: number, reason: ExitReason];
  /** A worker process could not be started (EAGAIN, EMFILE…): the slot restarts with backoff. */
  spawnfailed: [slot: number, error: Error];
  /** A worker's event loop did not turn for `since` ms (heartbeatTimeout): it is killed and replaced. */
  unresponsive: [worker: Worker, since: number];
  /** A worker past a recycle limit was replaced by `next`. */
  recycle: [old: Worker, next: Worker, limit: RecycleLimit];
  /** A slot crashed too often (ERR_PREFORK_CRASH_LOOP) or could not be restarted: the supervisor shuts down. */
  giveup: [slot: number, error: Error];
  /** A rolling reload began (reload() or SIGHUP, its turn in the queue come). */
  reloading: [];
  /** A rolling reload finished. */
  reload: [];
  /** A rolling reload stopped before it finished: `error` is what reload() rejects with. */
  reloadfailed: [error: Error];
  /** The number of workers changed. */
  scale: [from: number, to: number];
  upgrade: [upgrade: UpgradeEvent];
  /** A worker's process.send(message), as node:cluster's 'message' event (answer with worker.send()). */
  message: [worker: Worker, message: unknown];
  /** Every worker is gone and the sockets are closed. */
  shutdown: [];
}

export type SupervisorEvent = keyof SupervisorEvents;
export type SupervisorListener<E extends SupervisorEvent> = (...args: SupervisorEvents[E]) => void;

