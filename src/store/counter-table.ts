// A fixed-capacity hash table of windowed counters in a shared ArrayBuffer: one 64-bit word per entry holds
// (window end, count), changed by one compare-and-swap (this file); where a key's entry is, table-entries.ts. A
// process killed at any instruction leaves the table usable; what it was claiming or rewriting (marked with its
// pid) is finished or undone by the next process; one stopped there costs others at most MAX_WAIT_MS a call.
//
// Invariants (the proofs the tests check):
// 1. One key, one entry: keys are inserted only into the first empty entry along their probe sequence, and
//    ended entries are rewritten for new keys only under the table's reclaim lock, after looking the key up.
//    An insert goes past LIVE entries only (it waits for a claim on the way, which may be of its own key), and
//    a LIVE entry never becomes empty again: every entry before a key's is LIVE, so a lookup that meets a claim
//    knows the key is in no entry further on.
// 2. `end` never decreases within an entry. It grows by at least 1 whenever a window opens, a key is reset
//    (count 0, end + 1) or the entry is rewritten for another key (end + 1). So no value the entry held for
//    one key can ever be held again for the key that replaced it: a process that matched the old key and
//    loaded its word cannot CAS into the new key's counter (no ABA, no tag).
// 3. A reader re-checks the entry's incarnation after loading the word: the word it CASes is its key's.
// 4. A window opens only by a CAS from a word whose window had ended by this process's clock (or had no
//    hits): a live window is never replaced, whatever another process's clock says. Clocks of processes on
//    one machine are the same kernel clock; a process's `now` may lag (it is read once per task), which
//    only makes it see a window end later, never earlier.
// 5. No call waits on another process, or retries at all, for longer than MAX_WAIT_MS (1 ms) of the monotonic
//    clock, whatever another process does to the shared words; past it the call answers BUSY and has changed
//    nothing. get, reset and subtract wait for no holder: a claimed or locked entry holds no window for them.
//    Only a write waits, for a claim that may be of its key, for its key's entry being rewritten, or for the
//    reclaim lock (table-entries.ts): never past them, so a key is never put into a second entry.
//
// Keys are passed as (prefix, key) and compared in two parts, so the hot path builds no string.
import { getRandomValues } from 'node:crypto';
import { TableEntries } from './table-entries';
import {
  BUSY, COUNTER, decode, decoded, encode, ENTRY_WORDS, FULL, H_CAPACITY, H_ENTRY_WORDS, H_EPOCH, H_MAGIC, H_SEED, hashKey, finishHash,
  INCARNATION, LOCKED, MAGIC, MAX_COUNT, type CounterValue, type TableKey,
} from './table-layout';

export { BUSY, FULL, hashKey, LAYOUT, MAX_PROBES, MAX_STORED_KEY, MAX_WAIT_MS, regionBytes } from './table-layout';
export type { CounterValue, TableKey } from './table-layout';

const EPOCH_MARGIN_MS = 24 * 3600 * 1000; // a process whose clock is behind the creator's still counts from >= 0

/** Called before (`try`) and after (`done`) each counter CAS that succeeds; the model-checking test logs them. */
export type Trace = (phase: 'try' | 'done', key: TableKey, from: bigint, to: bigint, now: number) => void;

export class CounterTable extends TableEntries {
  /** ms since 1970 that window ends are counted from (the region's, shared by every process). */
  readonly epoch: number;
  trace: Trace | null = null;
  private readonly seeds: [number, number];

  /** `initialize`: the creator writes the header (a random seed, the epoch); everyone else checks it. */
  constructor(buffer: ArrayBuffer, capacity: number, initialize: boolean) {
    super(buffer, capacity);
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
    this.epoch = floats[H_EPOCH / 2];
    this.seeds = [this.words[H_SEED], this.words[H_SEED + 1]];
  }

  /** The keyed hash of a prefix, to continue with hashKey(key, it) and finish with finishHash(). */
  startHash(prefix: string): number {
    return hashKey(prefix, (0x811c9dc5 ^ this.seeds[0]) | 0);
  }

  finishHash(hash: number): number {
    return finishHash(hash, this.seeds[1]);
  }

  /**
   * Adds `amount` in the key's current window, or opens a new one of `windowMs` if it ended. FULL: no room;
   * BUSY: another process held the key's way for MAX_WAIT_MS (nothing was added).
   */
  add(key: TableKey, amount: number, windowMs: number, now: number): CounterValue | typeof FULL | typeof BUSY {
    return this.write(key, amount, windowMs, now, false);
  }

