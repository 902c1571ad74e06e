// Rate-limit stores on the shared counter store: for express-rate-limit 8 and @fastify/rate-limit.
import { CounterStore, type CounterStoreOptions } from './store';

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
    return { totalHits: count, resetTime: new Date(resetAt) };
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

type RouteParams = { nameSpace?: string; timeWindow?: number; routeInfo?: { method?: string | string[]; url?: string } };
type Reply = { current: number; ttl: number };

/**
 * @fastify/rate-limit's store: `fastify.register(rateLimit, { max, timeWindow, store: FastifyRateLimitStore })`.
 * The plugin constructs it; its `nameSpace` option is the key prefix (default 'fastify-rate-limit-'), and
 * each route with its own limits counts under its own prefix, as the plugin's built-in store does.
 * `continueExceeding` and `exponentialBackoff` are not supported (hits count in fixed windows).
 */
export class FastifyRateLimitStore {
  private readonly counters: CounterStore;

  constructor(params: RouteParams = {}) {
    const route = params.routeInfo?.url ? `${[params.routeInfo.method].flat().join(',')}:${params.routeInfo.url}:` : '';
    this.counters = new CounterStore({ prefix: `${params.nameSpace ?? 'fastify-rate-limit-'}${route}` });
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

  read(key: string, callback: (error: Error | null, reply?: Reply) => void, timeWindow: number): void {
    const value = this.counters.get(key);
    callback(null, value ? { current: value.count, ttl: Math.max(0, value.resetAt - Date.now()) } : { current: 0, ttl: timeWindow });
  }

  child(routeParams: RouteParams): FastifyRateLimitStore {
    return new FastifyRateLimitStore(routeParams);
  }
}
