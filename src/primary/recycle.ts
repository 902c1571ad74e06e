// Recycling: the `recycle` option, and the limit a worker has reached. The liveness monitor reports a worker past
// a limit on every check; the supervisor's queue replaces it as in a reload, one slot at a time.
import { invalidValue } from '../errors';
import { MAX_INT, MAX_TIMEOUT_MS, MIN_MAX_AGE_MS, MIN_MAX_MEMORY } from '../limits';
import { checkInteger, checkLimit, checkOptionNames, checkOptionsObject } from '../validate';

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
