// The worker slots: which process serves each slot, what its messages mean, and its restart after a crash.
import { closeSync } from 'node:fs';
import { debug } from '../debug';
import { preforkError } from '../errors';
import { SIGNAL_RESTART_DELAY_MS } from '../limits';
import type { WorkerMessage } from '../protocol/messages';
import type { SupervisorConfig } from './options';
import { decideRestart, NO_CRASHES, type CrashHistory } from './restart-policy';
import type { ActivatedSocket } from './socket-activation';
import { SocketRequests } from './socket-requests';
import type { Supervisor } from './supervisor';
import type { Handover } from './upgrade';
import { SocketTable } from './socket-table';
import { createSteering, STUCK_AFTER_MS, type Steering } from './steering';
import { monotonicMs } from '../protocol/liveness-record';
import { inspectorExecArgv, startWorkerProcess } from './worker-launch';
import { describeExit, withSend, type ExitReason, type Worker, type WorkerProcess } from './worker-process';
import { channelClosed, decodeAppMessage, encodeAppMessage, sendCallback } from '../protocol/app-messages';
import { checkWorkerMessage } from './worker-messages';
import { ConnectionHandovers } from './handovers';

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
  /** Sets each reuseport group's program (the `balance` option); null where the kernel hashes on its own. */
  readonly steering: Steering | null;
  /** Every live worker process by its record, a slot's incoming and draining old generations included. */
  private readonly processes = new Map<Worker, WorkerProcess>();
  private stopping = false;
  private workersStarted = 0;
  /** Answers a worker's listen() on an address it did not inherit. */
  private readonly socketRequests: SocketRequests;
  /** Forwards a connection a worker hands over to the worker owning its engine.io session. */
  private readonly handovers: ConnectionHandovers;

  constructor(
    private readonly config: SupervisorConfig,
    private readonly events: Pick<Supervisor, 'emit' | 'listenerCount'>,
    private readonly storeFd: number,
    private readonly onGiveUp: (slot: number, error: Error) => void,
    activated: ActivatedSocket[] = [],
    handover: Handover | null = null,
  ) {
    // Handed unsteered sockets, we cannot know their groups' order: the kernel's hash, as the old primary had it.
    this.steering = handover && !handover.steered ? null : createSteering(config.balance, config.sockets, {
      slotCount: () => this.list.length,
      serving: (slot, address) => this.serving(slot, address),
    });
    this.sockets = new SocketTable(config.sockets, activated, this.steering);
    if (handover) this.sockets.adoptHandover(handover);
    this.steering?.start();
    this.socketRequests = new SocketRequests(config, this.sockets, (worker) => {
      const slot = this.list[worker.record.id];
      return slot !== undefined && (slot.worker === worker || slot.incoming === worker);
    });
    // During a reload the slot's incoming worker makes the slot's new sessions; the old one's are about to end.
    this.handovers = new ConnectionHandovers(this.sockets, (id, address) => {
      const slot = this.list[id];
      return [slot?.incoming, slot?.worker].find((worker): worker is WorkerProcess =>
        !!worker && worker.record.exitReason === null && worker.record.state !== 'exited' && worker.adopted.has(address)) ?? null;
    }, (worker, problem) => this.misbehaved(worker, problem));
  }

  /**
   * Whether the slot's worker takes new connections on the address: it is ready, listens there, is not being
   * stopped, and (unless heartbeats are off) its event loop turned within STUCK_AFTER_MS.
   */
  serving(id: number, address: number): boolean {
    const worker = this.list[id]?.worker;
    if (!worker || worker.record.state !== 'ready' || worker.record.exitReason !== null || !worker.adopted.has(address)) return false;
    if (this.config.heartbeatTimeout === 0) return true;
    const { beatAt } = worker.liveness.read();
    return beatAt === 0 || monotonicMs() - beatAt <= STUCK_AFTER_MS;
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
      const workers = [slot.worker, slot.incoming].filter((worker): worker is WorkerProcess => worker !== null);
      leaving.push(...workers);
      this.sockets.removeSlot(slot.id, Promise.all(workers.map((worker) => worker.child.exited)));
    }
    return leaving;
  }

  /** Whether `slot` is still one of the slots (not removed by scaling down). */
  has(slot: Slot): boolean {
    return this.list[slot.id] === slot;
  }

  /**
   * Starts a worker for the slot; if it cannot be started (EAGAIN under a pids limit, EMFILE, ENOMEM), that
   * counts as a crash of the slot: 'spawnfailed', then a restart with backoff. The other slots keep serving.
   */
  fill(slot: Slot, replaced: ExitReason | null): WorkerProcess | null {
    try {
      return this.spawn(slot, replaced);
    } catch (error) {
      if (this.stopping) throw error;
      const never: Worker = withSend({
        id: slot.id, pid: 0, generation: slot.generation, state: 'exited', startedAt: new Date(), restarts: slot.restarts, replaced, exitReason: 'crash',
      }, (message, ...args) => {
        const callback = sendCallback('worker.send()', args);
        encodeAppMessage(message, this.config.serialization); // throws as for a live worker
        if (callback) process.nextTick(callback, channelClosed());
        return false;
      });
      this.ensureServing(slot, never, null, null); // settled first (out of the group if it backs off), then told
      this.events.emit('spawnfailed', slot.id, error as Error);
      return null;
    }
  }

  /** Starts a worker for the slot on its sockets (`replaced`: why its predecessor left); throws if it cannot be started. */
  spawn(slot: Slot, replaced: ExitReason | null): WorkerProcess {
    if (this.stopping) throw preforkError('ERR_PREFORK_NOT_RUNNING', 'Cannot start a worker: the supervisor is stopping');
    slot.generation += 1;
    const worker = startWorkerProcess({
      slot: slot.id,
      generation: slot.generation,
      restarts: slot.restarts,
      sockets: this.sockets.socketsOf(slot.id).map((socket, index) => ({ fd: socket.fd, describe: (fd) => this.sockets.describe(index, fd) })),
      storeFd: this.storeFd,
      replaced,
      execArgv: inspectorExecArgv(this.config.execArgv, ++this.workersStarted),
      config: this.config,
    });
    this.processes.set(worker.record, worker);
    // The channel takes at most one fd per frame, and only a handover may carry it.
    worker.channel.on('message', (message: unknown, fds: number[]) => {
      const checked = checkWorkerMessage(message);
      if ('problem' in checked || (fds.length > 0 && checked.message.type !== 'handover')) {
        for (const fd of fds) closeSync(fd);
        this.misbehaved(worker, 'problem' in checked ? checked.problem : `an fd with a '${checked.message.type}' message`);
      } else if (checked.message.type === 'handover') this.handovers.forward(worker, checked.message, fds);
      else this.onMessage(worker, checked.message);
    });
    worker.channel.on('error', (error: Error) => this.misbehaved(worker, error.message));
    worker.child.once('exit', (code: number | null, signal: NodeJS.Signals | null) => this.onExit(worker, code, signal));
    this.events.emit('fork', worker.record);
    return worker;
  }

  /**
   * The one place a slot without a worker gets one again: after an exit, a failed spawn, or a reload whose
   * replacement failed. It does nothing while the slot has a worker, an incoming one, or a restart pending, so
   * two handlers seeing the same loss cannot start two replacements.
   */
  ensureServing(slot: Slot, old: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping || !this.has(slot) || slot.worker !== null || slot.incoming !== null || slot.restartTimer !== null) return;
    this.scheduleRestart(slot, old, code, signal);
  }

  /** Stops every worker (SIGKILL after `timeout` ms) and closes every socket; resolves when all are reaped. */
  async stopAll(timeout: number): Promise<void> {
    this.stopping = true;
    for (const slot of this.list) if (slot.restartTimer) clearTimeout(slot.restartTimer);
    // Our copies close first: each socket leaves the kernel's balancing when its worker closes its own,
    // so new connections are refused at once instead of waiting in a queue nobody will serve.
    this.sockets.closeAll();
    const all = [...this.processes.values()];
    for (const worker of all) worker.requestStop(timeout, 'shutdown');
    await Promise.all(all.map((worker) => worker.child.exited));
  }

  /** Every live worker process: serving, a reload's incoming one, and old ones still draining. */
  live(): WorkerProcess[] {
    return [...this.processes.values()];
  }

  /** The live process of a worker record (what the events carry); undefined once it exited. */
  processOf(record: Worker): WorkerProcess | undefined {
    return this.processes.get(record);
  }

  killAll(): void {
    for (const worker of this.processes.values()) worker.child.kill('SIGKILL');
  }

  /**
   * A worker whose event loop has not turned for `since` ms: it cannot drain, so it is killed at once, and its
   * replacement starts on the slot's socket and serves what is queued there. Only what it had accepted is lost.
   */
  unresponsive(worker: WorkerProcess, since: number): void {
    if (worker.record.state === 'exited' || worker.record.exitReason !== null) return;
    const { id, pid } = worker.record;
    process.stderr.write(`prefork: worker ${id} (pid ${pid}) is unresponsive: its event loop has not turned for ${since} ms (heartbeatTimeout ${this.config.heartbeatTimeout}); killing it\n`);
    this.events.emit('unresponsive', worker.record, since);
    worker.kill('unresponsive');
    this.steering?.refreshSoon();
  }

  private onMessage(worker: WorkerProcess, message: WorkerMessage): void {
    const { record } = worker;
    switch (message?.type) {
      case 'online':
        if (record.state === 'starting') record.state = 'online';
        this.events.emit('online', record);
        break;
      case 'socket':
        void this.socketRequests.answer(worker, message);
        break;
      case 'listening':
      case 'abandoned': {
        const address = this.sockets.addresses[message.index];
        if (!address) return this.misbehaved(worker, `'${message.type}' on address ${message.index}, which it was never given`);
        worker.settled.add(message.index);
        if (message.type === 'listening') {
          worker.adopted.add(message.index);
          this.steering?.refreshSoon();
          if (record.state === 'starting' || record.state === 'online') record.state = 'listening';
          this.events.emit('listening', record, { host: address.host, port: address.port, family: address.family });
        }
        if (!this.config.waitReady && worker.settled.size >= this.sockets.addresses.length) this.markReady(worker);
        break;
      }
      case 'ready':
        this.markReady(worker);
        break;
      case 'stopping':
        worker.stoppingOnSignal();
        this.steering?.refreshSoon();
        break;
      case 'stats':
        worker.onStatsReply(message);
        break;
      case 'metrics': {
        const problem = worker.onMetricsPart(message);
        if (problem) this.misbehaved(worker, problem);
        break;
      }
      case 'message': {
        // Decoded only for a listener (v8 data is untrusted); unheard, it is dropped, as node:cluster drops it.
        if (this.events.listenerCount('message') === 0) break;
        const decoded = decodeAppMessage(message);
        if ('problem' in decoded) return this.misbehaved(worker, decoded.problem);
        this.events.emit('message', record, decoded.value);
        break;
      }
    }
  }

  /** A worker broke the protocol: it is killed (and replaced, as after a crash); the primary carries on. */
  misbehaved(worker: WorkerProcess, problem: string): void {
    if (worker.record.state === 'exited') return;
    process.stderr.write(`prefork: worker ${worker.record.id} (pid ${worker.record.pid}) broke the control protocol (${problem}); killing it\n`);
    worker.kill('protocol'); // before the channel's EOF, which would have it drain and exit 0 like a clean stop
    worker.channel.close();
    this.steering?.refreshSoon();
  }

  private markReady(worker: WorkerProcess): void {
    if (!worker.markReady()) return;
    debug('primary: worker %d (pid %d) is ready', worker.record.id, worker.record.pid);
    this.steering?.refreshSoon();
    this.events.emit('ready', worker.record);
  }

  private onExit(worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    worker.exited(code, signal);
    this.processes.delete(worker.record);
    this.steering?.refreshSoon();
    this.events.emit('exit', worker.record, code, signal, worker.record.exitReason);

    const slot = this.list[worker.record.id];
    if (!slot) return;
    if (slot.incoming === worker) slot.incoming = null;
    else if (slot.worker === worker) slot.worker = null;
    else return; // an old generation that drained
    this.ensureServing(slot, worker.record, code, signal);
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
    // A signal sent to a process group (Ctrl-C, systemd) reaches this primary too, perhaps a little after the
    // worker finished: no replacement that its stop would only stop again. The socket stays in the group meanwhile.
    const delay = old.exitReason === 'signal' ? Math.max(decision.delay, SIGNAL_RESTART_DELAY_MS) : decision.delay;
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      this.restart(slot, old, delay).catch((error: Error) => this.onGiveUp(slot.id, error));
    }, delay);
  }

  private async restart(slot: Slot, old: Worker, delay: number): Promise<void> {
    await this.steering?.joinsAllowed(); // not while an upgrade shares the groups
    if (this.stopping || !this.has(slot)) return;
    await this.sockets.rejoinGroup(slot.id);
    if (this.stopping || !this.has(slot) || slot.worker !== null) return;
    slot.restarts += 1;
    const reason = old.exitReason ?? 'crash';
    slot.worker = this.fill(slot, reason);
    if (slot.worker) this.events.emit('restart', old, slot.worker.record, delay, reason);
  }
}
