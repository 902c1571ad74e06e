// The shared counter table's memory layout (header and entry words), its keyed hash, the 64-bit counter word's
// encoding, and the helpers the table's lock-free steps share. No I/O: the region is created in counter-store.ts.

export const MAGIC = 0x50524632; // "PRF2"
export const HEADER_WORDS = 16;
export const H_MAGIC = 0;
export const H_CAPACITY = 1;
export const H_ENTRY_WORDS = 2;
export const H_RECLAIM_LOCK = 3; // pid of the process rewriting ended entries for new keys (full table only), or 0
export const H_SEED = 4; // words 4-5: the keyed hash's random seed, written by the region's creator
export const H_EPOCH = 6; // words 6-7: float64 ms since 1970 that window ends are counted from

/** Keys up to this many UTF-16 code units are stored as they are; longer ones as a digest (counter-store.ts). */
export const MAX_STORED_KEY = 64;
// An entry: 8 Int32 words, then the key. Both sizes even, so the counter word is 8-byte aligned.
export const ENTRY_WORDS = 8 + MAX_STORED_KEY / 2;
export const STATE = 0; // EMPTY, LIVE, or -pid while that process claims the entry
export const INCARNATION = 1; // 0 until published, then even; odd while the entry is rewritten for another key
export const HASH = 2;
export const LENGTH = 3; // -1: a recovered entry that matches no key (reclaimable)
export const OWNER = 4; // pid of the process that locked the counter to rewrite the entry, or 0
export const COUNTER = 6; // words 6-7: the counter word (BigInt64), see below
export const KEY = 8;

export const EMPTY = 0;
export const LIVE = 1;

// The counter word: bits 24-63 `end`, the window's end in ms since the region's epoch (40 bits: 34 years);
// bits 0-23 `count`. count 0: no window. count LOCKED: the entry is being rewritten for another key (its
// `end` is kept, for whoever has to finish the rewrite).
export const COUNT_BITS = 24;
export const LOCKED = 2 ** COUNT_BITS - 1;
/** Counts saturate here. */
export const MAX_COUNT = LOCKED - 1;

/** A key lives within this many entries of its home slot: lookups, inserts and reclaims stop there. */
export const MAX_PROBES = 256;
/** Spins on a word another process holds (a few µs) before asking whether that process is alive. */
export const STALL_CHECK_SPINS = 2000;
/**
 * The longest a call retries (waits for another process, or loses compare-and-swaps to others), in ms of the
 * monotonic clock from its first retry; then it answers BUSY (invariant 5).
 */
export const MAX_WAIT_MS = 1;
/**
 * Retries a call still makes once MAX_WAIT_MS has passed, before it answers BUSY: a process descheduled in the
 * middle of its wait (the clock ran, the holder was not watched) looks again, and a few µs more is all it costs.
 */
export const RETRIES_PAST_DEADLINE = 8;

/** The entry layout, for tests that build the states a killed process leaves behind. */
export const LAYOUT = { HEADER_WORDS, ENTRY_WORDS, STATE, INCARNATION, LENGTH, OWNER, COUNTER, LIVE, LOCKED } as const;

export const ABSENT = -1;
/** No room for the key: its probe window holds only live windows. */
export const FULL = -2;
/** Another process held a word the call needed for longer than MAX_WAIT_MS (stopped mid-step, or hostile). */
export const BUSY = -3;

export interface CounterValue {
  count: number;
  /** When the window ends, in ms since the epoch (Date.now()). */
  resetAt: number;
}

export function regionBytes(capacity: number): number {
  return (HEADER_WORDS + capacity * ENTRY_WORDS) * 4;
}

/** FNV-1a over UTF-16 code units, from `hash`: `hashKey(key, hashKey(prefix, start))` hashes prefix + key. */
export function hashKey(key: string, hash = 0x811c9dc5): number {
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 16777619);
  return hash | 0;
}

/** The last step of the keyed hash: mixes in the seed's second word (murmur3's finaliser), so home slots depend on all of it. */
export function finishHash(hash: number, seed: number): number {
  let h = (hash ^ seed) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) | 0;
}

/** A key as the table sees it: prefix and key, and the hash of both. */
export interface TableKey {
  prefix: string;
  key: string;
  hash: number;
}

// The counter word through a scratch buffer: two uint32 halves, so no BigInt arithmetic on the hot path.
const scratch = new ArrayBuffer(8);
const scratchWord = new BigInt64Array(scratch);
const scratchHalves = new Uint32Array(scratch); // little-endian: [0] low, [1] high

/** Decoded by `decode`: the counter word's fields. */
export const decoded = { end: 0, count: 0 };

export function decode(word: bigint): void {
  scratchWord[0] = word;
  const low = scratchHalves[0];
  decoded.count = low & LOCKED;
  decoded.end = scratchHalves[1] * 256 + (low >>> COUNT_BITS);
}

export function encode(end: number, count: number): bigint {
  scratchHalves[0] = (((end % 256) << COUNT_BITS) | count) >>> 0;
  scratchHalves[1] = Math.floor(end / 256);
  return scratchWord[0];
}

export function alive(pid: number): boolean {
  if (pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
