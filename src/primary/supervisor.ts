// The primary's supervisor, the public class: start, reload, scale, shutdown, stats and its events.
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { platformSupported, unsupportedPlatformError } from '../core/binding';
import { tcpMigrateReq } from '../core/system';
import { preforkError, type ErrorWithCode } from '../errors';
import { MAX_TIMEOUT_MS, MAX_WORKERS } from '../limits';
import type { SocketAddress } from '../protocol/messages';
import { encodeAppMessage } from '../protocol/app-messages';
import type { CounterTable } from '../store/counter-table';
import { CounterStore, openPrimaryRegion, type CounterStoreOptions } from '../store/counter-store';
import { checkInteger } from '../validate';
import { listenConfig } from '../protocol/address';
import { settleOptions, type SupervisorConfig, type SupervisorOptions } from './options';
import { LivenessMonitor } from './liveness';
import { Operations } from './operations';
import { SupervisorMetrics } from './metrics';
import type { MetricsEndpoint } from './metrics-endpoint';
import { reapOrphans } from './orphan-reaper';
import { removePidFile, writePidFile } from './pid-file';
import { Recycler } from './recycle';
import { handleSignals } from './signals';
import { takeActivatedSockets, type ActivatedSocket } from './socket-activation';
import { SystemdNotifier } from './systemd-notify';
import type { BalanceMode } from './steering';
import { HotUpgrade, takeHandover, type Handover } from './upgrade';
import { WorkerSlots } from './slots';
import type { Worker, WorkerStats } from './worker-process';
import { isWorker } from '../worker/context';
import type { SupervisorEvent, SupervisorEvents, SupervisorListener } from './events';

export type { ExitReason, Worker, WorkerState, WorkerStats } from './worker-process';
export type { SupervisorEvent, SupervisorEvents, SupervisorListener, UpgradeEvent } from './events';
export type { RecycleLimit } from './recycle';
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
 * 'online', 'listening', 'ready', 'exit', 'restart', 'spawnfailed', 'unresponsive', 'recycle', 'giveup',
 * 'reloading', 'reload', 'reloadfailed', 'scale', 'upgrade', 'message' and 'shutdown'. The metrics and systemd observe them.
 */
export class Supervisor extends EventEmitter {
  readonly config: SupervisorConfig;
  private readonly slots: WorkerSlots;
  private state: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  private readonly started: Promise<void>;
  private stopped: Promise<void> | null = null;
  private failure: Error | null = null;
  private removeSignalHandlers: (() => void) | null = null;
  /** The counter store's shared memory, created before any worker and inherited by every one; -1: none. */
  private storeFd = -1;
  private storeTable: CounterTable | null = null;
  private readonly liveness: LivenessMonitor;
  /** Replaces the workers the liveness monitor finds past a recycle limit, through our queue. */
  private readonly recycler: Recycler;
  /** Reload, scale, recycling and upgrade, one at a time (operations.ts). */
  private readonly operations: Operations;
  private readonly metricsSource: SupervisorMetrics;
  private readonly metricsEndpoint: MetricsEndpoint | null;
  private readonly systemd = SystemdNotifier.fromEnvironment();
  private stopReaping: (() => void) | null = null;
  /** Hot upgrades, this supervisor's part in them (upgrade.ts). */
  private readonly upgrades: HotUpgrade;

