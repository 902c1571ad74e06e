// The primary: owns one listen socket per (address, worker slot), and starts, restarts, reloads, scales and stops workers.
import { EventEmitter } from 'node:events';
import { closeSync, fstatSync } from 'node:fs';
import { isIP } from 'node:net';
import { createChannelPair, ControlChannel } from './channel';
import { preforkError, type ErrorWithCode } from './errors';
import { settleOptions, MAX_WORKERS, type ListenConfig, type SupervisorConfig, type SupervisorOptions } from './options';
import {
  CHANNEL_FD, ENV_CHANNEL_ID, ENV_GENERATION, ENV_LISTEN, ENV_SHUTDOWN_TIMEOUT, ENV_STORE, ENV_WAIT_READY, ENV_WORKER_ID,
  FIRST_LISTEN_FD, STORE_FD,
  type InheritedSocket, type PrimaryMessage, type SocketAddress, type WorkerMessage,
} from './protocol';
import { createListenSocket, type ListenSocket } from './socket';
import type { CounterTable } from './counter-table';
import { CounterStore, createRegion, type CounterStoreOptions } from './store';
import { spawn, type ChildHandle } from './spawn';
import { allowedCpus, tcpMigrateReq } from './system';
import { checkInteger } from './validate';
import { isWorker } from './worker';

export type WorkerState = 'starting' | 'online' | 'listening' | 'ready' | 'stopping' | 'exited';

/** A worker as the supervisor's events and `workers` show it. `state` and `restarts` change as it lives. */
export interface Worker {
  /** The slot, 0 … workers-1. A replacement takes its predecessor's slot (and sockets). */
  readonly id: number;
  readonly pid: number;
  /** 1 for a slot's first worker, +1 for each replacement (restart or reload). */
  readonly generation: number;
  state: WorkerState;
  readonly startedAt: Date;
  /** Restarts of this slot after crashes, before this worker. */
  readonly restarts: number;
}

export interface WorkerStats extends Worker {
  memory: NodeJS.MemoryUsage | null;
  connections: number | null;
}

export interface SupervisorStats {
  sockets: 'reuseport' | 'shared';
  /** Whether the kernel moves a closed listener's queue to its siblings (net.ipv4.tcp_migrate_req); null: unknown. */
  tcpMigrateReq: boolean | null;
  addresses: SocketAddress[];
  restarts: number;
  workers: WorkerStats[];
}

interface ResolvedAddress extends SocketAddress {
  ipv6Only: boolean;
  backlog: number;
  configuredHost: string | null;
  configuredPort: number;
}

/** One running worker process and the supervisor's handles on it. */
class WorkerProcess {
  readonly adopted = new Set<number>();
  readonly ready: Promise<void>;
  resolveReady!: () => void;
  rejectReady!: (error: Error) => void;
  readyTimer: NodeJS.Timeout | undefined;
  killTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly info: Worker,
    readonly child: ChildHandle,
    readonly channel: ControlChannel,
  ) {
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // failures are reported where ready is awaited
  }
}

interface Slot {
  readonly id: number;
  sockets: ListenSocket[]; // one per known address (index as in resolvedAddresses)
  outOfGroup: boolean; // sockets closed while a crash-looping slot waits: it takes no connections
  worker: WorkerProcess | null;
  incoming: WorkerProcess | null; // a reload's replacement, until it is ready
  generation: number;
  restarts: number;
  consecutiveCrashes: number;
  recentRestarts: number[];
  restartTimer: NodeJS.Timeout | null;
}

const HANDLED_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU'] as const;
const STATS_TIMEOUT_MS = 1000;

export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `signal ${signal}`;
  return code === null ? 'no exit (not ready in time)' : `code ${code}`;
}

/**
 * The primary's supervisor. Start it with supervise(options); it emits 'fork', 'online', 'listening',
 * 'ready', 'exit', 'restart', 'giveup', 'reload', 'scale' and 'shutdown'.
 */
