// One worker process as the primary sees it: started with its fds and environment; its readiness, stop and stats.
import { closeSync, fstatSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { native } from '../core/binding';
import { ControlChannel, createChannelPair } from '../core/channel';
import { spawn, type ChildHandle } from '../core/spawn';
import { allowedCpus, residentSetSize } from '../core/system';
import { debug } from '../debug';
import { preforkError } from '../errors';
import { MAX_METRICS_BYTES, MAX_WARNED_METRIC_NAMES, MAX_UNREAD_MESSAGES, MAX_WORKER_FRAMES_PER_SECOND, WORKER_ANSWER_TIMEOUT_MS } from '../limits';
import { parseWorkerMetrics, type MetricJSON, type WorkerMetrics } from './app-metrics';
import {
  CHANNEL_FD, ENV_CHANNEL_ID, ENV_GENERATION, ENV_HEARTBEAT_INTERVAL, ENV_LISTEN, ENV_SHUTDOWN_TIMEOUT, ENV_STORE, ENV_WAIT_READY, ENV_WORKER_ID,
  FIRST_LISTEN_FD, LIVENESS_FD, STORE_FD,
  type InheritedSocket, type PrimaryMessage, type WorkerMessage,
} from '../protocol/messages';
import { LIVENESS_BYTES, LivenessRecord, monotonicMs } from '../protocol/liveness-record';
import type { SupervisorConfig } from './options';
import { SYSTEMD_VARIABLES } from './systemd-notify';
import { ENV_HANDOVER } from './upgrade';
import { steeringInterval } from './steering';

export type WorkerState = 'starting' | 'online' | 'listening' | 'ready' | 'stopping' | 'exited';

/**
 * Why a worker exited: it crashed (any exit nobody asked for), its loop was stuck, it was recycled (which
 * limit), reloaded, scaled away or shut down, it was not ready in time, it broke the control protocol, or it
 * shut down on a SIGTERM or SIGINT sent to it (not by the primary).
 */
export type ExitReason =
  | 'crash' | 'unresponsive' | 'recycle-requests' | 'recycle-memory' | 'recycle-age' | 'reload' | 'scale' | 'shutdown' | 'not-ready' | 'protocol' | 'signal';

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
  /** Why its predecessor on the slot was replaced; null for a slot's first worker. */
  readonly replaced: ExitReason | null;
  /** Why it exited or is stopping; null while it serves. */
  exitReason: ExitReason | null;
}

export interface WorkerStats extends Worker {
  /** process.memoryUsage() (heap included), asked over the channel; null if it did not answer in time. */
  memory: NodeJS.MemoryUsage | null;
  connections: number | null;
  /** Resident memory in bytes, read from /proc by the primary (no answer needed); null if unknown. */
  rss: number | null;
  /** Requests served (connections for a plain net.Server), from its heartbeat. */
  requests: number;
  /** How late its event loop's last heartbeat fired, ms. */
  loopLag: number;
  /** ms since its last heartbeat; null before the first. */
  sinceHeartbeat: number | null;
}


export interface WorkerLaunch {
  slot: number;
  generation: number;
  restarts: number;
  /** The slot's listen sockets (fds in the primary) and how each is described to the worker. */
  sockets: Array<{ fd: number; describe: (fdInWorker: number) => InheritedSocket }>;
  /** The counter store's region, or -1. */
  storeFd: number;
  /** Why the slot's previous worker was replaced; null for its first. */
  replaced: ExitReason | null;
  /** Node options for this worker (inspector ports already made unique). */
  execArgv: string[];
  config: SupervisorConfig;
}

export type StatsReply = Extract<WorkerMessage, { type: 'stats' }>;
export type MetricsPart = Extract<WorkerMessage, { type: 'metrics' }>;

/** A running worker and the primary's handles on it. Emits nothing: the supervisor listens to `child` and `channel`. */
export class WorkerProcess {
  /** Indexes of the addresses this worker listens on. */
  readonly adopted = new Set<number>();
  readonly ready: Promise<void>;
  private resolveReady!: () => void;
  private rejectReady!: (error: Error) => void;
  private readyTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private killDeadline = Infinity;
  private readonly statsRequests = new Map<number, (reply?: StatsReply) => void>();
  private nextStatsRequest = 1;
  private readonly metricsRequests = new Map<number, (metrics: MetricJSON[] | null) => void>();
  private readonly metricsParts = new Map<number, string[]>();
  /** Its app's prom-client metrics as last received (asked, or sent when it drained); null: none yet. */
  lastMetrics: MetricJSON[] | null = null;
  /** Names of its metrics the primary dropped and said so. */
  private readonly droppedMetricNames = new Set<string>();
  /** Its maxRequests with its own jitter; 0: no limit. */
  readonly requestLimit: number;
  private readonly shutdownTimeout: number;