  /**
   * `activated`: the sockets systemd handed over (socket activation); `handover`: what the old primary of a hot
   * upgrade handed over. Both taken by supervise().
   */
  constructor(config: SupervisorConfig, activated: ActivatedSocket[] = [], handover: Handover | null = null) {
    super();
    this.config = config;
    const region = openPrimaryRegion(config.storeCapacity, handover?.store ?? null);
    this.storeFd = region?.fd ?? -1;
    this.storeTable = region?.table ?? null;
    this.slots = new WorkerSlots(config, this, this.storeFd, (slot, error) => this.giveUp(slot, error), activated, handover);
    this.upgrades = new HotUpgrade({
      readyTimeout: config.readyTimeout,
      shutdownTimeout: config.shutdownTimeout,
      pidFile: config.pidFile,
      exitProcess: config.exitProcess,
      steering: this.slots.steering,
      running: () => this.state === 'running',
      starting: () => this.state === 'starting',
      notRunning: (what) => this.notRunning(what),
      contents: () => ({
        sockets: this.config.sockets,
        steered: this.slots.steering !== null,
        store: this.storeFd >= 0 ? { fd: this.storeFd, capacity: this.config.storeCapacity } : null,
        addresses: this.slots.sockets.handoverAddresses(),
      }),
      stepAside: (pid) => {
        this.metricsEndpoint?.close();
        this.systemd?.mainPid(pid, `upgraded: pid ${pid} serves now`);
      },
      stopHandlingSignals: () => this.removeSignalHandlers?.(),
      takeBack: () => this.metricsEndpoint?.listen().catch((error: Error) => {
        process.stderr.write(`prefork: ${error.message}; serving without metrics\n`);
      }) ?? Promise.resolve(),
      emit: (event) => this.emit('upgrade', event),
      shutdown: () => void this.shutdown(),
    }, handover);
    this.liveness = new LivenessMonitor(config.heartbeatTimeout, config.recycle, () => this.slots.list.flatMap((slot) => (slot.worker ? [slot.worker] : [])), {
      unresponsive: (worker, since) => this.slots.unresponsive(worker, since),
      misbehaved: (worker, problem) => this.slots.misbehaved(worker, problem),
      recycle: (worker, limit) => this.recycler.due(worker, limit),
    });
    this.operations = new Operations(config, this.slots, {
      events: this,
      started: () => this.started,
      running: () => this.state === 'running',
      notRunning: (what) => this.notRunning(what),
      supersedeUpgrade: () => this.upgrades.supersede(),
    });
    this.recycler = new Recycler(config.restart.maxDelay, this, (worker, limit) => this.operations.recycle(worker, limit));
    this.metricsSource = new SupervisorMetrics(config, this.slots);
    this.metricsSource.observe(this);
    // Required only when configured: the endpoint is the primary's one use of node:http.
    this.metricsEndpoint = config.metrics ? new (require('./metrics-endpoint') as typeof import('./metrics-endpoint')).MetricsEndpoint(config.metrics, () => this.metrics()) : null;
    if (config.signals) this.removeSignalHandlers = handleSignals(this);
    this.started = this.start();
    this.started.catch(() => {}); // reported through ready(), and on stderr when the process exits for it
    // After start() began (it emits nothing before its first await): the notifier waits on ready().
    this.systemd?.observe(this, this.slots, config.heartbeatTimeout);
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
    return this.operations.reload();
  }

  /** Changes the number of workers. New slots get new sockets; removed slots drain and close theirs. */
  scale(workers: number): Promise<void> {
    checkInteger('workers', workers, 1, MAX_WORKERS);
    return this.operations.scaleTo(() => workers);
  }

  /** One more or one fewer worker (SIGTTIN, SIGTTOU): the count is read when the step runs, after earlier ones. */
  scaleBy(delta: 1 | -1): Promise<void> {
    return this.operations.scaleTo(() => Math.min(MAX_WORKERS, Math.max(1, this.slots.list.length + delta)));
  }

