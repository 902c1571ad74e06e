// The shared counter table's memory layout (header and entry words), its key hash, and the helpers the
// table's lock-free steps share. No I/O: the region is created in counter-store.ts.

export const MAGIC = 0x50524631; // "PRF1"
export const HEADER_WORDS = 16;
export const H_MAGIC = 0;
export const H_CAPACITY = 1;
export const H_ENTRY_WORDS = 2;
export const H_RECLAIM_LOCK = 3; // pid of the process reclaiming expired entries (full table only), or 0

/** Keys up to this many UTF-16 code units are stored as they are; longer ones as a digest (store.ts). */
export const MAX_STORED_KEY = 64;
export const ENTRY_WORDS = 12 + MAX_STORED_KEY / 2;
export const STATE = 0; // EMPTY, LIVE, or -pid while that process claims the entry
export const INCARNATION = 1; // odd while the entry is rewritten for another key (reclaim)
export const HASH = 2;
export const LENGTH = 3; // -1: a recovered entry that matches no key (reclaimable)
export const PACKED = 4;
export const RESET_AT = 8; // words 8-11: float64 reset time for even tags, then for odd tags
export const KEY = 12;

export const EMPTY = 0;
export const LIVE = 1;
export const COUNT_MASK = 2 ** 28 - 1;
export const TAGS = 14; // tags 0…13 for windows: an even cycle, so consecutive tags alternate float64 slots
export const SENTINEL_TAG = 15; // packed = sentinel | pid while that process reclaims the entry
export const STALL_CHECK_SPINS = 2000;
/** A key lives within this many entries of its home slot: lookups, inserts and reclaims stop there. */
export const MAX_PROBES = 256;
export const DEAD_AFTER_MS = 5000; // a pid that holds a mark this long is taken for dead even if the pid exists (reused)

/** The entry layout, for tests that build the states a killed process leaves behind. */
export const LAYOUT = { HEADER_WORDS, ENTRY_WORDS, STATE, INCARNATION, PACKED, LIVE, SENTINEL_TAG } as const;

export const FULL = -2;
export const ABSENT = -1;

export interface CounterValue {
  count: number;
  /** When the window ends, in ms since the epoch (Date.now()). */
  resetAt: number;
}

export function regionBytes(capacity: number): number {
  return (HEADER_WORDS + capacity * ENTRY_WORDS) * 4;
}

/** FNV-1a over UTF-16 code units; `hashKey(key, hashKey(prefix))` hashes prefix + key. */
export function hashKey(key: string, hash = 0x811c9dc5): number {
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 16777619);
  return hash | 0;
}

/** A key as the table sees it: prefix and key, and the hash of both. */
export interface TableKey {
  prefix: string;
  key: string;
  hash: number;
}

export const pack = (tag: number, count: number) => ((tag << 28) | count) | 0;
export const tagOf = (packed: number) => packed >>> 28;

export function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
