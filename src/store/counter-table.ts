// A fixed-capacity hash table of windowed counters in a shared ArrayBuffer, updated with 32-bit Atomics and
// no lock on the hot path. Every step is one atomic store or compare-and-swap, so a process killed at any
// instruction leaves the table usable: what it was in the middle of is either done or not, and entries it
// was claiming (marked with its pid) are recovered by the next process that finds it dead.
//
// Entry (Int32 words): state, incarnation, hash, key length, packed counter, 3 spare, 2 float64 reset times,
// then the key as UTF-16 code units. The incarnation is 0 until the entry is published, then even, and odd
// while it is rewritten for another key: one atomic load of it tells a reader whether the key words are
// settled (a seqlock). The packed counter is tag (4 bits) | count (28 bits): one CAS moves the count, or
// opens a new window by bumping the tag; the window's reset time is written first into the float64 slot of
// the new tag's parity, so it is in place before any process can see that tag.
//
// Keys are passed as (prefix, key) and compared in two parts, so the hot path builds no string.
import {
  ABSENT, alive, COUNT_MASK, DEAD_AFTER_MS, EMPTY, ENTRY_WORDS, FULL, H_CAPACITY, H_ENTRY_WORDS, H_MAGIC, H_RECLAIM_LOCK, HASH,
  HEADER_WORDS, INCARNATION, KEY, LENGTH, LIVE, MAGIC, MAX_PROBES, pack, PACKED, RESET_AT, SENTINEL_TAG, STALL_CHECK_SPINS, STATE,
  tagOf, TAGS, type CounterValue, type TableKey,
} from './table-layout';

export { FULL, hashKey, LAYOUT, MAX_PROBES, MAX_STORED_KEY, regionBytes } from './table-layout';
export type { CounterValue, TableKey } from './table-layout';

const scratch = new ArrayBuffer(8);
const scratchFloat = new Float64Array(scratch);
const scratchBits = new BigInt64Array(scratch);

export class CounterTable {
  readonly capacity: number;
  private readonly maxProbes: number;
  private readonly words: Int32Array;
  private readonly bits: BigInt64Array; // the float64 slots as bits, for compare-and-swap
  private readonly floats: Float64Array;
  private readonly chars: Uint16Array;
  private readonly pid = process.pid;
  /** The incarnation locate() saw when it matched the key (avoids an allocation per call). */
  private matchedIncarnation = 0;

  /** `initialize`: the creator writes the header; everyone else checks it. */
  constructor(buffer: ArrayBuffer, capacity: number, initialize: boolean) {
    this.words = new Int32Array(buffer);
    this.floats = new Float64Array(buffer);
    this.chars = new Uint16Array(buffer);
    this.bits = new BigInt64Array(buffer);
    if (initialize) {
      this.words[H_CAPACITY] = capacity;
      this.words[H_ENTRY_WORDS] = ENTRY_WORDS;
      Atomics.store(this.words, H_MAGIC, MAGIC);
    } else if (this.words[H_MAGIC] !== MAGIC || this.words[H_CAPACITY] !== capacity || this.words[H_ENTRY_WORDS] !== ENTRY_WORDS) {
      throw new Error('prefork: the shared counter region has another layout (a different prefork version?)');
    }
    this.capacity = capacity;
    this.maxProbes = Math.min(capacity, MAX_PROBES);
  }

  /** Adds one in the key's current window (opening a new one of `windowMs` if it ended). FULL: no room. */
  increment(key: TableKey, windowMs: number, now: number): CounterValue | typeof FULL {
    for (;;) {
      let entry = this.locate(key, true);
      if (entry === FULL) entry = this.reclaim(key, now);
      if (entry === FULL) return FULL;
      const packed = this.stablePacked(entry);
      if (packed === null) continue;
      const tag = tagOf(packed);
      const slots = (entry + RESET_AT) >> 1;
      const resetAt = this.floats[slots + (tag & 1)];
      if (now < resetAt) {
        const count = packed & COUNT_MASK;
        if (count === COUNT_MASK) return { count, resetAt }; // saturated
        if (Atomics.compareExchange(this.words, entry + PACKED, packed, packed + 1) === packed) return { count: count + 1, resetAt };
      } else {
        const next = (tag + 1) % TAGS;
        const nextResetAt = this.claimResetSlot(slots + (next & 1), now + windowMs);
        if (Atomics.compareExchange(this.words, entry + PACKED, packed, pack(next, 1)) === packed) return { count: 1, resetAt: nextResetAt };
      }
    }
  }