  /**
   * Graceful shutdown: workers stop accepting, finish in-flight requests and exit; after `timeout` ms
   * (default: shutdownTimeout) they are SIGKILLed. Then the sockets close and 'shutdown' is emitted.
   */
  shutdown({ timeout = this.config.shutdownTimeout }: { timeout?: number } = {}): Promise<void> {
    checkInteger('timeout', timeout, 0, MAX_TIMEOUT_MS);
    if (this.stopped) return this.stopped;
    this.state = 'stopping';
    this.upgrades.interrupt();
    this.liveness.stop();
    this.metricsEndpoint?.close();
    if (!this.upgrades.handedOver) this.systemd?.stopping(); // after an upgrade, the service goes on under the new primary
    this.stopped = (async () => {
      await this.slots.stopAll(timeout);
      if (this.storeFd >= 0) closeSync(this.storeFd);
      this.storeFd = -1;
      this.stopReaping?.();
      if (this.config.pidFile) removePidFile(this.config.pidFile); // only if it still names us
      this.upgrades.close(); // our workers are gone: the other primary of an upgrade hears that our socket copies are too
      this.state = 'stopped';
      // Exiting: the handlers stay until then, so a late SIGTERM cannot kill the primary mid-exit.
      if (!this.config.exitProcess) this.removeSignalHandlers?.();
      this.emit('shutdown');
      if (this.config.exitProcess) {
        const failure = this.failure as ErrorWithCode | null;
        if (failure) process.stderr.write(`prefork: ${failure.message}${!failure.code || failure.message.includes(failure.code) ? '' : ` (${failure.code})`}\n`);
        // After the promise callbacks: ready()'s rejection reaches its handlers first.
        setImmediate(() => this.upgrades.finish(() => process.exit(failure ? 1 : 0)));
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
      balance: { mode: this.config.balance, steered: this.slots.steering?.steers() ?? false },
      slots: this.slots.list.map((slot) => ({
        slot: slot.id, requests: this.metricsSource.slotRequests(slot), steeringShare: this.slots.steering?.share(slot.id) ?? null,
      })),
    };
  }

  /**
   * Sends the message to every live worker (a reload's incoming and draining ones too), as worker.send() would to
   * each; throws, sending nothing, for a message that cannot be serialised or is too large.
   */
  broadcast(message: unknown): void {
    const workers = this.slots.live();
    if (workers.length === 0) return void encodeAppMessage(message, this.config.serialization); // still checked
    for (const worker of workers) worker.record.send(message);
  }

  /** SIGKILL to every worker (a second Ctrl-C). */
  killAll(): void {
    this.slots.killAll();
  }

  private async start(): Promise<void> {
    try {
      // Upgraded in: the pid file, the metrics port and systemd's READY move to us when we take over.
      if (this.config.pidFile && !this.upgrades.takingOver) writePidFile(this.config.pidFile);
      if (this.config.reapOrphans && process.pid === 1 && process.platform === 'linux') {
        this.stopReaping = reapOrphans();
      }
      if (!this.upgrades.takingOver) await this.metricsEndpoint?.listen();
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
      if (this.state === 'starting') await this.upgrades.takeOver();
      if (this.state !== 'starting') throw preforkError('ERR_PREFORK_SHUT_DOWN', 'The supervisor was shut down before its workers were ready');
      this.state = 'running';
      this.liveness.start();
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
   * MAINPID move to the new one (as a container's PID 1 it stays as an init instead of exiting: pid1-init.ts). If it
   * exits or is not ready within readyTimeout (readyTimeout 0: 5 minutes, or until a reload or scale is asked for),
   * it is stopped and this primary keeps serving: the promise rejects with ERR_PREFORK_UPGRADE_FAILED. Either way,
   * 'upgrade' and one log line. The dance itself is upgrade.ts's.
   */
  upgrade(): Promise<{ pid: number }> {
    return this.upgrades.request((operation) => {
      if (this.state === 'stopping' || this.state === 'stopped') return Promise.reject(this.notRunning('upgrade'));
      return this.operations.run(operation);
    });
  }

  private giveUp(slot: number, error: Error): void {
    this.emit('giveup', slot, error);
    this.failure ??= error;
    void this.shutdown();
  }

  private notRunning(what: string): Error {
    return preforkError('ERR_PREFORK_NOT_RUNNING', `Cannot ${what}: the supervisor is ${this.state}`);
  }
}

/**
 * Starts a primary's supervisor. Validation errors throw here, before anything is created. node:cluster's primary
 * API reflects its workers (cluster.workers, cluster's 'message'), so setupPrimary() of cluster libraries works.
 */
export function supervise(options: SupervisorOptions = {}): Supervisor {
  const supervisor = startSupervisor(options);
  (require('./cluster-primary') as typeof import('./cluster-primary')).reflectInCluster(supervisor);
  return supervisor;
}

/** supervise() without node:cluster's view of the workers: for the zero-code primary, which loads no node:cluster. */
export function startSupervisor(options: SupervisorOptions = {}): Supervisor {
  if (!platformSupported()) throw unsupportedPlatformError();
  if (isWorker()) throw preforkError('ERR_PREFORK_IN_WORKER', 'supervise() was called in a worker; call it only where isPrimary() is true');
  // The handover first: settling copies process.env into the workers' environment, which must not carry it.
  const handover = takeHandover();
  const config = settleOptions(options);
  return new Supervisor(config, takeActivatedSockets(), handover);
}