export class Supervisor extends EventEmitter {
  readonly config: SupervisorConfig;
  private readonly slots: Slot[] = [];
  private readonly processes = new Set<WorkerProcess>();
  private resolvedAddresses: ResolvedAddress[] = [];
  private sharedSockets: ListenSocket[] = [];
  /** Addresses being opened for a worker's request, by their key: two workers asking for port 0 get one port. */
  private readonly openingAddresses = new Map<string, Promise<number>>();
  /** Every listen socket the primary holds; all closed at the end of a shutdown. */
  private readonly ownedSockets = new Set<ListenSocket>();
  private socketsClosed = false;
  private state: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  private readonly started: Promise<void>;
  private stopped: Promise<void> | null = null;
  private failure: Error | null = null;
  private operations: Promise<unknown> = Promise.resolve();
  private inspectorPortOffset = 0;
  private statsRequests = new Map<number, (reply: Extract<WorkerMessage, { type: 'stats' }>) => void>();
  private nextStatsRequest = 1;
  private readonly signalHandlers = new Map<NodeJS.Signals, () => void>();
  /** The counter store's shared memory, created before any worker and inherited by every one; -1: none. */
  private storeFd = -1;
  private storeTable: CounterTable | null = null;

  constructor(config: SupervisorConfig) {
    super();
    this.config = config;
    if (config.storeCapacity > 0) ({ fd: this.storeFd, table: this.storeTable } = createRegion(config.storeCapacity));
    if (config.signals) this.installSignalHandlers();
    this.started = this.start();
    this.started.catch(() => {}); // reported through ready(), and on stderr when the process exits for it
  }

  /** Resolves when every first worker is ready; rejects (and everything is stopped) if the start fails. */
  ready(): Promise<void> {
    return this.started;
  }

  /** The workers serving now, one per slot (a slot waiting to restart has none). */
  get workers(): Worker[] {
    return this.slots.flatMap((slot) => (slot.worker ? [slot.worker.info] : []));
  }

  /** The addresses the primary listens on, with the ports settled (port 0 becomes the port the kernel chose). */
  get addresses(): SocketAddress[] {
    return this.resolvedAddresses.map(({ host, port, family }) => ({ host, port, family }));
  }

  /** A CounterStore on the counters this supervisor's workers share (to read or reset them from the primary). */
  store(options?: CounterStoreOptions): CounterStore {
    if (!this.storeTable) throw preforkError('ERR_PREFORK_NO_STORE', 'This supervisor shares no counter store (storeCapacity: 0)');
    return new CounterStore(options, this.storeTable);
  }

  /** Rolling reload: slot by slot, a new worker is started and ready before the old one drains. */
  reload(): Promise<void> {
    return this.serialize(async () => {
      for (const slot of [...this.slots]) {
        if (this.state !== 'running') throw this.notRunning('reload');
        if (!this.slots.includes(slot) || slot.outOfGroup || slot.restartTimer) continue; // restarts with the new code anyway
        const old = slot.worker;
        const next = this.spawnWorker(slot);
        slot.incoming = next;
        try {
          await next.ready;
        } catch (cause) {
          if (slot.incoming === next) slot.incoming = null;
          this.requestStop(next, 0);
          // The old worker may have died meanwhile (it left the slot to the incoming one): refill the slot.
          if (slot.worker === null && this.slots[slot.id] === slot && !this.stopRequested()) {
            const { exitCode = null, signal = null } = cause as { exitCode?: number | null; signal?: NodeJS.Signals | null };
            this.scheduleRestart(slot, next.info, exitCode, signal);
          }
          throw Object.assign(
            preforkError('ERR_PREFORK_RELOAD_FAILED', `Reload stopped at worker slot ${slot.id}: ${(cause as Error).message}; the old workers keep serving`),
            { cause },
          );
        }
        slot.incoming = null;
        slot.worker = next;
        if (old) this.requestStop(old, this.config.shutdownTimeout);
      }
      this.emit('reload');
    });
  }

