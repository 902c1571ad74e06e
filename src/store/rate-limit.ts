// Rate-limit stores on the shared counter store: for express-rate-limit 8 and @fastify/rate-limit.
import { CounterStore, MAX_WINDOW_MS, type CounterStoreOptions } from './counter-store';

interface ClientRateLimitInfo {
  totalHits: number;
  resetTime: Date | undefined;
}

/** How long resetAll()'s generation number lives: as long as the longest window (a year). */
const GENERATION_WINDOW_MS = MAX_WINDOW_MS;

/**
 * express-rate-limit's `Store`: `rateLimit({ windowMs, limit, store: new RateLimitStore() })` counts hits
 * across all workers. One store per limiter (give each its own `prefix`, default 'rl:'). Fails open when the
 * table is full (one warning per minute), unless `onFull: 'error'`.
 */
export class RateLimitStore {
  readonly prefix: string;
  /** Tells express-rate-limit the counts are shared, not per process. */
  readonly localKeys = false;
  private windowMs = 60000;
  private readonly counters: CounterStore;
  /** The prefix's generation (resetAll() bumps it), kept in the table too, under a key no client key can take. */
  private readonly generations: CounterStore;

  constructor(options: CounterStoreOptions = {}) {
    this.counters = new CounterStore({ prefix: 'rl:', onFull: 'allow', ...options });
    this.prefix = this.counters.prefix;
    this.generations = new CounterStore({ prefix: `${this.prefix}\u0000`, onFull: 'error' });
  }

  /** Every key starts again, in every worker: the prefix's generation moves on, so old entries match no key. */
  resetAll(): void {
    this.generations.add('generation', 1, GENERATION_WINDOW_MS);
  }

  private key(key: string): string {
    return `${this.generations.get('generation')?.count ?? 0}:${key}`;
  }

  init(options: { windowMs: number }): void {
    this.windowMs = options.windowMs;
  }

  increment(key: string): ClientRateLimitInfo {
    const { count, resetAt } = this.counters.increment(this.key(key), this.windowMs);
    // A full table with onFull: 'allow' answers 0; express-rate-limit wants at least 1 (and lets 1 pass).
    return { totalHits: Math.max(1, count), resetTime: new Date(resetAt) };
  }

  decrement(key: string): void {
    this.counters.decrement(this.key(key));
  }

  resetKey(key: string): void {
    this.counters.reset(this.key(key));
  }

  get(key: string): ClientRateLimitInfo | undefined {
    const value = this.counters.get(this.key(key));
    return value ? { totalHits: value.count, resetTime: new Date(value.resetAt) } : undefined;
  }
}

type RouteParams = { routeInfo?: { method?: string | string[]; url?: string } };
type Reply = { current: number; ttl: number };

/**
 * @fastify/rate-limit's store: `fastify.register(rateLimit, { max, timeWindow, store: FastifyRateLimitStore })`.
 * The plugin constructs it. Keys are prefixed 'fastify-rate-limit:'; each route with its own limits, and each
 * limiter made with `fastify.createRateLimit()`, counts under its own prefix, as the plugin's own store keeps a
 * map per route. (Workers run the same code, so they make their limiters in the same order: the n-th
 * limiter of every worker shares counters with the n-th of the others.) `continueExceeding` and
 * `exponentialBackoff` are not supported: hits count in fixed windows.
 */
export class FastifyRateLimitStore {
  private readonly counters: CounterStore;
  private children = 0;

  constructor(_params: RouteParams = {}, prefix = 'fastify-rate-limit:') {
    this.counters = new CounterStore({ prefix, onFull: 'allow' });
  }

  incr(key: string, callback: (error: Error | null, reply?: Reply) => void, timeWindow: number): void {
    let reply: Reply;
    try {
      const { count, resetAt } = this.counters.increment(key, Math.max(1, Math.trunc(timeWindow)));
      reply = { current: count, ttl: Math.max(0, resetAt - Date.now()) };
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback(null, reply);
  }

  read(key: string, callback: (error: Error | null, reply?: Reply) => void): void {
    const value = this.counters.get(key);
    callback(null, value ? { current: value.count, ttl: Math.max(0, value.resetAt - Date.now()) } : { current: 0, ttl: 0 });
  }

  child(routeParams: RouteParams): FastifyRateLimitStore {
    const route = routeParams.routeInfo?.url ? `${[routeParams.routeInfo.method].flat().join(',')} ${routeParams.routeInfo.url}` : `#${++this.children}`;
    return new FastifyRateLimitStore(routeParams, `${this.counters.prefix}${route}:`);
  }
}
