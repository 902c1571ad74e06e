// One worker process as the primary sees it (worker-launch.ts starts it): its record, readiness, stop, stats and metrics.
import { randomInt } from 'node:crypto';
import type { ControlChannel } from '../core/channel';
import type { ChildHandle } from '../core/spawn';
import { residentSetSize } from '../core/system';
import { debug } from '../debug';
import { preforkError } from '../errors';
import { MAX_METRICS_BYTES, MAX_WARNED_METRIC_NAMES, WORKER_ANSWER_TIMEOUT_MS } from '../limits';
import { parseWorkerMetrics, type MetricJSON, type WorkerMetrics } from './app-metrics';
import type { PrimaryMessage, WorkerMessage } from '../protocol/messages';
import { monotonicMs, type LivenessRecord } from '../protocol/liveness-record';
import { channelClosed, encodeAppMessage, sendCallback, type Serialization } from '../protocol/app-messages';
import type { SupervisorConfig } from './options';

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
  /**
   * Sends the worker a message, its process 'message' event, as node:cluster's worker.send(message[, sendHandle][,
   * options][, callback]): no handles; the callback gets null once it left, or ERR_IPC_CHANNEL_CLOSED. Returns false
   * (and sends nothing) once the worker's channel closed. Throws for a message that cannot be serialised or is
   * larger than 47 KiB serialised. Not enumerable: not in stats(), not in JSON.
   */
  readonly send: (message: unknown, ...args: unknown[]) => boolean;
}

/** Gives a worker record its send(), not enumerable (a record is spread into stats and printed). */
export function withSend(record: Omit<Worker, 'send'>, send: Worker['send']): Worker {
  return Object.defineProperty(record, 'send', { value: send, enumerable: false }) as Worker;
}

export interface WorkerStats extends Omit<Worker, 'send'> {
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


export type StatsReply = Extract<WorkerMessage, { type: 'stats' }>;
export type MetricsPart = Extract<WorkerMessage, { type: 'metrics' }>;

/** A running worker and the primary's handles on it. Emits nothing: the supervisor listens to `child` and `channel`. */
export class WorkerProcess {
  /** Indexes of the addresses this worker listens on. */
  readonly adopted = new Set<number>();
  /** Indexes of the addresses it listens on or abandoned (its app closed the server first): readiness waits for all. */
  readonly settled = new Set<number>();
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
  private readonly serialization: Serialization;

  constructor(
    readonly record: Worker,
    readonly child: ChildHandle,
    readonly channel: ControlChannel,
    /** Its heartbeat, lag and requests served, written by its event loop into memory we share with it alone. */
    readonly liveness: LivenessRecord,
    config: SupervisorConfig,
  ) {
    this.shutdownTimeout = config.shutdownTimeout;
    this.serialization = config.serialization;
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

  /** The app's message to this worker (its record's send()). */
  sendAppMessage(message: unknown, args: unknown[]): boolean {
    const callback = sendCallback('worker.send()', args);
    const frame = encodeAppMessage(message, this.serialization);
    if (this.channel.closed) {
      if (callback) process.nextTick(callback, channelClosed());
      return false;
    }
    this.channel.send(frame satisfies PrimaryMessage);
    if (callback) void this.channel.flushed().then(() => callback(this.channel.closed ? channelClosed() : null));
    return true;
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
