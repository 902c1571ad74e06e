// The primary's supervisor, the public class: start, reload, scale, shutdown, stats and its events.
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { platformSupported, unsupportedPlatformError } from '../core/binding';
import { tcpMigrateReq } from '../core/system';
import { preforkError, type ErrorWithCode } from '../errors';
import { MAX_TIMEOUT_MS, MAX_WORKERS } from '../limits';
import type { SocketAddress } from '../protocol/messages';
import type { CounterTable } from '../store/counter-table';
import { adoptRegion, CounterStore, createRegion, type CounterStoreOptions } from '../store/counter-store';
import { checkInteger } from '../validate';
import { listenConfig } from '../protocol/address';
import { monotonicMs } from '../protocol/liveness-record';
import { settleOptions, type SupervisorConfig, type SupervisorOptions } from './options';
import { LivenessMonitor, type RecycleLimit } from './liveness';
import { SupervisorMetrics } from './metrics';
import type { MetricsEndpoint } from './metrics-endpoint';
import { reapOrphans } from './orphan-reaper';
import { removePidFile, writePidFile } from './pid-file';
import { handleSignals } from './signals';
import { takeActivatedSockets, type ActivatedSocket } from './socket-activation';
import { SystemdNotifier } from './systemd-notify';
import type { BalanceMode } from './steering';
import { launchSuccessor, Predecessor, takeHandover, type Handover, type Successor, type UpgradeMessage } from './upgrade';
import { WorkerSlots, type Slot } from './slots';
import { describeExit, type ExitReason, type Worker, type WorkerProcess, type WorkerStats } from './worker-process';
import { isWorker } from '../worker/context';
import type { SupervisorEvent, SupervisorEvents, SupervisorListener } from './events';

export type { ExitReason, Worker, WorkerState, WorkerStats } from './worker-process';
export type { SupervisorEvent, SupervisorEvents, SupervisorListener, UpgradeEvent } from './events';
export type { RecycleLimit } from './liveness';
export { describeExit } from './worker-process';

export interface SupervisorStats {
  sockets: 'reuseport' | 'shared';
  /** Whether the kernel moves a closed listener's queue to its siblings (net.ipv4.tcp_migrate_req); null: unknown. */
  tcpMigrateReq: boolean | null;
  addresses: SocketAddress[];
  restarts: number;
  workers: WorkerStats[];
  /** The `balance` mode asked for, and whether the primary steers (false: the kernel's hash alone, see the log). */
  balance: { mode: BalanceMode; steered: boolean };
  /** Per slot: requests its workers served so far, and the share of new connections steered to it now (null: unsteered). */
  slots: Array<{ slot: number; requests: number; steeringShare: number | null }>;
}

/** Its EventEmitter methods, typed by SupervisorEvents (events.ts): a misspelt event or a wrong listener does not compile. */
export interface Supervisor {
  on<E extends SupervisorEvent>(event: E, listener: SupervisorListener<E>): this;
  once<E extends SupervisorEvent>(event: E, listener: SupervisorListener<E>): this;
  off<E extends SupervisorEvent>(event: E, listener: SupervisorListener<E>): this;
  addListener<E extends SupervisorEvent>(event: E, listener: SupervisorListener<E>): this;
  removeListener<E extends SupervisorEvent>(event: E, listener: SupervisorListener<E>): this;
  prependListener<E extends SupervisorEvent>(event: E, listener: SupervisorListener<E>): this;
  prependOnceListener<E extends SupervisorEvent>(event: E, listener: SupervisorListener<E>): this;
  emit<E extends SupervisorEvent>(event: E, ...args: SupervisorEvents[E]): boolean;
}

/**
 * The primary's supervisor. Start it with supervise(options); it emits the events SupervisorEvents lists: 'fork',
 * 'online', 'listening', 'ready', 'exit', 'restart', 'spawnfailed', 'unresponsive', 'recycle', 'giveup', 'reload',
 * 'scale', 'upgrade' and 'shutdown'.
 */