  increment(key: TableKey, windowMs: number, now: number): CounterValue | typeof FULL | typeof BUSY {
    return this.add(key, 1, windowMs, now);
  }

  /** Takes `amount` back in the current window (never below 0; at 0 the window has no hits left). */
  subtract(key: TableKey, amount: number, now: number): typeof BUSY | undefined {
    return this.update(key, now, () => (decoded.count > 0 && now - this.epoch < decoded.end ? encode(decoded.end, Math.max(0, decoded.count - amount)) : null));
  }

  decrement(key: TableKey, now: number): typeof BUSY | undefined {
    return this.subtract(key, 1, now);
  }

  /** Ends the key's window: its next increment opens a new one. */
  reset(key: TableKey, now: number): typeof BUSY | undefined {
    return this.update(key, now, () => (decoded.count > 0 ? encode(decoded.end + 1, 0) : null));
  }

  /**
   * Sets the count, in a window ending `windowMs` from now (or later: a window never ends earlier than the
   * one it replaces, see invariant 2). FULL: no room.
   */
  set(key: TableKey, count: number, windowMs: number, now: number): CounterValue | typeof FULL | typeof BUSY {
    return this.write(key, count, windowMs, now, true);
  }

  /**
   * The key's count in its current window, or null when it has none. Never waits: a locked counter is being
   * rewritten for another key, which only happens to an ended window (null); an entry that keeps changing
   * under the lookup for MAX_WAIT_MS (only a process writing the words at random does that) reads as null too.
   */
  get(key: TableKey, now: number): CounterValue | null {
    this.beginCall();
    do {
      const entry = this.locate(key, false);
      if (entry < 0) return null;
      if (this.loadCounter(entry) === null) continue;
      const { count, end } = decoded;
      return count > 0 && count !== LOCKED && now - this.epoch < end ? { count, resetAt: end + this.epoch } : null;
    } while (this.mayRetry());
    return null;
  }

  // ---- internals -----------------------------------------------------------------------------

  /** add() (`replace` false: `amount` joins a live window) and set() (`replace`: the count becomes `amount`). */
  private write(key: TableKey, amount: number, windowMs: number, now: number, replace: boolean): CounterValue | typeof FULL | typeof BUSY {
    this.beginCall();
    const at = now - this.epoch;
    do {
      let entry = this.locate(key, true);
      if (entry === FULL) entry = this.reclaim(key, at);
      if (entry < 0) return entry === BUSY ? BUSY : FULL;
      const word = this.loadCounter(entry);
      if (word === null) continue;
      if (decoded.count === LOCKED) {
        this.awaitRewrite(entry); // its entry is being taken: once it is, the key goes in again
        continue;
      }
      let { end } = decoded;
      let count: number;
      if (!replace && decoded.count > 0 && at < end) {
        count = Math.min(MAX_COUNT, decoded.count + amount);
      } else {
        end = Math.max(at + windowMs, end + 1);
        count = Math.min(MAX_COUNT, amount);
      }
      if (this.swap(entry, key, word, encode(end, count), now)) return { count, resetAt: end + this.epoch };
    } while (this.mayRetry());
    return BUSY;
  }

  /** One CAS per attempt: `next()` gives the new word from `decoded`, or null for nothing to do. */
  private update(key: TableKey, now: number, next: () => bigint | null): typeof BUSY | undefined {
    this.beginCall();
    do {
      const entry = this.locate(key, false);
      if (entry < 0) return undefined;
      const word = this.loadCounter(entry);
      if (word === null) continue;
      if (decoded.count === LOCKED) return undefined; // an ended window, being taken for another key
      const wanted = next();
      if (wanted === null || this.swap(entry, key, word, wanted, now)) return undefined;
    } while (this.mayRetry());
    return BUSY;
  }

  /** The counter word of the entry locate() just matched, decoded; null if it is no longer that key's. */
  private loadCounter(entry: number): bigint | null {
    const word = Atomics.load(this.counters, (entry + COUNTER) >> 1);
    decode(word);
    return Atomics.load(this.words, entry + INCARNATION) === this.matchedIncarnation ? word : null;
  }

  private swap(entry: number, key: TableKey, from: bigint, to: bigint, now: number): boolean {
    this.trace?.('try', key, from, to, now);
    if (Atomics.compareExchange(this.counters, (entry + COUNTER) >> 1, from, to) !== from) return false;
    this.trace?.('done', key, from, to, now);
    return true;
  }

}