  /** Changes the number of workers. New slots get new sockets; removed slots drain and close theirs. */
  scale(workers: number): Promise<void> {
    checkInteger('workers', workers, 1, MAX_WORKERS);
    return this.serialize(async () => {
      if (this.state !== 'running') throw this.notRunning('scale');
      const from = this.slots.length;
      if (workers > from) {
        const added: WorkerProcess[] = [];
        for (let id = from; id < workers; id++) {
          const slot = this.addSlot(id, await this.openSockets());
          slot.worker = this.spawnWorker(slot);
          added.push(slot.worker);
        }
        await Promise.all(added.map((worker) => worker.ready));
      } else if (workers < from) {
        const removed = this.slots.splice(workers);
        const leaving: WorkerProcess[] = [];
        for (const slot of removed) {
          if (slot.restartTimer) clearTimeout(slot.restartTimer);
          for (const worker of [slot.worker, slot.incoming]) if (worker) leaving.push(worker);
          this.closeSlotSockets(slot); // the worker's own copy keeps serving until it drains
        }
        for (const worker of leaving) this.requestStop(worker, this.config.shutdownTimeout);
        await Promise.all(leaving.map((worker) => worker.child.exited));
      }
      this.emit('scale', from, workers);
    });
  }

  /**
   * Graceful shutdown: workers stop accepting, finish in-flight requests and exit; after `timeout` ms
   * (default: shutdownTimeout) they are SIGKILLed. Then the sockets close and 'shutdown' is emitted.
   */
  shutdown({ timeout = this.config.shutdownTimeout }: { timeout?: number } = {}): Promise<void> {
    checkInteger('timeout', timeout, 0, 2 ** 31 - 1);
    if (this.stopped) return this.stopped;
    this.state = 'stopping';
    this.stopped = (async () => {
      for (const slot of this.slots) if (slot.restartTimer) clearTimeout(slot.restartTimer);
      // Our copies close first: each socket leaves the kernel's balancing when its worker closes its own,
      // so new connections are refused at once instead of waiting in a queue nobody will serve.
      this.socketsClosed = true;
      this.closeSockets([...this.ownedSockets]);
      const all = [...this.processes];
      for (const worker of all) this.requestStop(worker, timeout);
      await Promise.all(all.map((worker) => worker.child.exited));
      if (this.storeFd >= 0) closeSync(this.storeFd);
      this.storeFd = -1;
      this.state = 'stopped';
      // Exiting: the handlers stay until then, so a late SIGTERM cannot kill the primary mid-exit.
      if (!this.config.exitProcess) for (const [signal, handler] of this.signalHandlers) process.off(signal, handler);
      this.emit('shutdown');
      if (this.config.exitProcess) {
        const failure = this.failure as ErrorWithCode | null;
        if (failure) process.stderr.write(`prefork: ${failure.message}${!failure.code || failure.message.includes(failure.code) ? '' : ` (${failure.code})`}\n`);
        // After the promise callbacks: ready()'s rejection reaches its handlers first.
        setImmediate(() => process.exit(failure ? 1 : 0));
      }
    })();
    return this.stopped;
  }

  /** The supervisor's view plus each worker's memory and open connections (asked over the control channel). */
  async stats(): Promise<SupervisorStats> {
    const workers = await Promise.all(
      this.slots.flatMap((slot) => (slot.worker ? [slot.worker] : [])).map((worker) => this.askStats(worker)),
    );
    return {
      sockets: this.config.sockets,
      tcpMigrateReq: tcpMigrateReq(),
      addresses: this.addresses,
      restarts: this.slots.reduce((sum, slot) => sum + slot.restarts, 0),
      workers,
    };
  }

  // ---- start-up ------------------------------------------------------------------------------

  private async start(): Promise<void> {
    try {
      for (let id = 0; id < this.config.workers; id++) this.addSlot(id, []);
      for (const config of this.config.listen) await this.addAddress(config);
      for (const slot of this.slots) slot.worker = this.spawnWorker(slot);
      await Promise.all(this.slots.map((slot) => slot.worker?.ready));
      if (this.state !== 'starting') throw preforkError('ERR_PREFORK_SHUT_DOWN', 'The supervisor was shut down before its workers were ready');
      this.state = 'running';
    } catch (error) {
      if (!this.stopped) this.failure = error as Error; // not a failure when a shutdown was asked for
      await this.shutdown({ timeout: 0 });
      throw error;
    }
  }

