// Rate-limit stores on the shared counter store: for express-rate-limit 8 and @fastify/rate-limit.
import { CounterStore, type CounterStoreOptions } from './counter-store';

interface ClientRateLimitInfo {
  totalHits: number;
  resetTime: Date | undefined;
}

/**
 * express-rate-limit's `Store`: `rateLimit({ windowMs, limit, store: new RateLimitStore() })` counts hits
 * across all workers. One store per limiter (give each its own `prefix`, default 'rl:').
 */
export class RateLimitStore {
  readonly prefix: string;
  /** Tells express-rate-limit the counts are shared, not per process. */
  readonly localKeys = false;
  private windowMs = 60000;
  private readonly counters: CounterStore;

  constructor(options: CounterStoreOptions = {}) {
    this.counters = new CounterStore({ prefix: 'rl:', ...options });
    this.prefix = this.counters.prefix;
  }

  init(options: { windowMs: number }): void {
    this.windowMs = options.windowMs;
  }

  increment(key: string): ClientRateLimitInfo {
    const { count, resetAt } = this.counters.increment(key, this.windowMs);
    // A full table with onFull: 'allow' answers 0; express-rate-limit wants at least 1 (and lets 1 pass).
    return { totalHits: Math.max(1, count), resetTime: new Date(resetAt) };
  }

  decrement(key: string): void {
    this.counters.decrement(key);
  }

  resetKey(key: string): void {
    this.counters.reset(key);
  }

  get(key: string): ClientRateLimitInfo | undefined {
    const value = this.counters.get(key);
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
    this.counters = new CounterStore({ prefix });
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
