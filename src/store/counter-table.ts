// A fixed-capacity hash table of windowed counters in a shared ArrayBuffer: one 64-bit word per entry holds
// (window end, count), changed by one compare-and-swap. A process killed at any instruction leaves the table
// usable; what it was claiming or rewriting (marked with its pid) is finished or undone by the next process.
//
// Invariants (the proofs the tests check):
// 1. One key, one entry: keys are inserted only into the first empty entry along their probe sequence, and
//    ended entries are rewritten for new keys only under the table's reclaim lock, after looking the key up.
// 2. `end` never decreases within an entry. It grows by at least 1 whenever a window opens, a key is reset
//    (count 0, end + 1) or the entry is rewritten for another key (end + 1). So no value the entry held for
//    one key can ever be held again for the key that replaced it: a process that matched the old key and
//    loaded its word cannot CAS into the new key's counter (no ABA, no tag).
// 3. A reader re-checks the entry's incarnation after loading the word: the word it CASes is its key's.
// 4. A window opens only by a CAS from a word whose window had ended by this process's clock (or had no
//    hits): a live window is never replaced, whatever another process's clock says. Clocks of processes on
//    one machine are the same kernel clock; a process's `now` may lag (it is read once per task), which
//    only makes it see a window end later, never earlier.
// 5. Every retry loop is bounded; past the bound the caller gets a defined answer (FULL, or nothing found).
//
// Keys are passed as (prefix, key) and compared in two parts, so the hot path builds no string.
import { getRandomValues } from 'node:crypto';
import {
  ABSENT, alive, COUNTER, decode, decoded, EMPTY, encode, ENTRY_WORDS, FULL, H_CAPACITY, H_ENTRY_WORDS, H_EPOCH,
  H_MAGIC, H_RECLAIM_LOCK, H_SEED, HASH, hashKey, finishHash, HEADER_WORDS, INCARNATION, KEY, LENGTH, LIVE, LOCKED, MAGIC,
  MAX_COUNT, MAX_PROBES, MAX_STALL_CHECKS, OWNER, STALL_CHECK_SPINS, STATE, type CounterValue, type TableKey,
} from './table-layout';

export { FULL, hashKey, LAYOUT, MAX_PROBES, MAX_STORED_KEY, regionBytes } from './table-layout';
export type { CounterValue, TableKey } from './table-layout';

/** CAS attempts on one key before the answer is FULL (contention this high means something is wrong). */
const MAX_ATTEMPTS = 100_000;
const EPOCH_MARGIN_MS = 24 * 3600 * 1000; // a process whose clock is behind the creator's still counts from >= 0

/** Called before (`try`) and after (`done`) each counter CAS that succeeds; the model-checking test logs them. */
export type Trace = (phase: 'try' | 'done', key: TableKey, from: bigint, to: bigint, now: number) => void;

export class CounterTable {
  readonly capacity: number;
  /** ms since 1970 that window ends are counted from (the region's, shared by every process). */
  readonly epoch: number;
  trace: Trace | null = null;
  private readonly maxProbes: number;
  private readonly words: Int32Array;
  private readonly counters: BigInt64Array;
  private readonly chars: Uint16Array;
  private readonly seeds: [number, number];
  private readonly pid = process.pid;
  /** The incarnation locate() saw when it matched the key (avoids an allocation per call). */
  private matchedIncarnation = 0;

  /** `initialize`: the creator writes the header (a random seed, the epoch); everyone else checks it. */
  constructor(buffer: ArrayBuffer, capacity: number, initialize: boolean) {
    this.words = new Int32Array(buffer);
    this.counters = new BigInt64Array(buffer);
    this.chars = new Uint16Array(buffer);
    const floats = new Float64Array(buffer);
    if (initialize) {
      this.words[H_CAPACITY] = capacity;
      this.words[H_ENTRY_WORDS] = ENTRY_WORDS;
      this.words.set(getRandomValues(new Int32Array(2)), H_SEED);
      floats[H_EPOCH / 2] = Date.now() - EPOCH_MARGIN_MS;
      Atomics.store(this.words, H_MAGIC, MAGIC);
    } else if (Atomics.load(this.words, H_MAGIC) !== MAGIC || this.words[H_CAPACITY] !== capacity || this.words[H_ENTRY_WORDS] !== ENTRY_WORDS) {
      throw new Error('prefork: the shared counter region has another layout (a different prefork version?)');
    }
    this.capacity = capacity;
    this.epoch = floats[H_EPOCH / 2];
    this.seeds = [this.words[H_SEED], this.words[H_SEED + 1]];
    this.maxProbes = Math.min(capacity, MAX_PROBES);
  }

