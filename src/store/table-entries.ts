// Where a key lives in the shared table: its entry, found by linear probing, claimed when empty, rewritten for
// another key when its window has ended (invariant 1 of counter-table.ts), and recovered when the process
// that was claiming or rewriting it died. The counter word itself is counter-table.ts's.
import {
  ABSENT, alive, COUNTER, decode, decoded, EMPTY, encode, ENTRY_WORDS, FULL, H_RECLAIM_LOCK, HASH, HEADER_WORDS, INCARNATION, KEY,
  LENGTH, LIVE, LOCKED, MAX_PROBES, MAX_STALL_CHECKS, OWNER, STALL_CHECK_SPINS, STATE, type TableKey,
} from './table-layout';

export class TableEntries {
  readonly capacity: number;
  protected readonly words: Int32Array;
  protected readonly counters: BigInt64Array;
  protected readonly chars: Uint16Array;
  protected readonly pid = process.pid;
  private readonly maxProbes: number;
  /** The incarnation locate() saw when it matched the key (avoids an allocation per call). */
  protected matchedIncarnation = 0;

  constructor(buffer: ArrayBuffer, capacity: number) {
    this.words = new Int32Array(buffer);
    this.counters = new BigInt64Array(buffer);
    this.chars = new Uint16Array(buffer);
    this.capacity = capacity;
    this.maxProbes = Math.min(capacity, MAX_PROBES);
  }

  /** Entries in use (for tests and stats; a snapshot). */
  size(): number {
    let used = 0;
    for (let index = 0; index < this.capacity; index++) {
      if (Atomics.load(this.words, HEADER_WORDS + index * ENTRY_WORDS + STATE) !== EMPTY) used += 1;
    }
    return used;
  }

  protected holds(entry: number, { prefix, key, hash }: TableKey): boolean {
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
  protected locate(key: TableKey, create: boolean): number {
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
  protected reclaim(key: TableKey, at: number): number {
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
  protected settle(entry: number): void {
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