export class Supervisor extends EventEmitter {
  readonly config: SupervisorConfig;
  private readonly slots: WorkerSlots;
  private state: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  private readonly started: Promise<void>;
  private stopped: Promise<void> | null = null;
  private failure: Error | null = null;
  private operations: Promise<unknown> = Promise.resolve();
  /** Ends a reload's unbounded wait for readiness (readyTimeout 0) when another operation is asked for. */
  private supersede: (() => void) | null = null;
  private removeSignalHandlers: (() => void) | null = null;
  /** The counter store's shared memory, created before any worker and inherited by every one; -1: none. */
  private storeFd = -1;
  private storeTable: CounterTable | null = null;
  private readonly liveness: LivenessMonitor;
  private readonly metricsSource: SupervisorMetrics;
  private readonly metricsEndpoint: MetricsEndpoint | null;
  private readonly systemd = SystemdNotifier.fromEnvironment();
  private stopReaping: (() => void) | null = null;
  /** Workers whose recycling is queued or running: reported again on every check, queued once. */
  private readonly recycling = new Set<WorkerProcess>();
  /** After a failed recycling, when the worker may be tried again (monotonic ms). */
  private readonly recycleRetryAt = new WeakMap<WorkerProcess, number>();
  /** The old primary, when this one was started by a hot upgrade and has not taken over yet. */
  private readonly predecessor: Predecessor | null = null;
  /** An upgrade() asked for and not settled yet. */
  private upgrading = false;
  /** The new primary of an upgrade that took over: our exit must not touch what is now its own. */
  private successor: Successor | null = null;
  /** Ends a wait on the other primary of an upgrade (its readiness, or its commit) when we shut down meanwhile. */
  private endUpgradeWait: (() => void) | null = null;

  /**
   * `activated`: the sockets systemd handed over (socket activation); `handover`: what the old primary of a hot
   * upgrade handed over. Both taken by supervise().
   */
  constructor(config: SupervisorConfig, activated: ActivatedSocket[] = [], handover: Handover | null = null) {
    super();
    this.config = config;
    this.openStore(handover);
    this.slots = new WorkerSlots(config, this, this.storeFd, (slot, error) => this.giveUp(slot, error), activated, handover);
    if (handover) {
      // Until the old primary is gone, it holds copies of these sockets; until it steps aside, it steers.
      this.predecessor = new Predecessor(handover);
      this.slots.steering?.shareWithPeer(this.predecessor.gone, { blockJoins: false });
      this.slots.steering?.setAuthority(false);
    }
    this.liveness = new LivenessMonitor(config.heartbeatTimeout, config.recycle, () => this.slots.list.flatMap((slot) => (slot.worker ? [slot.worker] : [])), {
      unresponsive: (worker, since) => this.slots.unresponsive(worker, since),
      misbehaved: (worker, problem) => this.slots.misbehaved(worker, problem),
      recycle: (worker, limit) => this.recycle(worker, limit),
    });
    this.metricsSource = new SupervisorMetrics(config, this.slots);
    this.slots.onWorkerExit = (worker) => this.metricsSource.exited(worker);
    this.on('fork', (worker: Worker) => this.metricsSource.started(worker));
    this.on('reload', () => this.metricsSource.reloaded());
    // Required only when configured: the endpoint is the primary's one use of node:http.
    this.metricsEndpoint = config.metrics ? new (require('./metrics-endpoint') as typeof import('./metrics-endpoint')).MetricsEndpoint(config.metrics, () => this.metrics()) : null;
    if (this.systemd) {
      for (const event of ['restart', 'unresponsive', 'recycle', 'scale', 'giveup'] as const) this.on(event, () => this.systemd?.status(this.statusLine()));
    }
    if (config.signals) this.removeSignalHandlers = handleSignals(this);
    this.started = this.start();
    this.started.catch(() => {}); // reported through ready(), and on stderr when the process exits for it
  }

  /** Resolves when every first worker is ready; rejects (and everything is stopped) if the start fails. */
  ready(): Promise<void> {
    return this.started;
  }

  /** The workers serving now, one per slot (a slot waiting to restart has none). */
  get workers(): Worker[] {
    return this.slots.list.flatMap((slot) => (slot.worker ? [slot.worker.record] : []));
  }

  /** How many slots there are (a slot waiting to restart counts). */
  get workerCount(): number {
    return this.slots.list.length;
  }

  get shuttingDown(): boolean {
    return this.stopped !== null;
  }

  /** The addresses the primary listens on, with the ports settled (port 0 becomes the port the kernel chose). */
  get addresses(): SocketAddress[] {
    return this.slots.sockets.addresses.map(({ host, port, family }) => ({ host, port, family }));
  }