  private addSlot(id: number, sockets: ListenSocket[]): Slot {
    const slot: Slot = {
      id, sockets, outOfGroup: false, worker: null, incoming: null, generation: 0, restarts: 0, consecutiveCrashes: 0,
      recentRestarts: [], restartTimer: null,
    };
    this.slots[id] = slot;
    return slot;
  }

  /**
   * A new address, from the `listen` option or a worker's request: its first socket settles the numeric host
   * and, for port 0, the one port every slot shares. Every slot gets its socket now, bound but not listening:
   * each joins the kernel's balancing when its worker listens.
   */
  private async addAddress(config: ListenConfig): Promise<number> {
    const first = await this.openSocket(config.host, config.port, config.ipv6Only);
    const index = this.resolvedAddresses.length;
    this.resolvedAddresses.push({
      host: first.host, port: first.port, family: first.family, ipv6Only: config.ipv6Only, backlog: config.backlog,
      configuredHost: config.host ?? null, configuredPort: config.port,
    });
    if (this.config.sockets === 'shared') this.sharedSockets[index] = first;
    let unused: ListenSocket | null = this.config.sockets === 'shared' ? null : first;
    for (const slot of [...this.slots]) {
      if (slot.outOfGroup || slot.sockets[index] !== undefined) continue; // a closed slot reopens all when it restarts
      if (this.config.sockets === 'shared') slot.sockets[index] = first;
      else if (unused) [slot.sockets[index], unused] = [unused, null];
      else slot.sockets[index] = await this.openSocket(first.host, first.port, config.ipv6Only);
    }
    if (unused) this.closeSockets([unused]);
    return index;
  }

  /** The index of a known address that `host:port` (as a listen() call names it) refers to, or -1. */
  private findAddress(host: string | undefined, port: number): number {
    return this.resolvedAddresses.findIndex(
      (address) =>
        (port === address.configuredPort || port === address.port) &&
        (host === undefined || host === address.configuredHost || host === address.host),
    );
  }

  /** One socket per known address for a new or restarting slot. */
  private async openSockets(): Promise<ListenSocket[]> {
    if (this.config.sockets === 'shared') return [...this.sharedSockets];
    const sockets: ListenSocket[] = [];
    for (const address of this.resolvedAddresses) sockets.push(await this.openSocket(address.host, address.port, address.ipv6Only));
    return sockets;
  }

  private async openSocket(host: string | undefined, port: number, ipv6Only: boolean): Promise<ListenSocket> {
    const socket = await createListenSocket({ host, port, ipv6Only, listen: false });
    if (this.socketsClosed) {
      closeSync(socket.fd); // the shutdown already closed the others
      throw this.notRunning('open a socket');
    }
    this.ownedSockets.add(socket);
    return socket;
  }

  private closeSlotSockets(slot: Slot): void {
    if (this.config.sockets === 'reuseport') this.closeSockets(slot.sockets);
    slot.sockets = [];
    slot.outOfGroup = true;
  }

  private closeSockets(sockets: ListenSocket[]): void {
    for (const socket of sockets) {
      if (this.ownedSockets.delete(socket)) closeSync(socket.fd);
    }
  }

  // ---- workers -------------------------------------------------------------------------------