  constructor(
    readonly record: Worker,
    readonly child: ChildHandle,
    readonly channel: ControlChannel,
    /** Its heartbeat, lag and requests served, written by its event loop into memory we share with it alone. */
    readonly liveness: LivenessRecord,
    config: SupervisorConfig,
  ) {
    this.shutdownTimeout = config.shutdownTimeout;
    const { maxRequests, maxRequestsJitter } = config.recycle;
    this.requestLimit = maxRequests > 0 ? maxRequests + randomInt(0, maxRequestsJitter + 1) : 0;
    const { readyTimeout } = config;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // failures are reported where ready is awaited
    if (readyTimeout > 0) {
      this.readyTimer = setTimeout(() => {
        this.rejectReady(preforkError('ERR_PREFORK_READY_TIMEOUT', `worker ${record.id} (pid ${child.pid}) was not ready within ${readyTimeout} ms`));
        this.requestStop(0, 'not-ready');
      }, readyTimeout);
    }
  }

  /** Marks it ready; false when it was ready, stopping or gone already. */
  markReady(): boolean {
    if (this.record.state === 'ready' || this.record.state === 'stopping' || this.record.state === 'exited') return false;
    this.record.state = 'ready';
    clearTimeout(this.readyTimer);
    this.resolveReady();
    return true;
  }

