// RateLimiterPrefork: rate-limiter-flexible's RateLimiterMemory interface on the shared counter table, so its
// examples, middlewares and wrappers count across every worker (its RateLimiterCluster needs node:cluster IPC).
import { invalidType, outOfRange } from '../errors';
import { checkOptionNames, checkOptionsObject } from '../validate';
import { CounterStore, MAX_WINDOW_MS } from './counter-store';
import type { CounterValue } from './table-layout';

export interface RateLimiterPreforkOptions {
  /** Points a key may consume per duration. Default 4 (as rate-limiter-flexible). */
  points?: number;
  /** Seconds of each window; 0: never ends (a year, the table's longest). Default 1. */
  duration?: number;
  /** Seconds a key is blocked for once it consumed more than `points`; 0: not blocked. Default 0. */
  blockDuration?: number;
  /** Prepended to keys ("rlflx:key"), so limiters do not share counts. Default 'rlflx'. */
  keyPrefix?: string;
  /** A full table: 'allow' lets the request through (one warning per minute), 'error' rejects with an Error. Default 'allow'. */
  onFull?: 'allow' | 'error';
}

/** The shape of rate-limiter-flexible's RateLimiterRes (its own class is used when it is installed). */
class PreforkRateLimiterRes {
  constructor(
    public remainingPoints = 0,
    public msBeforeNext = 0,
    public consumedPoints = 0,
    public isFirstInDuration = false,
  ) {}

  toJSON() {
    return { remainingPoints: this.remainingPoints, msBeforeNext: this.msBeforeNext, consumedPoints: this.consumedPoints, isFirstInDuration: this.isFirstInDuration };
  }

  toString(): string {
    return JSON.stringify(this.toJSON());
  }
}

type RateLimiterRes = PreforkRateLimiterRes;
type ResClass = new (remainingPoints?: number, msBeforeNext?: number, consumedPoints?: number, isFirstInDuration?: boolean) => RateLimiterRes;

function resClass(): ResClass {
  try {
    return (require('rate-limiter-flexible') as { RateLimiterRes: ResClass }).RateLimiterRes;
  } catch {
    return PreforkRateLimiterRes;
  }
}

const OPTION_NAMES = ['points', 'duration', 'blockDuration', 'keyPrefix', 'onFull'] as const;

function seconds(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value);
  if (!(value >= 0 && value <= MAX_WINDOW_MS / 1000)) throw outOfRange(name, `a number of seconds from 0 to ${MAX_WINDOW_MS / 1000}`, value);
  return value;
}

function points(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < 0) throw outOfRange(name, 'an integer from 0', value);
  return value;
}

export class RateLimiterPrefork {
  readonly points: number;
  readonly duration: number;
  readonly blockDuration: number;
  readonly keyPrefix: string;
  private readonly counters: CounterStore;
  private readonly Res = resClass();

  constructor(options: RateLimiterPreforkOptions = {}) {
    checkOptionsObject('RateLimiterPrefork', options);
    checkOptionNames('RateLimiterPrefork', options, OPTION_NAMES);
    this.points = points('points', options.points, 4);
    this.duration = seconds('duration', options.duration, 1);
    this.blockDuration = seconds('blockDuration', options.blockDuration, 0);
    if (options.keyPrefix !== undefined && typeof options.keyPrefix !== 'string') throw invalidType('keyPrefix', 'of type string', options.keyPrefix);
    this.keyPrefix = options.keyPrefix ?? 'rlflx';
    this.counters = new CounterStore({ prefix: this.keyPrefix ? `${this.keyPrefix}:` : '', onFull: (options.onFull as 'allow' | 'error' | undefined) ?? 'allow' });
  }

  getKey(key: string | number): string {
    return this.keyPrefix ? `${this.keyPrefix}:${key}` : String(key);
  }

  /** Consumes points; rejects with a RateLimiterRes once the key consumed more than `points` in its window. */
  async consume(key: string | number, pointsToConsume = 1, options: { customDuration?: number } = {}): Promise<RateLimiterRes> {
    const used = points('pointsToConsume', pointsToConsume, 1);
    const value = this.counters.add(String(key), used, this.windowMs(options.customDuration));
    let result = this.res(value, used);
    if (result.consumedPoints > this.points) {
      // Blocked once, when the key first goes over (as rate-limiter-flexible does).
      if (this.blockDuration > 0 && result.consumedPoints <= this.points + used) {
        result = this.res(this.counters.set(String(key), result.consumedPoints, this.blockDuration * 1000), used);
      }
      throw result;
    }
    return result;
  }

  async penalty(key: string | number, penalty = 1, options: { customDuration?: number } = {}): Promise<RateLimiterRes> {
    const added = points('points', penalty, 1);
    return this.res(this.counters.add(String(key), added, this.windowMs(options.customDuration)), added);
  }

  /** Gives points back (the count never goes below 0). */
  async reward(key: string | number, reward = 1): Promise<RateLimiterRes> {
    this.counters.subtract(String(key), points('points', reward, 1));
    return this.res(this.counters.get(String(key)), 0);
  }

  /** Blocks the key for `secDuration` seconds (0: for good, a year): it consumed points + 1. */
  async block(key: string | number, secDuration: number): Promise<RateLimiterRes> {
    const duration = seconds('secDuration', secDuration, 0);
    this.counters.set(String(key), this.points + 1, duration === 0 ? MAX_WINDOW_MS : duration * 1000);
    return new this.Res(0, duration === 0 ? -1 : duration * 1000, this.points + 1);
  }

  async set(key: string | number, consumed: number, secDuration: number): Promise<RateLimiterRes> {
    const duration = seconds('secDuration', secDuration, this.duration);
    this.counters.set(String(key), points('points', consumed, 0), duration === 0 ? MAX_WINDOW_MS : duration * 1000);
    return new this.Res(0, duration === 0 ? -1 : duration * 1000, consumed);
  }

  async get(key: string | number): Promise<RateLimiterRes | null> {
    const value = this.counters.get(String(key));
    return value ? this.res(value, 0) : null;
  }

  /** Forgets the key; true when it had points in a current window. */
  async delete(key: string | number): Promise<boolean> {
    const existed = this.counters.get(String(key)) !== null;
    this.counters.reset(String(key));
    return existed;
  }

  private windowMs(customDuration: number | undefined): number {
    const duration = seconds('customDuration', customDuration, this.duration);
    return duration === 0 ? MAX_WINDOW_MS : Math.max(1, Math.round(duration * 1000));
  }

  private res(value: CounterValue | null, consumed: number): RateLimiterRes {
    const count = value?.count ?? 0;
    const msBeforeNext = value ? (this.duration === 0 ? -1 : Math.max(0, value.resetAt - Date.now())) : 0;
    return new this.Res(Math.max(0, this.points - count), msBeforeNext, count, consumed > 0 && count === consumed);
  }
}