  /** Where the metrics endpoint listens (`metrics` option; port 0 settled), or null. */
  get metricsAddress(): { host: string; port: number; url: string } | null {
    return this.metricsEndpoint?.address ?? null;
  }

  /**
   * Prometheus text: the supervisor's prefork_* metrics and the workers' prom-client metrics merged (what the
   * `metrics` endpoint serves), for a framework that serves it itself.
   */
  metrics(): Promise<string> {
    return this.metricsSource.render();
  }

  /** A CounterStore on the counters this supervisor's workers share (to read or reset them from the primary). */
  store(options?: CounterStoreOptions): CounterStore {
    if (!this.storeTable) throw preforkError('ERR_PREFORK_NO_STORE', 'This supervisor shares no counter store (storeCapacity: 0)');
    return new CounterStore(options, this.storeTable);
  }

  /** Rolling reload: slot by slot, a new worker is started and ready before the old one drains. */
  reload(): Promise<void> {
    return this.serialize(async () => {
      this.systemd?.reloading();
      try {
        for (const slot of [...this.slots.list]) {
          if (this.state !== 'running') throw this.notRunning('reload');
          if (!this.slots.has(slot) || this.slots.sockets.isOutOfGroup(slot.id) || slot.restartTimer) continue; // restarts with the new code anyway
          await this.replace(slot, 'reload');
        }
      } finally {
        if (this.state === 'running') this.systemd?.ready(this.statusLine()); // done, or failed with the old workers serving
      }
      this.emit('reload');
    });
  }

  /**
   * A worker past a recycle limit is replaced as in a reload (the new one ready before the old one drains),
   * through the same queue, so one slot recycles at a time and slots due together are spaced by at least a
   * worker's start. A failed recycling leaves the old worker serving and is tried again after restart.maxDelay.
   */
  private recycle(worker: WorkerProcess, limit: RecycleLimit): void {
    if (this.recycling.has(worker) || (this.recycleRetryAt.get(worker) ?? 0) > Date.now()) return;
    this.recycling.add(worker);
    const reason: ExitReason = `recycle-${limit}`;
    this.serialize(async () => {
      const slot = this.slots.list[worker.record.id];
      if (this.state !== 'running' || !slot || slot.worker !== worker || worker.record.state !== 'ready') return;
      const next = await this.replace(slot, reason);
      const { id, pid } = worker.record;
      process.stderr.write(`prefork: recycled worker ${id} (pid ${pid}): ${RECYCLE_LIMITS[limit]} reached; pid ${next.record.pid} serves its slot\n`);
      this.emit('recycle', worker.record, next.record, limit);
    }, { supersedes: false }).catch((error: Error) => {
      if (this.shuttingDown) return;
      const retry = this.config.restart.maxDelay;
      this.recycleRetryAt.set(worker, Date.now() + retry);
      process.stderr.write(`prefork: ${error.message}; trying again in ${retry} ms\n`);
    }).finally(() => this.recycling.delete(worker));
  }

