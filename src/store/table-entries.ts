// Where a key lives in the shared table: its entry, found by linear probing, claimed when empty, rewritten for
// another key when its window has ended (invariant 1 of counter-table.ts), and recovered when the process
// that was claiming or rewriting it died. The counter word itself is counter-table.ts's.
//
// What another process can hold, and who waits for it (invariant 5: never longer than MAX_WAIT_MS a call):
// - a claim (STATE -pid, an entry going from empty to a key's): a lookup ends there (every entry before a key's
//   is LIVE, so the key is in none further on); an insert waits, because the claim may be for its key;
// - a rewrite (the counter LOCKED, the incarnation odd while the key words change): only ended windows are
//   rewritten, under the reclaim lock, for a key that was in no entry. A lookup of the old key finds no window,
//   a lookup of any other key goes on past it; a write to the old key waits (its entry is being taken). A
//   rewrite by a process that is gone is undone by whoever passes it;
// - the reclaim lock: an insert into a full probe window waits for it.
// A holder found dead is undone by the waiter. A live one past the bound: the call answers BUSY, having changed
// nothing, and the key stays in at most one entry.
import {
  ABSENT, alive, BUSY, COUNTER, decode, decoded, EMPTY, encode, ENTRY_WORDS, FULL, H_RECLAIM_LOCK, HASH, HEADER_WORDS, INCARNATION, KEY,
  LENGTH, LIVE, LOCKED, MAX_PROBES, MAX_WAIT_MS, OWNER, RETRIES_PAST_DEADLINE, STALL_CHECK_SPINS, STATE, type TableKey,
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
  /** The current call's retry deadline (performance.now() ms; 0 before its first retry), and retries past it. */
  private retryDeadline = 0;
  private retriesPastDeadline = 0;
  /** Nesting of the reclaim lock in this process (reclaim, then a recovery inside it): released at 0 only. */
  private lockDepth = 0;

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

  /** Every public call starts here: its retries get a deadline of their own. */
  protected beginCall(): void {
    this.retryDeadline = 0;
    this.retriesPastDeadline = 0;
  }

  /**
   * Asked before every retry (invariant 5). The first starts the call's deadline, MAX_WAIT_MS away; once it has
   * passed, RETRIES_PAST_DEADLINE more are allowed, then false: the caller answers BUSY.
   */
  protected mayRetry(): boolean {
    const now = performance.now();
    if (this.retryDeadline === 0) {
      this.retryDeadline = now + MAX_WAIT_MS;
      return true;
    }
    return now < this.retryDeadline || ++this.retriesPastDeadline <= RETRIES_PAST_DEADLINE;
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
   * first empty entry (invariant 1), and answers BUSY rather than go past a live process's claim. Sets
   * matchedIncarnation. Without `create` it never waits.
   */
  protected locate(key: TableKey, create: boolean): number {
    let index = (key.hash >>> 0) % this.capacity;
    for (let probes = 0; probes < this.maxProbes; probes++, index = index + 1 === this.capacity ? 0 : index + 1) {
      const entry = HEADER_WORDS + index * ENTRY_WORDS;
      for (;;) {
        const incarnation = Atomics.load(this.words, entry + INCARNATION);
        if (incarnation & 1) {
          // Being rewritten: see the top of this file. A dead rewriter's is undone on the way.
          this.recoverRewrite(entry);
          break;
        }
        if (incarnation !== 0) {
          if (!this.holds(entry, key)) break;
          this.matchedIncarnation = incarnation;
          return entry;
        }
        const state = Atomics.load(this.words, entry + STATE);
        if (state === EMPTY) {
          if (!create) return ABSENT;
          if (Atomics.compareExchange(this.words, entry + STATE, EMPTY, -this.pid) === EMPTY) {
            this.writeKey(entry, key);
            Atomics.store(this.counters, (entry + COUNTER) >> 1, 0n);
            Atomics.store(this.words, entry + STATE, LIVE);
            // A CAS: once LIVE, another process may publish it first, and even rewrite it for another key.
            Atomics.compareExchange(this.words, entry + INCARNATION, 0, 2);
            continue; // match it as anyone would
          }
        } else if (state < 0) {
          if (!create) return ABSENT; // a claim: the key is not in yet, nor further on
          if (this.gone(-state)) Atomics.compareExchange(this.words, entry + STATE, state, EMPTY);
          else this.spinWhile(entry + STATE, -1, state);
        } else {
          // LIVE but not marked published: the key was written before LIVE; its publisher may have died between.
          Atomics.compareExchange(this.words, entry + INCARNATION, 0, 2);
        }
        if (!this.mayRetry()) return BUSY;
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
   * key that finds none gets FULL, and its caller the onFull answer. BUSY: a live process kept the lock.
   */
  protected reclaim(key: TableKey, at: number): number {
    if (!this.lock()) return BUSY;
    try {
      const existing = this.locate(key, false);
      if (existing >= 0) return existing;
      let index = (key.hash >>> 0) % this.capacity;
      for (let probes = 0; probes < this.maxProbes; probes++, index = index + 1 === this.capacity ? 0 : index + 1) {
        const entry = HEADER_WORDS + index * ENTRY_WORDS;
        // With the lock held, a locked counter is a dead process's rewrite: undo it, and the entry is free to take.
        this.recoverRewrite(entry);
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
      this.releaseLock();
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

  /** The reclaim lock, waiting within the call's bound; false when a live process kept it. */
  private lock(): boolean {
    while (!this.takeLock()) {
      const holder = Atomics.load(this.words, H_RECLAIM_LOCK);
      if (holder !== 0) this.spinWhile(H_RECLAIM_LOCK, -1, holder);
      if (!this.mayRetry()) return false;
    }
    return true;
  }

  /**
   * The reclaim lock if it is free, its holder is gone, or this process holds it already (a recovery inside
   * reclaim: the lock stays held until the outer release). No waiting.
   */
  private takeLock(): boolean {
    if (this.lockDepth > 0) {
      this.lockDepth += 1;
      return true;
    }
    const holder = Atomics.compareExchange(this.words, H_RECLAIM_LOCK, 0, this.pid);
    if (holder !== 0 && !(this.gone(holder) && Atomics.compareExchange(this.words, H_RECLAIM_LOCK, holder, this.pid) === holder)) return false;
    this.lockDepth = 1;
    return true;
  }

  private releaseLock(): void {
    this.lockDepth -= 1;
    if (this.lockDepth === 0) Atomics.compareExchange(this.words, H_RECLAIM_LOCK, this.pid, 0);
  }

  /**
   * An entry whose counter is LOCKED by a process that is gone becomes one that matches no key (under the
   * reclaim lock: a rewriter holds it from its CAS to its last store, so nobody else is rewriting). Nothing
   * when the rewriter lives or a live process holds the lock: the caller retries within its bound.
   */
  protected recoverRewrite(entry: number): void {
    const owner = Atomics.load(this.words, entry + OWNER);
    if (!this.lockedCount(entry) || !this.gone(owner) || !this.takeLock()) return;
    try {
      const word = Atomics.load(this.counters, (entry + COUNTER) >> 1);
      decode(word);
      if (decoded.count !== LOCKED || Atomics.load(this.words, entry + OWNER) !== owner) return; // finished meanwhile
      this.rewrite(entry, decoded.end, null);
    } finally {
      this.releaseLock();
    }
  }

  /** A write found its key's counter LOCKED: undo a dead rewriter's, or give a live one a few µs. */
  protected awaitRewrite(entry: number): void {
    this.recoverRewrite(entry);
    this.spinWhile(entry + COUNTER, LOCKED, LOCKED); // the count is the low 24 bits of the word's low half
  }

  /** Spins STALL_CHECK_SPINS loads at most while (words[index] & mask) === value. */
  private spinWhile(index: number, mask: number, value: number): void {
    for (let spin = 0; spin < STALL_CHECK_SPINS && (Atomics.load(this.words, index) & mask) === value; spin++);
  }

  /**
   * The process that left a mark is gone. This process's own pid on a mark it is not making now (its calls
   * are synchronous) is a dead predecessor's that had the same pid.
   */
  private gone(pid: number): boolean {
    return pid === this.pid || !alive(pid);
  }

  private lockedCount(entry: number): boolean {
    return (Atomics.load(this.words, entry + COUNTER) & LOCKED) === LOCKED;
  }
}
