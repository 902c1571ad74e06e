// The primary's one queue of changes to its workers (gunicorn's arbiter loop, as a promise chain): reload, scale,
// recycling and hot upgrade run one at a time, in the order asked, so no two of them ever touch a slot at once.
// A reload or scale also supersedes an endless wait ahead of it (readyTimeout 0), which would otherwise hold the
// queue forever.
import { preforkError } from '../errors';
import type { SupervisorConfig } from './options';
import type { RecycleLimit } from './recycle';
import type { Slot, WorkerSlots } from './slots';
import type { Supervisor } from './supervisor';
import type { WorkerProcess } from './worker-process';

type ReplaceReason = 'reload' | `recycle-${RecycleLimit}`;

/** What the queue needs of the supervisor that owns it. */
export interface OperationsHost {
  readonly events: Pick<Supervisor, 'emit' | 'shuttingDown'>;
  /** Settles when the supervisor's start did: nothing in the queue runs before. */
  started(): Promise<void>;
  running(): boolean;
  notRunning(what: string): Error;
  /** Ends a hot upgrade's endless wait for its new primary (upgrade.ts). */
  supersedeUpgrade(): void;
}

export class Operations {
  private queue: Promise<unknown> = Promise.resolve();
  /** Ends a reload's endless wait for its new worker (readyTimeout 0); null while none waits. */
  private supersedeWait: (() => void) | null = null;

  constructor(
    private readonly config: SupervisorConfig,
    private readonly slots: WorkerSlots,
    private readonly host: OperationsHost,
  ) {}

  /** Runs `operation` after every one asked before it; a reload or scale (`supersedes`) ends an endless wait first. */
  run<T>(operation: () => Promise<T>, { supersedes = true } = {}): Promise<T> {
    if (supersedes) {
      this.supersedeWait?.();
      this.host.supersedeUpgrade();
    }
    const run = this.queue.then(async () => {
      await this.host.started();
      return operation();
    });
    this.queue = run.catch(() => {});
    return run;
  }

  /** Rolling reload: slot by slot, a new worker is started and ready before the old one drains. */
  reload(): Promise<void> {
    return this.run(async () => {
      const { events } = this.host;
      events.emit('reloading');
      try {
        for (const slot of [...this.slots.list]) {
          if (!this.host.running()) throw this.host.notRunning('reload');
          if (!this.slots.has(slot) || this.slots.sockets.isOutOfGroup(slot.id) || slot.restartTimer) continue; // restarts with the new code anyway
          await this.replace(slot, 'reload');
        }
      } catch (error) {
        events.emit('reloadfailed', error as Error); // the old workers keep serving, or we are shutting down
        throw error;
      }
      events.emit('reload');
    });
  }

  /**
   * A worker past a recycle limit (the recycler's bookkeeping in recycle.ts) is replaced as in a reload, the new one
   * ready before the old one drains: one slot recycles at a time, and slots due together are spaced by at least a
   * worker's start. A recycling supersedes nothing. null: it no longer serves its slot.
   */
  recycle(worker: WorkerProcess, limit: RecycleLimit): Promise<WorkerProcess | null> {
    return this.run(async () => {
      const slot = this.slots.list[worker.record.id];
      if (!this.host.running() || !slot || slot.worker !== worker || worker.record.state !== 'ready') return null;
      return this.replace(slot, `recycle-${limit}`);
    }, { supersedes: false });
  }

  /** To the number of workers `target` gives when the step runs. New slots get new sockets; removed slots drain and close theirs. */
  scaleTo(target: () => number): Promise<void> {
    return this.run(async () => {
      if (!this.host.running()) throw this.host.notRunning('scale');
      const from = this.slots.list.length;
      const workers = target();
      if (workers > from) {
        const added: WorkerProcess[] = [];
        for (let id = from; id < workers; id++) {
          const slot = await this.slots.add(id);
          slot.worker = this.slots.fill(slot, null); // a failed spawn restarts the slot with backoff
          if (slot.worker) added.push(slot.worker);
        }
        await Promise.all(added.map((worker) => worker.ready));
      } else if (workers < from) {
        const leaving = this.slots.removeFrom(workers);
        for (const worker of leaving) worker.requestStop(this.config.shutdownTimeout, 'scale');
        await Promise.all(leaving.map((worker) => worker.child.exited));
      }
      this.host.events.emit('scale', from, workers);
    });
  }

  /** The slot's worker replaced by a new one on the slot's sockets, ready before the old one drains. */
  private async replace(slot: Slot, reason: ReplaceReason): Promise<WorkerProcess> {
    const old = slot.worker;
    let next: WorkerProcess;
    try {
      next = this.slots.spawn(slot, reason);
    } catch (cause) {
      throw this.replaceFailed(reason, slot.id, cause);
    }
    slot.incoming = next;
    try {
      await this.untilReadyOrSuperseded(next);
    } catch (cause) {
      if (slot.incoming === next) slot.incoming = null;
      next.requestStop(0, 'not-ready');
      // The old worker may have died meanwhile and left the slot to this one: the slot is refilled.
      const { exitCode = null, signal = null } = cause as { exitCode?: number | null; signal?: NodeJS.Signals | null };
      this.slots.ensureServing(slot, next.record, exitCode, signal);
      throw this.replaceFailed(reason, slot.id, cause);
    }
    slot.incoming = null;
    slot.worker = next;
    old?.requestStop(this.config.shutdownTimeout, reason);
    return next;
  }

  private replaceFailed(reason: ReplaceReason, slot: number, cause: unknown): Error {
    const what = reason === 'reload' ? `Reload stopped at worker slot ${slot}` : `Recycling worker slot ${slot} failed`;
    if (this.host.events.shuttingDown) {
      return Object.assign(preforkError('ERR_PREFORK_SHUT_DOWN', `${what}: the supervisor is shutting down`), { cause });
    }
    const code = reason === 'reload' ? 'ERR_PREFORK_RELOAD_FAILED' : 'ERR_PREFORK_RECYCLE_FAILED';
    return Object.assign(preforkError(code, `${what}: ${(cause as Error).message}; the old worker${reason === 'reload' ? 's keep' : ' keeps'} serving`), { cause });
  }

  /**
   * A reload's new worker becoming ready. With readyTimeout 0 nothing bounds that wait, so a later reload or
   * scale supersedes it (the new worker is stopped, the old one keeps serving) instead of queueing forever.
   */
  private untilReadyOrSuperseded(worker: WorkerProcess): Promise<void> {
    if (this.config.readyTimeout > 0) return worker.ready;
    return new Promise<void>((resolve, reject) => {
      this.supersedeWait = () => reject(preforkError('ERR_PREFORK_RELOAD_FAILED', 'superseded by a later reload or scale before the new worker was ready'));
      worker.ready.then(resolve, reject);
    }).finally(() => (this.supersedeWait = null));
  }
}