  /** Takes one back in the current window (never below 0). */
  decrement(key: TableKey, now: number): void {
    for (;;) {
      const entry = this.locate(key, false);
      if (entry < 0) return;
      const packed = this.stablePacked(entry);
      if (packed === null) continue;
      const resetAt = this.floats[((entry + RESET_AT) >> 1) + (tagOf(packed) & 1)];
      if (now >= resetAt || (packed & COUNT_MASK) === 0) return;
      if (Atomics.compareExchange(this.words, entry + PACKED, packed, packed - 1) === packed) return;
    }
  }

  /** Ends the key's window: its next increment starts from 1. */
  reset(key: TableKey): void {
    for (;;) {
      const entry = this.locate(key, false);
      if (entry < 0) return;
      const packed = this.stablePacked(entry);
      if (packed === null) continue;
      const next = (tagOf(packed) + 1) % TAGS;
      this.claimResetSlot(((entry + RESET_AT) >> 1) + (next & 1), 0);
      if (Atomics.compareExchange(this.words, entry + PACKED, packed, pack(next, 0)) === packed) return;
    }
  }

  /** The key's count in its current window, or null when it has none. */
  get(key: TableKey, now: number): CounterValue | null {
    for (;;) {
      const entry = this.locate(key, false);
      if (entry < 0) return null;
      const packed = this.stablePacked(entry);
      if (packed === null) continue;
      const resetAt = this.floats[((entry + RESET_AT) >> 1) + (tagOf(packed) & 1)];
      const count = packed & COUNT_MASK;
      return now < resetAt && count > 0 ? { count, resetAt } : null;
    }
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

  /**
   * Writes the reset time of the window about to open into its float64 slot, before the CAS that opens it,
   * unless a competing process got there first: then theirs stands (one value per window, and a process
   * stalled across windows cannot overwrite the time of a live one). Returns the value in the slot.
   */
  private claimResetSlot(slot: number, resetAt: number): number {
    const seen = Atomics.load(this.bits, slot);
    scratchFloat[0] = resetAt;
    const wanted = scratchBits[0];
    const before = Atomics.compareExchange(this.bits, slot, seen, wanted);
    if (before === seen) return resetAt;
    scratchBits[0] = before;
    return scratchFloat[0];
  }

  /** The packed counter of the entry locate() just matched, if it still holds that key; else null (look again). */
  private stablePacked(entry: number): number | null {
    const packed = Atomics.load(this.words, entry + PACKED);
    if (tagOf(packed) === SENTINEL_TAG || Atomics.load(this.words, entry + INCARNATION) !== this.matchedIncarnation) {
      this.settle(entry);
      return null;
    }
    return packed;
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
   * Linear probing from the key's home slot; one atomic load per entry on the way. With `create`, claims
   * the first empty entry. Sets matchedIncarnation for stablePacked().
   */
  private locate(key: TableKey, create: boolean): number {
    let index = (key.hash >>> 0) % this.capacity;
    for (let probes = 0; probes < this.maxProbes; probes++, index = index + 1 === this.capacity ? 0 : index + 1) {
      const entry = HEADER_WORDS + index * ENTRY_WORDS;
      for (;;) {
        const incarnation = Atomics.load(this.words, entry + INCARNATION);
        if (incarnation === 0) {
          // Not published yet: empty, being claimed, or just published.
          const state = Atomics.load(this.words, entry + STATE);
          if (state === EMPTY) {
            if (!create) return ABSENT;
            if (Atomics.compareExchange(this.words, entry + STATE, EMPTY, -this.pid) !== EMPTY) continue;
            this.writeKey(entry, key);
            Atomics.store(this.words, entry + PACKED, pack(0, 0));
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
    const slots = (entry + RESET_AT) >> 1;
    this.floats[slots] = 0;
    this.floats[slots + 1] = 0;
  }

  /**
   * A full table: the first expired entry along the key's probe sequence is rewritten for it. Reclaimers
   * take turns (a pid lock in the header) and look for the key once more first, so a key is never in two
   * entries. Readers of the old key see the sentinel or a new incarnation and look up again.
   */
  private reclaim(key: TableKey, now: number): number {
    this.acquire(H_RECLAIM_LOCK);
    try {
      const existing = this.locate(key, false);
      if (existing >= 0) return existing;
      let index = (key.hash >>> 0) % this.capacity;
      for (let probes = 0; probes < this.maxProbes; probes++, index = index + 1 === this.capacity ? 0 : index + 1) {
        const entry = HEADER_WORDS + index * ENTRY_WORDS;
        const incarnation = Atomics.load(this.words, entry + INCARNATION);
        const packed = Atomics.load(this.words, entry + PACKED);
        if (incarnation === 0 || incarnation & 1 || tagOf(packed) === SENTINEL_TAG) continue;
        const resetAt = this.floats[((entry + RESET_AT) >> 1) + (tagOf(packed) & 1)];
        if (this.words[entry + LENGTH] !== -1 && now < resetAt) continue;
        if (Atomics.compareExchange(this.words, entry + PACKED, packed, pack(SENTINEL_TAG, this.pid)) !== packed) continue;
        Atomics.add(this.words, entry + INCARNATION, 1); // odd: rewriting
        this.writeKey(entry, key);
        Atomics.add(this.words, entry + INCARNATION, 1); // even again: a new incarnation
        Atomics.store(this.words, entry + PACKED, pack((tagOf(packed) + 1) % TAGS, 0));
        return this.locate(key, false);
      }
      return FULL;
    } finally {
      Atomics.compareExchange(this.words, H_RECLAIM_LOCK, this.pid, 0);
    }
  }

  private acquire(word: number): void {
    let since = 0;
    for (let spins = 1; ; spins++) {
      const holder = Atomics.compareExchange(this.words, word, 0, this.pid);
      if (holder === 0 || holder === this.pid) return;
      if (spins % STALL_CHECK_SPINS !== 0) continue;
      since ||= Date.now();
      if (!alive(holder) || Date.now() - since > DEAD_AFTER_MS) Atomics.compareExchange(this.words, word, holder, 0);
    }
  }

  /**
   * Waits out a claim or a rewrite of `entry` by another process. If that process is dead, finishes its
   * work for it: a half-claimed entry goes back to empty, a half-rewritten one becomes an entry that matches
   * no key (reclaimable). Spins, then checks the holder's pid: these windows last a few hundred nanoseconds.
   */
  private settle(entry: number): void {
    let since = 0;
    for (let spins = 1; ; spins++) {
      const state = Atomics.load(this.words, entry + STATE);
      const packed = Atomics.load(this.words, entry + PACKED);
      const claimer = state < 0 ? -state : 0;
      // The sentinel is set before the incarnation turns odd and cleared after it is even again.
      const rewriter = state === LIVE && tagOf(packed) === SENTINEL_TAG ? packed & COUNT_MASK : 0;
      if (!claimer && !rewriter) return;
      if (spins % STALL_CHECK_SPINS !== 0) continue;
      since ||= Date.now();
      const holder = claimer || rewriter;
      if (alive(holder) && Date.now() - since < DEAD_AFTER_MS) continue;
      if (claimer) {
        Atomics.compareExchange(this.words, entry + STATE, state, EMPTY);
      } else if (Atomics.compareExchange(this.words, entry + PACKED, packed, pack(SENTINEL_TAG, this.pid)) === packed) {
        this.words[entry + LENGTH] = -1;
        // A new incarnation (even), so readers that matched the old key look it up again.
        Atomics.add(this.words, entry + INCARNATION, Atomics.load(this.words, entry + INCARNATION) & 1 ? 1 : 2);
        Atomics.store(this.words, entry + PACKED, pack(0, 0));
      }
    }
  }
}