  /** After the child is reaped: timers and channel go; a worker that was never ready fails its `ready`. */
  exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.record.state = 'exited';
    this.record.exitReason ??= 'crash';
    clearTimeout(this.readyTimer);
    clearTimeout(this.killTimer);
    this.channel.readRemaining(); // its last messages (final metrics) before the channel goes
    this.channel.close();
    for (const answer of this.statsRequests.values()) answer();
    for (const answer of this.metricsRequests.values()) answer(null);
    const { id, pid } = this.record;
    const early = preforkError('ERR_PREFORK_WORKER_EXIT', `worker ${id} (pid ${pid}) exited with ${describeExit(code, signal)} before it was ready`);
    this.rejectReady(Object.assign(early, { exitCode: code, signal })); // no effect once it was ready
  }

  /** Ends it at once: it cannot drain (its loop is stuck) or may not (it broke the protocol). */
  kill(reason: ExitReason): void {
    if (this.record.state === 'exited') return;
    this.record.exitReason ??= reason;
    this.child.kill('SIGKILL');
  }

  /** It shuts down on a signal sent to it, within the drain time a stop would give it (then SIGKILL). */
  stoppingOnSignal(): void {
    if (this.record.state === 'exited' || this.record.state === 'stopping') return;
    clearTimeout(this.readyTimer);
    this.record.state = 'stopping';
    this.record.exitReason = 'signal'; // a stop the primary asks for later still names its own reason
    this.killAfter(this.shutdownTimeout);
  }

  /** Asks it to drain and exit; SIGKILL after `timeout` ms (0: at once). */
  requestStop(timeout: number, reason: ExitReason): void {
    if (this.record.state === 'exited') return;
    // Ctrl-C reaches the workers and the primary alike: the primary's reason (shutdown) is the one to tell.
    if (this.record.exitReason === null || this.record.exitReason === 'signal') this.record.exitReason = reason;
    clearTimeout(this.readyTimer);
    const wasOnline = this.record.state !== 'starting';
    this.record.state = 'stopping';
    debug('primary: stopping worker %d (pid %d), SIGKILL in %d ms', this.record.id, this.record.pid, timeout);
    if (timeout === 0) {
      this.child.kill('SIGKILL');
      return;
    }
    if (wasOnline && !this.channel.closed) this.channel.send({ type: 'shutdown', timeout } satisfies PrimaryMessage);
    else this.child.kill('SIGTERM'); // prefork is not loaded there yet: the default action ends it
    this.killAfter(timeout);
  }

  /** SIGKILL after `timeout` ms. A shutdown({ timeout }) during a reload's drain shortens it; a later, longer one does not lengthen it. */
  private killAfter(timeout: number): void {
    if (Date.now() + timeout >= this.killDeadline) return;
    this.killDeadline = Date.now() + timeout;
    clearTimeout(this.killTimer);
    this.killTimer = setTimeout(() => this.child.kill('SIGKILL'), timeout);
  }

  /** Its record, its liveness, RSS, and memory and open connections asked over the channel (nulls if it does not answer in time). */
  askStats(): Promise<WorkerStats> {
    const requestId = this.nextStatsRequest++;
    return new Promise((resolve) => {
      const answer = (reply?: StatsReply) => {
        clearTimeout(timer);
        this.statsRequests.delete(requestId);
        const { beatAt, lag, served } = this.liveness.read();
        resolve({
          ...this.record,
          memory: reply?.memory ?? null,
          connections: reply?.connections ?? null,
          rss: residentSetSize(this.record.pid),
          requests: served,
          loopLag: lag,
          sinceHeartbeat: beatAt === 0 ? null : Math.max(0, monotonicMs() - beatAt),
        });
      };
      const timer = setTimeout(answer, WORKER_ANSWER_TIMEOUT_MS);
      this.statsRequests.set(requestId, answer);
      if (this.channel.closed) answer();
      else this.channel.send({ type: 'stats', requestId } satisfies PrimaryMessage);
    });
  }

  onStatsReply(reply: StatsReply): void {
    this.statsRequests.get(reply.requestId)?.(reply);
  }

  /** Its app's prom-client metrics, asked over the channel; its last known ones if it does not answer in time. */
  askMetrics(): Promise<MetricJSON[] | null> {
    const requestId = this.nextStatsRequest++;
    return new Promise((resolve) => {
      const answer = (metrics: MetricJSON[] | null) => {
        clearTimeout(timer);
        this.metricsRequests.delete(requestId);
        this.metricsParts.delete(requestId);
        resolve(metrics ?? this.lastMetrics);
      };
      const timer = setTimeout(() => answer(null), WORKER_ANSWER_TIMEOUT_MS);
      this.metricsRequests.set(requestId, answer);
      if (this.channel.closed) answer(null);
      else this.channel.send({ type: 'metrics', requestId } satisfies PrimaryMessage);
    });
  }

  /** A part of a metrics answer; a problem (too large, malformed) is returned for the caller to act on. */
  onMetricsPart(message: MetricsPart): string | null {
    if (message.requestId !== 0 && !this.metricsRequests.has(message.requestId)) return null; // answered late
    const parts = this.metricsParts.get(message.requestId) ?? [];
    parts.push(message.part);
    if (parts.reduce((bytes, part) => bytes + part.length, 0) > MAX_METRICS_BYTES) return `metrics larger than ${MAX_METRICS_BYTES} bytes`;
    if (!message.last) {
      this.metricsParts.set(message.requestId, parts);
      return null;
    }
    this.metricsParts.delete(message.requestId);
    const parsed = parseWorkerMetrics(parts.join(''));
    if (typeof parsed === 'string') return parsed;
    this.reportDropped(parsed.dropped);
    const { metrics } = parsed;
    this.lastMetrics = metrics;
    this.metricsRequests.get(message.requestId)?.(metrics);
    return null;
  }

  /** One line for the metrics of this worker the primary drops, each name said once. */
  private reportDropped(dropped: WorkerMetrics['dropped']): void {
    const fresh = dropped.filter(({ name }) => !this.droppedMetricNames.has(name) && this.droppedMetricNames.size < MAX_WARNED_METRIC_NAMES);
    if (fresh.length === 0) return;
    for (const { name } of fresh) this.droppedMetricNames.add(name);
    const shown = fresh.slice(0, 5).map(({ name, why }) => `${JSON.stringify(name)} (${why})`).join(', ');
    process.stderr.write(`prefork: worker ${this.record.id} (pid ${this.record.pid}) sent metrics the primary drops: ${shown}${fresh.length > 5 ? ` and ${fresh.length - 5} more` : ''}\n`);
  }
}

export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `signal ${signal}`;
  return code === null ? 'no exit (not ready in time)' : `code ${code}`;
}