  private spawnWorker(slot: Slot): WorkerProcess {
    if (this.stopRequested()) throw this.notRunning('start a worker'); // a shutdown collects only the workers it saw
    slot.generation += 1;
    const inherited = slot.sockets.map((socket, i) => this.describeSocket(i, FIRST_LISTEN_FD + i));
    const fds: Record<number, number> = {};
    slot.sockets.forEach((socket, i) => (fds[FIRST_LISTEN_FD + i] = socket.fd));
    const [ours, theirs] = createChannelPair();
    fds[CHANNEL_FD] = theirs;
    if (this.storeFd >= 0) fds[STORE_FD] = this.storeFd;
    let child: ChildHandle;
    try {
      const cpus = this.config.cpuAffinity ? allowedCpus() : [];
      child = spawn({
        file: process.execPath,
        args: [process.execPath, ...this.workerExecArgv(), this.config.script, ...this.config.args],
        env: {
          ...this.config.env,
          [ENV_WORKER_ID]: String(slot.id),
          [ENV_GENERATION]: String(slot.generation),
          [ENV_LISTEN]: JSON.stringify(inherited),
          [ENV_SHUTDOWN_TIMEOUT]: String(this.config.shutdownTimeout),
          [ENV_WAIT_READY]: this.config.waitReady ? '1' : '0',
          [ENV_CHANNEL_ID]: String(fstatSync(theirs).ino),
          ...(this.storeFd >= 0 ? { [ENV_STORE]: String(this.config.storeCapacity) } : {}),
          NODE_APP_INSTANCE: String(slot.id), // PM2's name for the same thing
        },
        cwd: this.config.cwd,
        fds,
        uid: this.config.uid,
        gid: this.config.gid,
        cpus: cpus.length > 0 ? [cpus[slot.id % cpus.length]] : undefined,
        // Catchable, so an orphaned worker drains like on a shutdown request (the channel's EOF says the same).
        deathSignal: 'SIGTERM',
      });
    } catch (error) {
      closeSync(ours);
      throw error;
    } finally {
      closeSync(theirs);
    }
    const info: Worker = { id: slot.id, pid: child.pid, generation: slot.generation, state: 'starting', startedAt: new Date(), restarts: slot.restarts };
    const worker = new WorkerProcess(info, child, new ControlChannel(ours));
    this.processes.add(worker);
    worker.channel.on('message', (message: WorkerMessage, received: number[]) => {
      for (const fd of received) closeSync(fd); // workers send no fds to the primary
      this.onMessage(worker, message);
    });
    worker.channel.on('error', () => worker.channel.close());
    child.once('exit', (code: number | null, signal: NodeJS.Signals | null) => this.onExit(worker, code, signal));
    if (this.config.readyTimeout > 0) {
      worker.readyTimer = setTimeout(() => {
        worker.rejectReady(
          preforkError('ERR_PREFORK_READY_TIMEOUT', `worker ${slot.id} (pid ${child.pid}) was not ready within ${this.config.readyTimeout} ms`),
        );
        this.requestStop(worker, 0);
      }, this.config.readyTimeout);
    }
    this.emit('fork', info);
    return worker;
  }

  private describeSocket(index: number, fd: number): InheritedSocket {
    const { host, port, family, backlog, configuredHost, configuredPort } = this.resolvedAddresses[index];
    return { index, host, port, family, fd, backlog, configuredHost, configuredPort };
  }

  /** A worker listens on an address it did not inherit: open it (once for all slots) and send the slot's socket. */
  private async answerSocketRequest(worker: WorkerProcess, request: Extract<WorkerMessage, { type: 'socket' }>): Promise<void> {
    try {
      let index = this.findAddress(request.host ?? undefined, request.port);
      if (index < 0) {
        const key = `${request.host ?? ''}|${request.port}|${request.ipv6Only}`;
        let opening = this.openingAddresses.get(key);
        if (!opening) {
          const label = `${request.host === null ? '' : isIP(request.host) === 6 ? `[${request.host}]` : request.host}:${request.port}`;
          opening = this.addAddress({ host: request.host ?? undefined, port: request.port, ipv6Only: request.ipv6Only, backlog: request.backlog, label });
          this.openingAddresses.set(key, opening);
          opening.catch(() => {}).finally(() => this.openingAddresses.delete(key));
        }
        index = await opening;
      }
      const slot = this.slots[worker.info.id];
      const socket = slot?.sockets[index];
      if (!socket || (slot.worker !== worker && slot.incoming !== worker)) throw this.notRunning('serve a socket to a stopped worker');
      if (!worker.channel.closed) {
        worker.channel.send({ type: 'socket', requestId: request.requestId, socket: this.describeSocket(index, -1) } satisfies PrimaryMessage, [socket.fd]);
      }
    } catch (cause) {
      const { message, code, errno, syscall } = cause as NodeJS.ErrnoException;
      if (!worker.channel.closed) {
        worker.channel.send({ type: 'socket-error', requestId: request.requestId, error: { message, code, errno, syscall } } satisfies PrimaryMessage);
      }
    }
  }

