// Recycling: the `recycle` option, the limit a worker has reached, and the bookkeeping of its replacement. The
// liveness monitor reports a worker past a limit on every check; it is queued once, replaced as in a reload
// through the supervisor's queue (one slot at a time), and after a failure tried again only after a delay.
import { invalidValue } from '../errors';
import { MAX_INT, MAX_TIMEOUT_MS, MIN_MAX_AGE_MS, MIN_MAX_MEMORY } from '../limits';
import { checkInteger, checkLimit, checkOptionNames, checkOptionsObject } from '../validate';
import type { Supervisor } from './supervisor';
import type { WorkerProcess } from './worker-process';

/** When a worker is replaced by a fresh one, gracefully, one slot at a time. 0 (the default) turns a limit off. */
export interface RecycleOptions {
  /** After this many requests (http/https/http2; connections for a plain net.Server). */
  maxRequests?: number;
  /** Adds a random 0 … maxRequestsJitter to each worker's maxRequests, so workers do not all recycle at once. */
  maxRequestsJitter?: number;
  /** When its resident memory (RSS, read from /proc) reaches this many bytes; at least 16 MiB. */
  maxMemory?: number;
  /** When it has run this many ms; at least 1000. */
  maxAge?: number;
}

export type RecycleLimit = 'requests' | 'memory' | 'age';

/** Each limit as the option that sets it, for the log line. */
const LIMIT_OPTIONS: Record<RecycleLimit, string> = {
  requests: 'recycle.maxRequests',
  memory: 'recycle.maxMemory (resident memory)',
  age: 'recycle.maxAge',
};

const RECYCLE_NAMES = ['maxRequests', 'maxRequestsJitter', 'maxMemory', 'maxAge'] as const;

export function settleRecycle(recycle: unknown): Required<RecycleOptions> {
  const settled = { maxRequests: 0, maxRequestsJitter: 0, maxMemory: 0, maxAge: 0 };
  if (recycle === undefined) return settled;
  checkOptionsObject('the "recycle" option', recycle);
  checkOptionNames('the "recycle" option', recycle, RECYCLE_NAMES);
  const { maxRequests, maxRequestsJitter, maxMemory, maxAge } = recycle;
  if (maxRequests !== undefined) settled.maxRequests = checkLimit('recycle.maxRequests', maxRequests, 1, MAX_INT);
  if (maxRequestsJitter !== undefined) settled.maxRequestsJitter = checkInteger('recycle.maxRequestsJitter', maxRequestsJitter, 0, MAX_INT);
  if (maxMemory !== undefined) settled.maxMemory = checkLimit('recycle.maxMemory', maxMemory, MIN_MAX_MEMORY, Number.MAX_SAFE_INTEGER);
  if (maxAge !== undefined) settled.maxAge = checkLimit('recycle.maxAge', maxAge, MIN_MAX_AGE_MS, MAX_TIMEOUT_MS);
  if (settled.maxRequestsJitter > 0 && settled.maxRequests === 0) {
    throw invalidValue('recycle.maxRequestsJitter', 'needs recycle.maxRequests (the jitter is added to it)', maxRequestsJitter);
  }
  return settled;
}

export interface WorkerReading {
  /** Requests (or connections) served. */
  served: number;
  /** Resident memory, bytes; null when unknown or not asked for. */
  rss: number | null;
  /** ms since it started. */
  age: number;
}

/** The recycle limit a worker has reached, if any: memory first, since it alone can end with the OOM killer. */
export function recycleDue(recycle: Required<RecycleOptions>, requestLimit: number, reading: WorkerReading): RecycleLimit | null {
  if (recycle.maxMemory > 0 && reading.rss !== null && reading.rss >= recycle.maxMemory) return 'memory';
  if (requestLimit > 0 && reading.served >= requestLimit) return 'requests';
  if (recycle.maxAge > 0 && reading.age >= recycle.maxAge) return 'age';
  return null;
}

/**
 * Replaces workers past a recycle limit, each queued once however often it is reported. `replace` runs in the
 * supervisor's queue: it gives the new worker (ready, the old one draining), or null when the old one no longer
 * serves its slot. A failed recycling leaves the old worker serving; it is tried again after `retryDelay` ms.
 */
export class Recycler {
  /** Workers whose recycling is queued or running: reported again on every check, queued once. */
  private readonly queued = new Set<WorkerProcess>();
  /** After a failed recycling, when the worker may be tried again (ms since the epoch). */
  private readonly retryAt = new WeakMap<WorkerProcess, number>();

  constructor(
    private readonly retryDelay: number,
    private readonly supervisor: Pick<Supervisor, 'emit' | 'shuttingDown'>,
    private readonly replace: (worker: WorkerProcess, limit: RecycleLimit) => Promise<WorkerProcess | null>,
  ) {}

  /** The worker reached `limit` (the liveness monitor says so on every check until it is replaced). */
  due(worker: WorkerProcess, limit: RecycleLimit): void {
    if (this.queued.has(worker) || (this.retryAt.get(worker) ?? 0) > Date.now()) return;
    this.queued.add(worker);
    this.replace(worker, limit).then((next) => {
      if (!next) return;
      const { id, pid } = worker.record;
      process.stderr.write(`prefork: recycled worker ${id} (pid ${pid}): ${LIMIT_OPTIONS[limit]} reached; pid ${next.record.pid} serves its slot\n`);
      this.supervisor.emit('recycle', worker.record, next.record, limit);
    }).catch((error: Error) => {
      if (this.supervisor.shuttingDown) return;
      this.retryAt.set(worker, Date.now() + this.retryDelay);
      process.stderr.write(`prefork: ${error.message}; trying again in ${this.retryDelay} ms\n`);
    }).finally(() => this.queued.delete(worker));
  }
}
