// The worker slots: which process serves each slot, what its messages mean, and its restart after a crash.
import type { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { debug } from '../debug';
import { preforkError } from '../errors';
import { formatAddress, listenConfig } from '../protocol/address';
import type { PrimaryMessage, WorkerMessage } from '../protocol/messages';
import type { SupervisorConfig } from './options';
import { decideRestart, NO_CRASHES, type CrashHistory } from './restart-policy';
import { SocketTable } from './socket-table';
import { describeExit, inspectorExecArgv, startWorkerProcess, type Worker, type WorkerProcess } from './worker-process';

/** A worker slot: its serving worker, a reload's replacement until that is ready, and its crash record. */
export interface Slot {
  readonly id: number;
  worker: WorkerProcess | null;
  incoming: WorkerProcess | null;
  generation: number;
  restarts: number;
  crashes: CrashHistory;
  restartTimer: NodeJS.Timeout | null;
}

/**
 * Slots and their processes. Lifecycle events go to `events` (the supervisor); a slot that crashes too often
 * goes to `onGiveUp`. Once `stopAll()` began, nothing starts again.
 */
export class WorkerSlots {
  readonly list: Slot[] = [];
  readonly sockets: SocketTable;
  /** Every live worker process, a slot's incoming and draining old generations included. */
  private readonly processes = new Set<WorkerProcess>();
  private stopping = false;
  private workersStarted = 0;

  constructor(
    private readonly config: SupervisorConfig,
    private readonly events: EventEmitter,
    private readonly storeFd: number,
    private readonly onGiveUp: (slot: number, error: Error) => void,
  ) {
    this.sockets = new SocketTable(config.sockets);
  }

  /** A new slot with its sockets, no worker yet. */
  async add(id: number): Promise<Slot> {
    await this.sockets.addSlot(id);
    const slot: Slot = { id, worker: null, incoming: null, generation: 0, restarts: 0, crashes: NO_CRASHES, restartTimer: null };
    this.list[id] = slot;
    return slot;
  }

  /** Removes the slots from `count` on; returns their workers (to drain: their own socket copies keep serving). */
  removeFrom(count: number): WorkerProcess[] {
    const leaving: WorkerProcess[] = [];
    for (const slot of this.list.splice(count)) {
      if (slot.restartTimer) clearTimeout(slot.restartTimer);
      for (const worker of [slot.worker, slot.incoming]) if (worker) leaving.push(worker);
      this.sockets.removeSlot(slot.id);
    }
    return leaving;
  }

  /** Whether `slot` is still one of the slots (not removed by scaling down). */
  has(slot: Slot): boolean {
    return this.list[slot.id] === slot;
  }

  /** Starts a worker for the slot on its sockets. */
  spawn(slot: Slot): WorkerProcess {
    if (this.stopping) throw preforkError('ERR_PREFORK_NOT_RUNNING', 'Cannot start a worker: the supervisor is stopping');
    slot.generation += 1;
    const worker = startWorkerProcess({
      slot: slot.id,
      generation: slot.generation,
      restarts: slot.restarts,
      sockets: this.sockets.socketsOf(slot.id).map((socket, index) => ({ fd: socket.fd, describe: (fd) => this.sockets.describe(index, fd) })),
      storeFd: this.storeFd,
      execArgv: inspectorExecArgv(this.config.execArgv, ++this.workersStarted),
      config: this.config,
    });
    this.processes.add(worker);
    worker.channel.on('message', (message: WorkerMessage, received: number[]) => {
      for (const fd of received) closeSync(fd); // workers send no fds to the primary
      this.onMessage(worker, message);
    });
    worker.channel.on('error', () => worker.channel.close());
    worker.child.once('exit', (code: number | null, signal: NodeJS.Signals | null) => this.onExit(worker, code, signal));
    this.events.emit('fork', worker.record);
    return worker;
  }

  /** A reload could not start the slot's replacement: if the old worker died meanwhile, the slot restarts. */
  refillAfterFailedReload(slot: Slot, failed: WorkerProcess, cause: unknown): void {
    if (slot.worker !== null || !this.has(slot) || this.stopping) return;
    const { exitCode = null, signal = null } = cause as { exitCode?: number | null; signal?: NodeJS.Signals | null };
    this.scheduleRestart(slot, failed.record, exitCode, signal);
  }

  /** Stops every worker (SIGKILL after `timeout` ms) and closes every socket; resolves when all are reaped. */
  async stopAll(timeout: number): Promise<void> {
    this.stopping = true;
    for (const slot of this.list) if (slot.restartTimer) clearTimeout(slot.restartTimer);
    // Our copies close first: each socket leaves the kernel's balancing when its worker closes its own,
    // so new connections are refused at once instead of waiting in a queue nobody will serve.
    this.sockets.closeAll();
    const all = [...this.processes];
    for (const worker of all) worker.requestStop(timeout);
    await Promise.all(all.map((worker) => worker.child.exited));
  }

  killAll(): void {
    for (const worker of this.processes) worker.child.kill('SIGKILL');
  }

  private onMessage(worker: WorkerProcess, message: WorkerMessage): void {
    const { record } = worker;
    switch (message?.type) {
      case 'online':
        if (record.state === 'starting') record.state = 'online';
        this.events.emit('online', record);
        break;
      case 'socket':
        void this.answerSocketRequest(worker, message);
        break;
      case 'listening':
        worker.adopted.add(message.index);
        if (record.state === 'starting' || record.state === 'online') record.state = 'listening';
        this.events.emit('listening', record, message.address);
        if (!this.config.waitReady && worker.adopted.size >= this.sockets.addresses.length) this.markReady(worker);
        break;
      case 'ready':
        this.markReady(worker);
        break;
      case 'stats':
        worker.onStatsReply(message);
        break;
    }
  }

  /** A worker listens on an address it did not inherit: open it (once for all slots) and send the slot's socket. */
  private async answerSocketRequest(worker: WorkerProcess, request: Extract<WorkerMessage, { type: 'socket' }>): Promise<void> {
    debug('primary: worker %d (pid %d) asks for a socket on %s (request %d)', worker.record.id, worker.record.pid, formatAddress(request.host, request.port), request.requestId);
    try {
      const index = await this.sockets.ensureAddress(listenConfig(request.host ?? undefined, request.port, request.ipv6Only, request.backlog), request.zeroPortCall);
      const slot = this.list[worker.record.id];
      const socket = this.sockets.socketsOf(worker.record.id)[index];
      if (!socket || !slot || (slot.worker !== worker && slot.incoming !== worker)) {
        throw preforkError('ERR_PREFORK_NOT_RUNNING', 'Cannot serve a socket to a stopped worker');
      }
      if (!worker.channel.closed) {
        debug('primary: request %d of worker %d answered with %s:%d (fd %d)', request.requestId, worker.record.id, this.sockets.addresses[index].host, this.sockets.addresses[index].port, socket.fd);
        worker.channel.send({ type: 'socket', requestId: request.requestId, socket: this.sockets.describe(index, -1) } satisfies PrimaryMessage, [socket.fd]);
      }
    } catch (cause) {
      const { message, code, errno, syscall } = cause as NodeJS.ErrnoException;
      debug('primary: request %d of worker %d refused: %s', request.requestId, worker.record.id, message);
      if (!worker.channel.closed) {
        worker.channel.send({ type: 'socket-error', requestId: request.requestId, error: { message, code, errno, syscall } } satisfies PrimaryMessage);
      }
    }
  }

  private markReady(worker: WorkerProcess): void {
    if (!worker.markReady()) return;
    debug('primary: worker %d (pid %d) is ready', worker.record.id, worker.record.pid);
    this.events.emit('ready', worker.record);
  }

  private onExit(worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    worker.exited(code, signal);
    this.processes.delete(worker);
    this.events.emit('exit', worker.record, code, signal);

    const slot = this.list[worker.record.id];
    if (!slot || this.stopping) return;
    if (slot.incoming === worker) {
      slot.incoming = null;
      if (slot.worker === null) this.scheduleRestart(slot, worker.record, code, signal);
      return;
    }
    if (slot.worker !== worker) return; // an old generation that drained
    slot.worker = null;
    if (slot.incoming === null) this.scheduleRestart(slot, worker.record, code, signal);
  }

  private scheduleRestart(slot: Slot, old: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    const now = Date.now();
    const decision = decideRestart(this.config.restart, slot.crashes, now - old.startedAt.getTime(), now);
    debug('primary: slot %d exited (%s): %s', slot.id, describeExit(code, signal), decision.action === 'restart' ? `restart in ${decision.delay} ms` : 'give up');
    if (decision.action === 'give-up') {
      const error = preforkError(
        'ERR_PREFORK_CRASH_LOOP',
        `worker slot ${slot.id} exited ${decision.exits} times within ${this.config.restart.window} ms (last exit: ${describeExit(code, signal)}); giving up`,
      );
      this.onGiveUp(slot.id, Object.assign(error, { slot: slot.id, exitCode: code, signal }));
      return;
    }
    slot.crashes = decision.history;
    // A slot down for a while must not keep taking its share of new connections: leave the group now.
    if (decision.delay > 0) this.sockets.leaveGroup(slot.id);
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      this.restart(slot, old, decision.delay).catch((error: Error) => this.onGiveUp(slot.id, error));
    }, decision.delay);
  }

  private async restart(slot: Slot, old: Worker, delay: number): Promise<void> {
    if (this.stopping || !this.has(slot)) return;
    await this.sockets.rejoinGroup(slot.id);
    if (this.stopping || !this.has(slot)) return;
    slot.restarts += 1;
    slot.worker = this.spawn(slot);
    this.events.emit('restart', old, slot.worker.record, delay);
  }
}