  /** As node:cluster does: with an inspector in execArgv, each worker gets its own port, counting up from ours. */
  private workerExecArgv(): string[] {
    const execArgv = this.config.execArgv;
    if (!execArgv.some((arg) => /^--inspect(-brk|-wait)?(=|$)/.test(arg))) return execArgv;
    let host = '';
    for (const arg of execArgv) {
      const value = /^--inspect(?:-brk|-wait|-port)?=(.+)$/.exec(arg)?.[1];
      if (value?.includes(':')) host = `${value.slice(0, value.lastIndexOf(':'))}:`;
      else if (value !== undefined && !/^\d+$/.test(value)) host = `${value}:`;
    }
    const base = process.debugPort;
    this.inspectorPortOffset += 1;
    const port = base === 0 ? 0 : ((base + this.inspectorPortOffset - 1024) % (65536 - 1024)) + 1024;
    return [...execArgv, `--inspect-port=${host}${port}`];
  }

  private onMessage(worker: WorkerProcess, message: WorkerMessage): void {
    const { info } = worker;
    switch (message?.type) {
      case 'online':
        if (info.state === 'starting') info.state = 'online';
        this.emit('online', info);
        break;
      case 'socket':
        void this.answerSocketRequest(worker, message);
        break;
      case 'listening':
        worker.adopted.add(message.index);
        if (info.state === 'starting' || info.state === 'online') info.state = 'listening';
        this.emit('listening', info, message.address);
        if (!this.config.waitReady && worker.adopted.size >= this.resolvedAddresses.length) this.markReady(worker);
        break;
      case 'ready':
        this.markReady(worker);
        break;
      case 'stats':
        this.statsRequests.get(message.requestId)?.(message);
        break;
    }
  }

  private markReady(worker: WorkerProcess): void {
    const { info } = worker;
    if (info.state === 'ready' || info.state === 'stopping' || info.state === 'exited') return;
    info.state = 'ready';
    clearTimeout(worker.readyTimer);
    worker.resolveReady();
    this.emit('ready', info);
  }

  private onExit(worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const { info } = worker;
    info.state = 'exited';
    clearTimeout(worker.readyTimer);
    clearTimeout(worker.killTimer);
    worker.channel.close();
    this.processes.delete(worker);
    const early = preforkError('ERR_PREFORK_WORKER_EXIT', `worker ${info.id} (pid ${info.pid}) exited with ${describeExit(code, signal)} before it was ready`);
    worker.rejectReady(Object.assign(early, { exitCode: code, signal })); // no effect once it was ready
    this.emit('exit', info, code, signal);

    const slot = this.slots[info.id];
    if (!slot || this.stopRequested()) return;
    if (slot.incoming === worker) {
      slot.incoming = null;
      if (slot.worker === null) this.scheduleRestart(slot, info, code, signal);
      return;
    }
    if (slot.worker !== worker) return; // an old generation that drained
    slot.worker = null;
    if (slot.incoming === null) this.scheduleRestart(slot, info, code, signal);
  }