/** Fork+execs a worker: its channel at CHANNEL_FD, the store at STORE_FD, its listen sockets from FIRST_LISTEN_FD. */
export function startWorkerProcess(launch: WorkerLaunch): WorkerProcess {
  const { config, slot } = launch;
  const fds: Record<number, number> = {};
  const inherited = launch.sockets.map((socket, i) => {
    fds[FIRST_LISTEN_FD + i] = socket.fd;
    return socket.describe(FIRST_LISTEN_FD + i);
  });
  const [primaryEnd, workerEnd] = createChannelPair();
  fds[CHANNEL_FD] = workerEnd;
  if (launch.storeFd >= 0) fds[STORE_FD] = launch.storeFd;
  let child: ChildHandle;
  let liveness: LivenessRecord;
  let livenessFd = -1;
  try {
    livenessFd = native.createSharedRegion(LIVENESS_BYTES);
    liveness = new LivenessRecord(native.mapSharedRegion(livenessFd, LIVENESS_BYTES));
    fds[LIVENESS_FD] = livenessFd;
    const cpus = config.cpuAffinity ? allowedCpus() : [];
    child = spawn({
      file: process.execPath,
      args: [process.execPath, ...launch.execArgv, config.script, ...config.args],
      env: {
        ...withoutPrimaryVariables(config.env),
        [ENV_WORKER_ID]: String(slot),
        [ENV_GENERATION]: String(launch.generation),
        [ENV_LISTEN]: JSON.stringify(inherited),
        [ENV_SHUTDOWN_TIMEOUT]: String(config.shutdownTimeout),
        [ENV_WAIT_READY]: config.waitReady ? '1' : '0',
        [ENV_CHANNEL_ID]: String(fstatSync(workerEnd).ino),
        // Steered sockets: the steering looks at each worker's beat to find one stuck, and at its open connections.
        [ENV_HEARTBEAT_INTERVAL]: String(config.sockets === 'reuseport' ? Math.min(steeringInterval(config.balance), heartbeatInterval(config.heartbeatTimeout)) : heartbeatInterval(config.heartbeatTimeout)),
        ...(launch.storeFd >= 0 ? { [ENV_STORE]: String(config.storeCapacity) } : {}),
        NODE_APP_INSTANCE: String(slot), // PM2's name for the same thing
      },
      cwd: config.cwd,
      fds,
      uid: config.uid,
      gid: config.gid,
      cpus: cpus.length > 0 ? [cpus[slot % cpus.length]] : undefined,
      // Catchable, so an orphaned worker drains like on a shutdown request (the channel's EOF says the same).
      deathSignal: 'SIGTERM',
    });
  } catch (error) {
    closeSync(primaryEnd);
    throw error;
  } finally {
    closeSync(workerEnd);
    if (livenessFd >= 0) closeSync(livenessFd); // the worker has its copy; ours stays mapped
  }
  const record: Worker = {
    id: slot, pid: child.pid, generation: launch.generation, state: 'starting', startedAt: new Date(), restarts: launch.restarts,
    replaced: launch.replaced, exitReason: null,
  };
  // A worker sends the primary no fds: any it sends never enter our fd table, and end it as a protocol breach.
  return new WorkerProcess(record, child, new ControlChannel(primaryEnd, { fds: false, maxFramesPerSecond: MAX_WORKER_FRAMES_PER_SECOND, maxQueued: MAX_UNREAD_MESSAGES }), liveness, config);
}

/** How often a worker beats: a tenth of the timeout, so a stuck loop is seen within 10% of it; at most every second. */
export function heartbeatInterval(heartbeatTimeout: number): number {
  return heartbeatTimeout === 0 ? 1000 : Math.min(1000, Math.max(10, Math.floor(heartbeatTimeout / 10)));
}

/**
 * The environment without what was meant for the primary alone: systemd's variables (a worker is not the service's
 * main process) and an upgrade's handover (fd numbers of the primary's; a worker's child running prefork would
 * take its fd 3 for an old primary). Also when the caller's `env` option copied them.
 */
function withoutPrimaryVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const copy = { ...env };
  for (const name of [...SYSTEMD_VARIABLES, ENV_HANDOVER]) delete copy[name];
  return copy;
}

/**
 * As node:cluster does: with an inspector in execArgv, the n-th worker started (n from 1) gets its own port,
 * counting up from the primary's.
 */
export function inspectorExecArgv(execArgv: string[], n: number): string[] {
  if (!execArgv.some((arg) => /^--inspect(-brk|-wait)?(=|$)/.test(arg))) return execArgv;
  let host = '';
  for (const arg of execArgv) {
    const value = /^--inspect(?:-brk|-wait|-port)?=(.+)$/.exec(arg)?.[1];
    if (value?.includes(':')) host = `${value.slice(0, value.lastIndexOf(':'))}:`;
    else if (value !== undefined && !/^\d+$/.test(value)) host = `${value}:`;
  }
  const base = process.debugPort;
  const port = base === 0 ? 0 : ((base + n - 1024) % (65536 - 1024)) + 1024;
  return [...execArgv, `--inspect-port=${host}${port}`];
}