  /** The keyed hash of a prefix, to continue with hashKey(key, it) and finish with finishHash(). */
  startHash(prefix: string): number {
    return hashKey(prefix, (0x811c9dc5 ^ this.seeds[0]) | 0);
  }

  finishHash(hash: number): number {
    return finishHash(hash, this.seeds[1]);
  }

  /** Adds `amount` in the key's current window, or opens a new one of `windowMs` if it ended. FULL: no room. */
  add(key: TableKey, amount: number, windowMs: number, now: number): CounterValue | typeof FULL {
    const at = now - this.epoch;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let entry = this.locate(key, true);
      if (entry === FULL) entry = this.reclaim(key, at);
      if (entry < 0) return FULL;
      const word = this.loadCounter(entry);
      if (word === null) continue;
      let { end } = decoded;
      let count: number;
      if (decoded.count > 0 && at < end) {
        count = Math.min(MAX_COUNT, decoded.count + amount);
      } else {
        end = Math.max(at + windowMs, end + 1);
        count = Math.min(MAX_COUNT, amount);
      }
      if (this.swap(entry, key, word, encode(end, count), now)) return { count, resetAt: end + this.epoch };
    }
    return FULL;
  }

  increment(key: TableKey, windowMs: number, now: number): CounterValue | typeof FULL {
    return this.add(key, 1, windowMs, now);
  }

  /** Takes `amount` back in the current window (never below 0; at 0 the window has no hits left). */
  subtract(key: TableKey, amount: number, now: number): void {
    this.update(key, now, () => (decoded.count > 0 && now - this.epoch < decoded.end ? encode(decoded.end, Math.max(0, decoded.count - amount)) : null));
  }

  decrement(key: TableKey, now: number): void {
    this.subtract(key, 1, now);
  }

  /** Ends the key's window: its next increment opens a new one. */
  reset(key: TableKey, now: number): void {
    this.update(key, now, () => (decoded.count > 0 ? encode(decoded.end + 1, 0) : null));
  }

  /**
   * Sets the count, in a window ending `windowMs` from now (or later: a window never ends earlier than the
   * one it replaces, see invariant 2). FULL: no room.
   */
  set(key: TableKey, count: number, windowMs: number, now: number): CounterValue | typeof FULL {
    const at = now - this.epoch;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let entry = this.locate(key, true);
      if (entry === FULL) entry = this.reclaim(key, at);
      if (entry < 0) return FULL;
      const word = this.loadCounter(entry);
      if (word === null) continue;
      const end = Math.max(at + windowMs, decoded.end + 1);
      const capped = Math.min(MAX_COUNT, count);
      if (this.swap(entry, key, word, encode(end, capped), now)) return { count: capped, resetAt: end + this.epoch };
    }
    return FULL;
  }

  /** The key's count in its current window, or null when it has none. */
  get(key: TableKey, now: number): CounterValue | null {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const entry = this.locate(key, false);
      if (entry < 0) return null;
      if (this.loadCounter(entry) === null) continue;
      return decoded.count > 0 && now - this.epoch < decoded.end ? { count: decoded.count, resetAt: decoded.end + this.epoch } : null;
    }
    return null;
  }

  /** Entries in use (for tests and stats; a snapshot). */
  size(): number {
    let used = 0;
    for (let index = 0; index < this.capacity; index++) {
      if (Atomics.load(this.words, HEADER_WORDS + index * ENTRY_WORDS + STATE) !== EMPTY) used += 1;
    }
    return used;
  }

  // ---- internals -----------------------------------------------------------------------------

  /** One CAS per attempt: `next()` gives the new word from `decoded`, or null for nothing to do. */
  private update(key: TableKey, now: number, next: () => bigint | null): void {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const entry = this.locate(key, false);
      if (entry < 0) return;
      const word = this.loadCounter(entry);
      if (word === null) continue;
      const wanted = next();
      if (wanted === null || this.swap(entry, key, word, wanted, now)) return;
    }
  }

  /** The counter word of the entry locate() just matched, decoded; null if it is locked or no longer that key's. */
  private loadCounter(entry: number): bigint | null {
    const word = Atomics.load(this.counters, (entry + COUNTER) >> 1);
    decode(word);
    if (decoded.count === LOCKED) {
      this.settle(entry);
      return null;
    }
    return Atomics.load(this.words, entry + INCARNATION) === this.matchedIncarnation ? word : null;
  }

  private swap(entry: number, key: TableKey, from: bigint, to: bigint, now: number): boolean {
    this.trace?.('try', key, from, to, now);
    if (Atomics.compareExchange(this.counters, (entry + COUNTER) >> 1, from, to) !== from) return false;
    this.trace?.('done', key, from, to, now);
    return true;
  }

  private holds(entry: number, { prefix, key, hash }: TableKey): boolean {
    if (this.words[entry + HASH] !== hash || this.words[entry + LENGTH] !== prefix.length + key.length) return false;
    const base = (entry + KEY) * 2;
    for (let i = 0; i < prefix.length; i++) if (this.chars[base + i] !== prefix.charCodeAt(i)) return false;
    const rest = base + prefix.length;
    for (let i = 0; i < key.length; i++) if (this.chars[rest + i] !== key.charCodeAt(i)) return false;
    return true;
  }

  /**
   * Linear probing from the key's home slot, one atomic load per entry on the way. With `create`, claims the
   * first empty entry (invariant 1). Sets matchedIncarnation. ABSENT / FULL also when another process holds
   * an entry on the way for too long (invariant 5).
   */
  private locate(key: TableKey, create: boolean): number {
    let index = (key.hash >>> 0) % this.capacity;
    for (let probes = 0; probes < this.maxProbes; probes++, index = index + 1 === this.capacity ? 0 : index + 1) {
      const entry = HEADER_WORDS + index * ENTRY_WORDS;
      for (let attempt = 0; ; attempt++) {
        if (attempt > MAX_STALL_CHECKS) return create ? FULL : ABSENT;
        const incarnation = Atomics.load(this.words, entry + INCARNATION);
        if (incarnation === 0) {
          // Not published yet: empty, being claimed, or just published.
          const state = Atomics.load(this.words, entry + STATE);
          if (state === EMPTY) {
            if (!create) return ABSENT;
            if (Atomics.compareExchange(this.words, entry + STATE, EMPTY, -this.pid) !== EMPTY) continue;
            this.writeKey(entry, key);
            Atomics.store(this.counters, (entry + COUNTER) >> 1, 0n);
            Atomics.store(this.words, entry + STATE, LIVE);
            Atomics.store(this.words, entry + INCARNATION, 2); // published: the key words are settled
            continue;
          }
          if (state < 0) this.settle(entry);
          // LIVE but not yet marked published: the key was written before LIVE, so finish the publishing
          // (its publisher may have died between the two stores).
          else Atomics.compareExchange(this.words, entry + INCARNATION, 0, 2);
          continue;
        }
        if (incarnation & 1) {
          this.settle(entry); // being rewritten for another key (or left half-rewritten by a dead process)
          continue;
        }
        if (this.holds(entry, key)) {
          this.matchedIncarnation = incarnation;
          return entry;
        }
        break;
      }
    }
    return create ? FULL : ABSENT;
  }

  private writeKey(entry: number, { prefix, key, hash }: TableKey): void {
    const base = (entry + KEY) * 2;
    for (let i = 0; i < prefix.length; i++) this.chars[base + i] = prefix.charCodeAt(i);
    for (let i = 0; i < key.length; i++) this.chars[base + prefix.length + i] = key.charCodeAt(i);
    this.words[entry + LENGTH] = prefix.length + key.length;
    this.words[entry + HASH] = hash;
  }

  /**
   * A full probe window: the first entry along it whose window has ended (or that matches no key) is rewritten
   * for `key`, under the reclaim lock, after one more lookup (invariant 1). Live windows are never taken: a
   * key that finds none gets FULL, and its caller the onFull answer.
   */
  private reclaim(key: TableKey, at: number): number {
    if (!this.tryLock()) return FULL;
    try {
      const existing = this.locate(key, false);
      if (existing >= 0) return existing;
      let index = (key.hash >>> 0) % this.capacity;
      for (let probes = 0; probes < this.maxProbes; probes++, index = index + 1 === this.capacity ? 0 : index + 1) {
        const entry = HEADER_WORDS + index * ENTRY_WORDS;
        const incarnation = Atomics.load(this.words, entry + INCARNATION);
        if (incarnation === 0 || incarnation & 1) continue;
        const word = Atomics.load(this.counters, (entry + COUNTER) >> 1);
        decode(word);
        const { end, count } = decoded;
        if (count === LOCKED || (this.words[entry + LENGTH] !== -1 && count > 0 && at < end)) continue;
        Atomics.store(this.words, entry + OWNER, this.pid);
        if (Atomics.compareExchange(this.counters, (entry + COUNTER) >> 1, word, encode(end, LOCKED)) !== word) continue;
        this.rewrite(entry, end, key);
        return this.locate(key, false);
      }
      return FULL;
    } finally {
      Atomics.compareExchange(this.words, H_RECLAIM_LOCK, this.pid, 0);
    }
  }

  /** With the counter locked: a new incarnation for `key` (or for no key), its word a fresh one past `end`. */
  private rewrite(entry: number, end: number, key: TableKey | null): void {
    if (key) {
      Atomics.add(this.words, entry + INCARNATION, 1); // odd: rewriting
      this.writeKey(entry, key);
      Atomics.add(this.words, entry + INCARNATION, 1); // even again: a new incarnation
    } else {
      // A dead process's rewrite: its key words are garbage, so the entry matches no key before it is even again.
      Atomics.store(this.words, entry + LENGTH, -1);
      Atomics.add(this.words, entry + INCARNATION, Atomics.load(this.words, entry + INCARNATION) & 1 ? 1 : 2);
    }
    Atomics.store(this.counters, (entry + COUNTER) >> 1, encode(end + 1, 0));
    Atomics.store(this.words, entry + OWNER, 0);
  }

  /** The reclaim lock, or false when a live process holds it: no waiting (invariant 5). A dead holder's is taken. */
  private tryLock(): boolean {
    for (let check = 0; check < MAX_STALL_CHECKS; check++) {
      const holder = Atomics.compareExchange(this.words, H_RECLAIM_LOCK, 0, this.pid);
      if (holder === 0 || holder === this.pid) return true;
      if (!alive(holder)) Atomics.compareExchange(this.words, H_RECLAIM_LOCK, holder, 0);
      else for (let spin = 0; spin < STALL_CHECK_SPINS && Atomics.load(this.words, H_RECLAIM_LOCK) !== 0; spin++);
    }
    return false;
  }

  /**
   * Waits a little for another process's claim or rewrite of `entry`, then checks its pid. A dead process's
   * claim goes back to empty; its rewrite becomes an entry that matches no key (under the reclaim lock).
   * Returns at once when the holder is alive and slow: the caller looks again, within its bounds.
   */
  private settle(entry: number): void {
    for (let spin = 0; spin < STALL_CHECK_SPINS; spin++) {
      const state = Atomics.load(this.words, entry + STATE);
      const rewriting = (Atomics.load(this.words, entry + INCARNATION) & 1) === 1 || this.lockedCount(entry);
      if (state >= 0 && !rewriting) return;
    }
    const state = Atomics.load(this.words, entry + STATE);
    if (state < 0) {
      if (!alive(-state)) Atomics.compareExchange(this.words, entry + STATE, state, EMPTY);
      return;
    }
    const owner = Atomics.load(this.words, entry + OWNER);
    if (alive(owner)) return; // a live rewriter (pids are not reused within the microseconds a rewrite takes)
    if (!this.tryLock()) return;
    try {
      const word = Atomics.load(this.counters, (entry + COUNTER) >> 1);
      decode(word);
      if (decoded.count !== LOCKED || Atomics.load(this.words, entry + OWNER) !== owner) return; // finished meanwhile
      this.rewrite(entry, decoded.end, null);
    } finally {
      Atomics.compareExchange(this.words, H_RECLAIM_LOCK, this.pid, 0);
    }
  }

  private lockedCount(entry: number): boolean {
    decode(Atomics.load(this.counters, (entry + COUNTER) >> 1));
    return decoded.count === LOCKED;
  }
}
