// CounterStore: windowed counters shared by every worker of a prefork primary (a private region elsewhere).
import { createHash } from 'node:crypto';
import { closeSync } from 'node:fs';
import { native } from '../core/binding';
import { BUSY, CounterTable, FULL, hashKey, MAX_STORED_KEY, MAX_WAIT_MS, regionBytes, type CounterValue, type TableKey } from './counter-table';
import { warnFullOncePerMinute } from './full-warning';
import { invalidType, invalidValue, outOfRange, preforkError } from '../errors';
import { DEFAULT_STORE_CAPACITY, MAX_KEY_LENGTH } from '../limits';
import { MAX_COUNT } from './table-layout';
import { STORE_FD } from '../protocol/messages';
import { checkOptionNames, checkOptionsObject } from '../validate';
import { inheritedStoreCapacity } from '../worker/context';

export type { CounterValue } from './counter-table';

/** A year: windows are float64 times in the table, so this is a sanity bound, not a storage one. */
export const MAX_WINDOW_MS = 365 * 24 * 3600 * 1000;
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

/**
 * The primary's region for `capacity` keys (0: none): the one the old primary of a hot upgrade handed over, whose
 * counts stay, when its capacity is the same; else a new one (the handed one is closed, and the change logged).
 */
export function openPrimaryRegion(capacity: number, handed: { fd: number; capacity: number } | null): { fd: number; table: CounterTable } | null {
  if (handed && handed.capacity === capacity) {
    return { fd: handed.fd, table: new CounterTable(native.mapSharedRegion(handed.fd, regionBytes(capacity)), capacity, false) };
  }
  if (handed) {
    closeSync(handed.fd);
    process.stderr.write(`prefork: storeCapacity changed (${handed.capacity} → ${capacity}): the shared counters start over\n`);
  }
  return capacity > 0 ? createRegion(capacity) : null;
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
  /**
   * When the table cannot answer for the key: its probe window holds only live windows (full), or another
   * process held what the call needed for over 1 ms (busy). 'error' throws ERR_PREFORK_STORE_FULL or
   * ERR_PREFORK_STORE_BUSY; 'allow' answers as if the key had no hits (an increment: count 0, so a rate limiter
   * lets the request through) and prints one warning per process per minute. Default 'error' (the rate-limit
   * stores: 'allow').
   */
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
    this.prefixHash = table.startHash(this.prefix);
  }

  /** Counts one hit for `key` in its window of `windowMs` ms (a new window starts when the last has ended). */
  increment(key: string, windowMs: number): CounterValue {
    return this.add(key, 1, windowMs);
  }

  /** Counts `amount` hits (a whole number from 0) for `key`, as increment() does one. */
  add(key: string, amount: number, windowMs: number): CounterValue {
    const now = currentTime();
    return this.answer(this.table.add(this.storedKey(key), checkAmount(amount), checkWindow(windowMs), now), now, windowMs);
  }

  /** Sets the key's count, in a window ending `windowMs` from now (never earlier than its current window). */
  set(key: string, count: number, windowMs: number): CounterValue {
    const now = currentTime();
    return this.answer(this.table.set(this.storedKey(key), checkAmount(count, 'count'), checkWindow(windowMs), now), now, windowMs);
  }

  /** Takes back one hit in the key's current window (never below 0). */
  decrement(key: string): void {
    this.subtract(key, 1);
  }

  /** Takes back `amount` hits in the key's current window (never below 0). */
  subtract(key: string, amount: number): void {
    if (this.table.subtract(this.storedKey(key), checkAmount(amount), currentTime()) === BUSY) this.busy();
  }

  /** Forgets the key's window: its next increment counts 1. */
  reset(key: string): void {
    if (this.table.reset(this.storedKey(key), currentTime()) === BUSY) this.busy();
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

  private answer(result: CounterValue | typeof FULL | typeof BUSY, now: number, windowMs: number): CounterValue {
    if (result === BUSY) {
      this.busy();
      return { count: 0, resetAt: now + windowMs };
    }
    if (result !== FULL) return result;
    const problem = `The counter store is full (${this.table.capacity} keys; this key's neighbourhood holds only live windows)`;
    if (this.onFull === 'allow') {
      warnFullOncePerMinute(`${problem}: letting requests through (onFull: 'allow'); raise the supervisor's storeCapacity`);
      return { count: 0, resetAt: now + windowMs };
    }
    throw preforkError('ERR_PREFORK_STORE_FULL', `${problem}: raise the supervisor's storeCapacity or use onFull: 'allow'`);
  }

  /** A call the table gave up on (BUSY): it changed nothing. Throws, or with onFull: 'allow' warns and returns. */
  private busy(): void {
    const problem = `The counter store is busy (another process held this key's entry for over ${MAX_WAIT_MS} ms, for example one stopped in the middle of an update; the call changed nothing)`;
    if (this.onFull === 'allow') {
      warnFullOncePerMinute(`${problem}: letting requests through (onFull: 'allow')`);
      return;
    }
    throw preforkError('ERR_PREFORK_STORE_BUSY', `${problem}: retry, or use onFull: 'allow' to let requests through`);
  }

  private storedKey(key: string): TableKey {
    if (typeof key !== 'string') throw invalidType('key', 'of type string', key);
    if (key.length === 0) throw invalidValue('key', 'must be a non-empty string', key);
    if (key.length > MAX_KEY_LENGTH) throw outOfRange('key', `at most ${MAX_KEY_LENGTH} characters long`, `${key.length} characters`);
    const tableKey = this.tableKey;
    if (this.prefix.length + key.length <= MAX_STORED_KEY) {
      tableKey.prefix = this.prefix;
      tableKey.key = key;
      tableKey.hash = this.table.finishHash(hashKey(key, this.prefixHash));
    } else {
      // Hashed as UTF-16 (lone surrogates stay distinct), and with a hash of its own: a short key spelled
      // like a digest never matches the digest's entry.
      tableKey.prefix = '';
      tableKey.key = `#${createHash('sha256').update(Buffer.from(this.prefix + key, 'utf16le')).digest('base64')}`;
      tableKey.hash = this.table.finishHash(hashKey(tableKey.key, this.table.startHash('')) ^ DIGEST_HASH_TAG);
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

function checkAmount(amount: number, name = 'amount'): number {
  if (typeof amount !== 'number') throw invalidType(name, 'of type number', amount);
  if (!Number.isInteger(amount) || amount < 0 || amount > MAX_COUNT) throw outOfRange(name, `an integer from 0 to ${MAX_COUNT}`, amount);
  return amount;
}

function checkWindow(windowMs: number): number {
  if (typeof windowMs !== 'number') throw invalidType('windowMs', 'of type number', windowMs);
  if (!Number.isInteger(windowMs) || windowMs < 1 || windowMs > MAX_WINDOW_MS) {
    throw outOfRange('windowMs', `an integer from 1 to ${MAX_WINDOW_MS}`, windowMs);
  }
  return windowMs;
}