  /** First crash after a stable run: at once, on the same sockets (queued connections get served). Then backoff. */
  private scheduleRestart(slot: Slot, old: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    const policy = this.config.restart;
    const now = Date.now();
    if (now - old.startedAt.getTime() >= policy.resetAfter) slot.consecutiveCrashes = 0;
    slot.recentRestarts = slot.recentRestarts.filter((time) => now - time < policy.window);
    if (slot.recentRestarts.length >= policy.maxRestarts) {
      const error = preforkError(
        'ERR_PREFORK_CRASH_LOOP',
        `worker slot ${slot.id} exited ${slot.recentRestarts.length + 1} times within ${policy.window} ms ` +
          `(last exit: ${describeExit(code, signal)}); giving up`,
      );
      this.giveUp(slot, Object.assign(error, { slot: slot.id, exitCode: code, signal }));
      return;
    }
    slot.recentRestarts.push(now);
    slot.consecutiveCrashes += 1;
    const delay = slot.consecutiveCrashes === 1 ? 0 : Math.min(policy.maxDelay, policy.delay * policy.factor ** (slot.consecutiveCrashes - 2));
    // A slot down for a while must not keep taking its share of new connections: leave the group now.
    if (delay > 0) this.closeSlotSockets(slot);
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      this.restartSlot(slot, old, delay).catch((error: Error) => this.giveUp(slot, error as ErrorWithCode));
    }, delay);
  }

  private async restartSlot(slot: Slot, old: Worker, delay: number): Promise<void> {
    if (this.stopRequested() || this.slots[slot.id] !== slot) return;
    if (slot.outOfGroup) {
      const sockets = await this.openSockets();
      if (this.stopRequested() || this.slots[slot.id] !== slot) return this.closeSockets(sockets);
      slot.sockets = sockets;
      slot.outOfGroup = false;
    }
    slot.restarts += 1;
    slot.worker = this.spawnWorker(slot);
    this.emit('restart', old, slot.worker.info, delay);
  }

  private giveUp(slot: Slot, error: Error): void {
    this.emit('giveup', slot.id, error);
    this.failure ??= error;
    void this.shutdown();
  }

  /** Asks a worker to drain and exit; SIGKILL after `timeout` ms (0: at once). */
  private requestStop(worker: WorkerProcess, timeout: number): void {
    const { info } = worker;
    if (info.state === 'exited') return;
    clearTimeout(worker.readyTimer);
    const wasOnline = info.state !== 'starting';
    info.state = 'stopping';
    if (timeout === 0) {
      worker.child.kill('SIGKILL');
      return;
    }
    if (wasOnline && !worker.channel.closed) worker.channel.send({ type: 'shutdown', timeout } satisfies PrimaryMessage);
    else worker.child.kill('SIGTERM'); // prefork is not loaded there yet: the default action ends it
    if (worker.killTimer === undefined) worker.killTimer = setTimeout(() => worker.child.kill('SIGKILL'), timeout);
  }

  private askStats(worker: WorkerProcess): Promise<WorkerStats> {
    const requestId = this.nextStatsRequest++;
    return new Promise((resolve) => {
      const done = (reply?: Extract<WorkerMessage, { type: 'stats' }>) => {
        clearTimeout(timer);
        this.statsRequests.delete(requestId);
        resolve({ ...worker.info, memory: reply?.memory ?? null, connections: reply?.connections ?? null });
      };
      const timer = setTimeout(done, STATS_TIMEOUT_MS);
      this.statsRequests.set(requestId, done);
      if (worker.channel.closed) done();
      else worker.channel.send({ type: 'stats', requestId } satisfies PrimaryMessage);
    });
  }

  // ---- plumbing ------------------------------------------------------------------------------

  /** Reload and scale run one at a time, in the order asked. */
  private serialize<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.operations.then(async () => {
      await this.started;
      return operation();
    });
    this.operations = run.catch(() => {});
    return run;
  }

  private stopRequested(): boolean {
    return this.stopped !== null;
  }

  private notRunning(what: string): Error {
    return preforkError('ERR_PREFORK_NOT_RUNNING', `Cannot ${what}: the supervisor is ${this.state}`);
  }

  private installSignalHandlers(): void {
    const report = (error: Error) => process.stderr.write(`prefork: ${error.message}\n`);
    const handlers: Record<(typeof HANDLED_SIGNALS)[number], () => void> = {
      SIGTERM: () => void this.shutdown(),
      // A second Ctrl-C does not wait for in-flight requests.
      SIGINT: () => (this.stopped ? this.killAll() : void this.shutdown()),
      SIGHUP: () => void this.reload().catch(report),
      SIGTTIN: () => void this.scale(Math.min(MAX_WORKERS, this.slots.length + 1)).catch(report),
      SIGTTOU: () => void (this.slots.length > 1 ? this.scale(this.slots.length - 1).catch(report) : undefined),
    };
    for (const signal of HANDLED_SIGNALS) {
      process.on(signal, handlers[signal]);
      this.signalHandlers.set(signal, handlers[signal]);
    }
  }

  private killAll(): void {
    for (const worker of this.processes) worker.child.kill('SIGKILL');
  }
}

/** Starts a primary's supervisor. Validation errors throw here, before anything is created. */
export function supervise(options: SupervisorOptions = {}): Supervisor {
  if (isWorker()) throw preforkError('ERR_PREFORK_IN_WORKER', 'supervise() was called in a worker; call it only where isPrimary() is true');
  return new Supervisor(settleOptions(options));
}