  /** The slot's worker replaced by a new one on the slot's sockets, ready before the old one drains. */
  private async replace(slot: Slot, reason: 'reload' | `recycle-${RecycleLimit}`): Promise<WorkerProcess> {
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

  /** Changes the number of workers. New slots get new sockets; removed slots drain and close theirs. */
  scale(workers: number): Promise<void> {
    checkInteger('workers', workers, 1, MAX_WORKERS);
    return this.serialize(() => this.scaleTo(workers));
  }

  /** One more or one fewer worker (SIGTTIN, SIGTTOU): the count is read when the step runs, after earlier ones. */
  scaleBy(delta: 1 | -1): Promise<void> {
    return this.serialize(() => this.scaleTo(Math.min(MAX_WORKERS, Math.max(1, this.slots.list.length + delta))));
  }

  private async scaleTo(workers: number): Promise<void> {
    if (this.state !== 'running') throw this.notRunning('scale');
    const from = this.slots.list.length;
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
    this.emit('scale', from, workers);
  }

  /**
   * Graceful shutdown: workers stop accepting, finish in-flight requests and exit; after `timeout` ms
   * (default: shutdownTimeout) they are SIGKILLed. Then the sockets close and 'shutdown' is emitted.
   */
  shutdown({ timeout = this.config.shutdownTimeout }: { timeout?: number } = {}): Promise<void> {
    checkInteger('timeout', timeout, 0, MAX_TIMEOUT_MS);
    if (this.stopped) return this.stopped;
    this.state = 'stopping';
    this.endUpgradeWait?.();
    this.liveness.stop();
    this.metricsEndpoint?.close();
    if (!this.successor) this.systemd?.stopping(); // after an upgrade, the service goes on under the new primary
    this.stopped = (async () => {
      await this.slots.stopAll(timeout);
      if (this.storeFd >= 0) closeSync(this.storeFd);
      this.storeFd = -1;
      this.stopReaping?.();
      if (this.config.pidFile) removePidFile(this.config.pidFile); // only if it still names us
      // Our workers are gone: closing the channel tells the new primary of an upgrade that our socket copies are too.
      this.successor?.channel.close();
      this.predecessor?.close();
      this.state = 'stopped';
      // Exiting: the handlers stay until then, so a late SIGTERM cannot kill the primary mid-exit.
      if (!this.config.exitProcess) this.removeSignalHandlers?.();
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
    const workers = await Promise.all(this.slots.list.flatMap((slot) => (slot.worker ? [slot.worker.askStats()] : [])));
    return {
      sockets: this.config.sockets,
      tcpMigrateReq: tcpMigrateReq(),
      addresses: this.addresses,
      restarts: this.slots.list.reduce((sum, slot) => sum + slot.restarts, 0),
      workers,
      balance: { mode: this.config.balance, steered: this.slots.steering !== null },
      slots: this.slots.list.map((slot) => ({
        slot: slot.id, requests: this.metricsSource.slotRequests(slot), steeringShare: this.slots.steering?.share(slot.id) ?? null,
      })),
    };
  }

  /** SIGKILL to every worker (a second Ctrl-C). */
  killAll(): void {
    this.slots.killAll();
  }

  private async start(): Promise<void> {
    try {
      // Upgraded in: the pid file, the metrics port and systemd's READY move to us when we take over.
      if (this.config.pidFile && !this.predecessor) writePidFile(this.config.pidFile);
      if (this.config.reapOrphans && process.pid === 1 && process.platform === 'linux') {
        this.stopReaping = reapOrphans();
      }
      if (!this.predecessor) await this.metricsEndpoint?.listen();
      for (let id = 0; id < this.config.workers; id++) await this.slots.add(id);
      this.slots.sockets.releaseInherited();
      const zeroPortCalls = new Map<string, number>(); // configured port-0 addresses answer a worker's listen(0) calls in order
      for (const config of this.config.listen) {
        const host = config.host ?? '';
        const call = config.port === 0 ? (zeroPortCalls.get(host) ?? 0) : 0;
        if (config.port === 0) zeroPortCalls.set(host, call + 1);
        if (this.slots.sockets.find(config, call) === undefined) await this.slots.sockets.addAddress(config, call); // else handed over
      }
      // systemd's sockets that no `listen` entry named are served too, as the unit's sockets promise.
      for (const socket of this.slots.sockets.unclaimedActivated()) await this.slots.sockets.addAddress(listenConfig(socket.host, socket.port));
      for (const slot of this.slots.list) slot.worker = this.slots.spawn(slot, null);
      await Promise.all(this.slots.list.map((slot) => slot.worker?.ready));
      if (this.predecessor && this.state === 'starting') await this.takeOver(this.predecessor);
      if (this.state !== 'starting') throw preforkError('ERR_PREFORK_SHUT_DOWN', 'The supervisor was shut down before its workers were ready');
      this.state = 'running';
      this.liveness.start();
      this.systemd?.ready(this.statusLine());
      this.systemd?.startWatchdog(() => this.heartbeatsHealthy());
    } catch (error) {
      if (!this.stopped) this.failure = error as Error; // not a failure when a shutdown was asked for
      await this.shutdown({ timeout: 0 });
      throw error;
    }
  }

  /**
   * Hot upgrade (SIGUSR2): a new primary is started as this one was (same Node binary path, Node options and
   * arguments, so a new Node or prefork on disk takes over) and handed every socket and the counter store. Once
   * all its workers are ready, this primary drains its own and exits 0 (`exitProcess`); the pid file and systemd's
   * MAINPID move to the new one. If it exits or is not ready within readyTimeout, it is stopped and this primary
   * keeps serving: the promise rejects with ERR_PREFORK_UPGRADE_FAILED. Either way, 'upgrade' and one log line.
   */
  upgrade(): Promise<{ pid: number }> {
    if (this.upgrading) {
      return Promise.reject(preforkError('ERR_PREFORK_UPGRADE_RUNNING', 'Cannot upgrade: an upgrade is already running; wait for its outcome (the \'upgrade\' event)'));
    }
    if (this.state === 'stopping' || this.state === 'stopped') return Promise.reject(this.notRunning('upgrade'));
    this.upgrading = true;
    return this.serialize(() => this.runUpgrade()).finally(() => (this.upgrading = false));
  }

  private async runUpgrade(): Promise<{ pid: number }> {
    if (this.state !== 'running') throw this.notRunning('upgrade');
    const steering = this.slots.steering;
    let successor: Successor;
    try {
      successor = launchSuccessor({
        sockets: this.config.sockets,
        steered: steering !== null,
        store: this.storeFd >= 0 ? { fd: this.storeFd, capacity: this.config.storeCapacity } : null,
        addresses: this.slots.sockets.handoverAddresses(),
      });
    } catch (cause) {
      throw Object.assign(preforkError('ERR_PREFORK_UPGRADE_FAILED', `Upgrade failed: cannot start a new primary: ${(cause as Error).message}; this one keeps serving`), { cause });
    }
    const { child, channel } = successor;
    process.stderr.write(`prefork: upgrading: new primary pid ${child.pid} is starting\n`);
    steering?.shareWithPeer(child.exited, { blockJoins: true });
    const problem = await this.untilSuccessorReady(successor);
    if (problem === null) {
      // Step aside: the metrics port, MAINPID and the steering are the new primary's from now on.
      this.successor = successor;
      steering?.handOver();
      this.metricsEndpoint?.close();
      this.systemd?.mainPid(child.pid, `upgraded: pid ${child.pid} serves now`);
      channel.send({ type: 'upgrade-commit' } satisfies UpgradeMessage);
      process.stderr.write(`prefork: upgraded: new primary pid ${child.pid} serves now; this one (pid ${process.pid}) drains and exits\n`);
      this.emit('upgrade', { outcome: 'upgraded', pid: child.pid });
      void this.shutdown();
      return { pid: child.pid };
    }
    // Roll back: the new primary drains what its workers took and exits; ours never stopped serving.
    child.kill('SIGTERM');
    const kill = setTimeout(() => child.kill('SIGKILL'), this.config.shutdownTimeout + 1000);
    await child.exited;
    clearTimeout(kill);
    channel.close();
    if (this.config.pidFile && this.state === 'running') writePidFile(this.config.pidFile); // it may have written its own
    const error = preforkError('ERR_PREFORK_UPGRADE_FAILED', `Upgrade failed: the new primary (pid ${child.pid}) ${problem}; the old one (pid ${process.pid}) keeps serving`);
    process.stderr.write(`prefork: ${error.message}\n`);
    this.emit('upgrade', { outcome: 'rolled-back', pid: child.pid, error });
    throw error;
  }

  /** null once the new primary says it is ready; else what went wrong first. */
  private untilSuccessorReady({ child, channel }: Successor): Promise<string | null> {
    return new Promise<string | null>((resolve) => {
      const timeout = this.config.readyTimeout;
      const timer = timeout > 0 ? setTimeout(() => resolve(`was not ready within readyTimeout (${timeout} ms)`), timeout) : null;
      this.endUpgradeWait = () => resolve('was stopped: this primary is shutting down');
      channel.on('message', (message: UpgradeMessage | undefined, fds: number[]) => {
        for (const fd of fds) closeSync(fd);
        resolve(message?.type === 'upgrade-ready' ? null : 'sent a message it should not have');
      });
      void child.exited.then(({ code, signal }) => resolve(`exited (${describeExit(code, signal)}) before it was ready`));
    }).finally(() => {
      this.endUpgradeWait = null;
    });
  }

  /** Started by an upgrade, all our workers ready: take over from the old primary. */
  private async takeOver(predecessor: Predecessor): Promise<void> {
    if (this.config.pidFile) writePidFile(this.config.pidFile);
    predecessor.ready();
    await Promise.race([predecessor.committed(), new Promise<void>((resolve) => (this.endUpgradeWait = resolve))]);
    this.endUpgradeWait = null;
    if (this.state !== 'starting') return;
    this.slots.steering?.setAuthority(true);
    try {
      await this.metricsEndpoint?.listen();
    } catch (error) {
      process.stderr.write(`prefork: ${(error as Error).message}; serving without metrics\n`);
    }
    process.stderr.write(`prefork: took over from the old primary (pid ${predecessor.pid})\n`);
    this.emit('upgrade', { outcome: 'took-over', pid: process.pid, previousPid: predecessor.pid });
  }

  /** The counter store: the old primary's region after an upgrade (counts survive), else a new one. */
  private openStore(handover: Handover | null): void {
    const handed = handover?.store ?? null;
    if (handed && handed.capacity === this.config.storeCapacity) {
      this.storeFd = handed.fd;
      this.storeTable = adoptRegion(handed.fd, handed.capacity);
      return;
    }
    if (handed) {
      closeSync(handed.fd);
      process.stderr.write(`prefork: storeCapacity changed (${handed.capacity} → ${this.config.storeCapacity}): the shared counters start over\n`);
    }
    if (this.config.storeCapacity > 0) ({ fd: this.storeFd, table: this.storeTable } = createRegion(this.config.storeCapacity));
  }

  /** systemd's STATUS= line. */
  private statusLine(): string {
    const ready = this.slots.list.filter((slot) => slot.worker?.record.state === 'ready').length;
    const restarts = this.slots.list.reduce((sum, slot) => sum + slot.restarts, 0);
    return `${ready} of ${this.slots.list.length} workers ready, ${restarts} restarts`;
  }

  /**
   * Whether every serving worker's event loop beat within half of heartbeatTimeout (systemd's watchdog asks):
   * a worker that late is no longer healthy, though it is killed only at the full timeout.
   */
  private heartbeatsHealthy(): boolean {
    const timeout = this.config.heartbeatTimeout / 2;
    if (timeout === 0) return true;
    return this.slots.list.every((slot) => {
      const worker = slot.worker;
      if (!worker || worker.record.state !== 'ready') return true;
      const { beatAt } = worker.liveness.read();
      return beatAt === 0 || monotonicMs() - beatAt <= timeout;
    });
  }

  private giveUp(slot: number, error: Error): void {
    this.emit('giveup', slot, error);
    this.failure ??= error;
    void this.shutdown();
  }

  private replaceFailed(reason: 'reload' | `recycle-${RecycleLimit}`, slot: number, cause: unknown): Error {
    const what = reason === 'reload' ? `Reload stopped at worker slot ${slot}` : `Recycling worker slot ${slot} failed`;
    if (this.shuttingDown) {
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
      this.supersede = () => reject(preforkError('ERR_PREFORK_RELOAD_FAILED', 'superseded by a later reload or scale before the new worker was ready'));
      worker.ready.then(resolve, reject);
    }).finally(() => (this.supersede = null));
  }

  /** Reload, scale and recycling run one at a time, in the order asked; a reload or scale supersedes an endless wait. */
  private serialize<T>(operation: () => Promise<T>, { supersedes = true } = {}): Promise<T> {
    if (supersedes) this.supersede?.();
    const run = this.operations.then(async () => {
      await this.started;
      return operation();
    });
    this.operations = run.catch(() => {});
    return run;
  }

  private notRunning(what: string): Error {
    return preforkError('ERR_PREFORK_NOT_RUNNING', `Cannot ${what}: the supervisor is ${this.state}`);
  }
}

const RECYCLE_LIMITS: Record<RecycleLimit, string> = {
  requests: 'recycle.maxRequests',
  memory: 'recycle.maxMemory (resident memory)',
  age: 'recycle.maxAge',
};

/** Starts a primary's supervisor. Validation errors throw here, before anything is created. */
export function supervise(options: SupervisorOptions = {}): Supervisor {
  if (!platformSupported()) throw unsupportedPlatformError();
  if (isWorker()) throw preforkError('ERR_PREFORK_IN_WORKER', 'supervise() was called in a worker; call it only where isPrimary() is true');
  // The handover first: settling copies process.env into the workers' environment, which must not carry it.
  const handover = takeHandover();
  const config = settleOptions(options);
  return new Supervisor(config, takeActivatedSockets(), handover);
}
