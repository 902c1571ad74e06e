// CounterStore: windowed counters shared by every worker of a prefork primary (a private region elsewhere).
import { createHash } from 'node:crypto';
import { closeSync } from 'node:fs';
import { native } from '../core/binding';
import { CounterTable, FULL, hashKey, MAX_STORED_KEY, regionBytes, type CounterValue, type TableKey } from './counter-table';
import { invalidType, invalidValue, outOfRange, preforkError } from '../errors';
import { DEFAULT_STORE_CAPACITY, MAX_KEY_LENGTH } from '../limits';
import { STORE_FD } from '../protocol/messages';
import { checkOptionNames, checkOptionsObject } from '../validate';
import { inheritedStoreCapacity } from '../worker/context';

export type { CounterValue } from './counter-table';

/** A year: windows are float64 times in the table, so this is a sanity bound, not a storage one. */
const MAX_WINDOW_MS = 365 * 24 * 3600 * 1000;
const DIGEST_HASH_TAG = 0x5bd1e995;

/** Creates a region for `capacity` keys: the primary's shared one, or a private one. Returns its fd and table. */
export function createRegion(capacity: number): { fd: number; table: CounterTable } {
  const fd = native.createSharedRegion(regionBytes(capacity));
  try {
    return { fd, table: new CounterTable(native.mapSharedRegion(fd, regionBytes(capacity)), capacity, true) };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

const TABLE_KEY = Symbol.for('prefork.counterTable');
type TableHolder = { [TABLE_KEY]?: CounterTable };

/** This process's table: the primary's region in a worker; otherwise a private one (development, tests). */
function processTable(): CounterTable {
  const holder = globalThis as TableHolder;
  if (holder[TABLE_KEY]) return holder[TABLE_KEY];
  const capacity = inheritedStoreCapacity();
  let table: CounterTable;
  if (capacity !== null) {
    table = new CounterTable(native.mapSharedRegion(STORE_FD, regionBytes(capacity)), capacity, false);
  } else {
    const { fd, table: privateTable } = createRegion(DEFAULT_STORE_CAPACITY);
    closeSync(fd); // the mapping stays
    table = privateTable;
  }
  holder[TABLE_KEY] = table;
  return table;
}

export interface CounterStoreOptions {
  /** Prepended to every key, so stores that share the table do not share counters. Default ''. */
  prefix?: string;
  /** When the table is full and no entry has expired: 'error' throws ERR_PREFORK_STORE_FULL (default);
   *  'allow' answers count 0 (fail open: a rate limiter then lets the request through). */
  onFull?: 'error' | 'allow';
}

/**
 * Counters with a fixed window each, shared by all workers of a prefork primary through shared memory,
 * updated with atomic operations. Outside prefork it works the same on a private table.
 */
export class CounterStore {
  readonly prefix: string;
  readonly onFull: 'error' | 'allow';
  private readonly table: CounterTable;
  private readonly prefixHash: number;
  /** Reused for every call: the hot path allocates nothing but its result. */
  private readonly tableKey: TableKey = { prefix: '', key: '', hash: 0 };

  /** `table` is internal (a supervisor's own region); users pass options only. */
  constructor(options: CounterStoreOptions = {}, table: CounterTable = processTable()) {
    checkOptionsObject('CounterStore', options);
    checkOptionNames('CounterStore', options, ['prefix', 'onFull']);
    if (options.prefix !== undefined && typeof options.prefix !== 'string') throw invalidType('prefix', 'of type string', options.prefix);
    if (options.onFull !== undefined && options.onFull !== 'error' && options.onFull !== 'allow') {
      throw invalidValue('onFull', `must be 'error' or 'allow'`, options.onFull);
    }
    this.prefix = options.prefix ?? '';
    this.onFull = options.onFull ?? 'error';
    this.table = table;
    this.prefixHash = hashKey(this.prefix);
  }

  /** Counts one hit for `key` in its window of `windowMs` ms (a new window starts when the last has ended). */
  increment(key: string, windowMs: number): CounterValue {
    const now = currentTime();
    const result = this.table.increment(this.storedKey(key), checkWindow(windowMs), now);
    if (result !== FULL) return result;
    if (this.onFull === 'allow') return { count: 0, resetAt: now + windowMs };
    throw preforkError(
      'ERR_PREFORK_STORE_FULL',
      `The counter store is full (${this.table.capacity} keys, none expired): raise the supervisor's storeCapacity or use onFull: 'allow'`,
    );
  }

  /** Takes back one hit in the key's current window (never below 0). */
  decrement(key: string): void {
    this.table.decrement(this.storedKey(key), currentTime());
  }

  /** Forgets the key's window: its next increment counts 1. */
  reset(key: string): void {
    this.table.reset(this.storedKey(key));
  }

  /** The key's count and window end, or null when it has no hits in a current window. */
  get(key: string): CounterValue | null {
    return this.table.get(this.storedKey(key), currentTime());
  }

  /** Keys the table holds now (expired ones included until they are reused). */
  get size(): number {
    return this.table.size();
  }

  get capacity(): number {
    return this.table.capacity;
  }

  private storedKey(key: string): TableKey {
    if (typeof key !== 'string') throw invalidType('key', 'of type string', key);
    if (key.length === 0) throw invalidValue('key', 'must be a non-empty string', key);
    if (key.length > MAX_KEY_LENGTH) throw outOfRange('key', `at most ${MAX_KEY_LENGTH} characters long`, `${key.length} characters`);
    const tableKey = this.tableKey;
    if (this.prefix.length + key.length <= MAX_STORED_KEY) {
      tableKey.prefix = this.prefix;
      tableKey.key = key;
      tableKey.hash = hashKey(key, this.prefixHash);
    } else {
      // Hashed as UTF-16 (lone surrogates stay distinct), and with a hash of its own: a short key spelled
      // like a digest never matches the digest's entry.
      tableKey.prefix = '';
      tableKey.key = `#${createHash('sha256').update(Buffer.from(this.prefix + key, 'utf16le')).digest('base64')}`;
      tableKey.hash = hashKey(tableKey.key) ^ DIGEST_HASH_TAG;
    }
    return tableKey;
  }
}

// Date.now() costs more than the rest of an increment. The time is read again every 64 calls, and at the
// first call after the current task (a queued microtask marks it stale): it is never more than a task old.
let clockNow = 0;
let clockUses = 0;
let clockStaleQueued = false;
const markClockStale = () => {
  clockUses = 0;
  clockStaleQueued = false;
};

function currentTime(): number {
  if (clockUses-- > 0) return clockNow;
  clockNow = Date.now();
  clockUses = 63;
  if (!clockStaleQueued) {
    clockStaleQueued = true;
    queueMicrotask(markClockStale);
  }
  return clockNow;
}

function checkWindow(windowMs: number): number {
  if (typeof windowMs !== 'number') throw invalidType('windowMs', 'of type number', windowMs);
  if (!Number.isInteger(windowMs) || windowMs < 1 || windowMs > MAX_WINDOW_MS) {
    throw outOfRange('windowMs', `an integer from 1 to ${MAX_WINDOW_MS}`, windowMs);
  }
  return windowMs;
}
