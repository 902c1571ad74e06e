// The shared table's steps, built by hand on a private buffer: the states a killed process leaves behind
// are recovered, never waited on forever; a window's end never moves; rewriting an ended entry for another
// key cannot take a stale process's update. A live process holding an entry (stopped mid-step, or hostile)
// costs a call at most the wait bound, and never makes a key live in two entries.
import child_process from 'node:child_process';
import { CounterTable, LAYOUT, regionBytes, type TableKey } from '../src/store/counter-table';
import { BUSY, H_RECLAIM_LOCK, HASH, hashKey, KEY } from '../src/store/table-layout';

/** A table with one key counted once, the word index of that key's entry, and a key maker. */
/** An empty table of `capacity` entries, its key maker and its words. */
function emptyTable(capacity = 8) {
  const buffer = new ArrayBuffer(regionBytes(capacity));
  const table = new CounterTable(buffer, capacity, true);
  const key = (name: string): TableKey => ({ prefix: '', key: name, hash: table.finishHash(hashKey(name, table.startHash(''))) });
  return { table, key, buffer, words: new Int32Array(buffer), counters: new BigInt64Array(buffer) };
}

function tableWithKey(text: string, capacity = 8) {
  const made = emptyTable(capacity);
  made.table.increment(made.key(text), 60000, Date.now());
  const entry = LAYOUT.HEADER_WORDS + ((made.key(text).hash >>> 0) % capacity) * LAYOUT.ENTRY_WORDS;
  return { ...made, entry };
}

/** A pid that is certainly dead: a child that has exited and been reaped. */
const deadPid = () => child_process.spawnSync('true').pid as number;

test('an entry left LIVE but unpublished (publisher killed between two stores) is published by the next reader', () => {
  const { table, key, words, entry } = tableWithKey('a');
  Atomics.store(words, entry + LAYOUT.INCARNATION, 0);
  expect(table.get(key('a'), Date.now())?.count).toBe(1);
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 2 });
});

test('an entry claimed by a dead process goes back to empty and is reused', () => {
  const { table, key, words, entry } = tableWithKey('a');
  Atomics.store(words, entry + LAYOUT.INCARNATION, 0);
  Atomics.store(words, entry + LAYOUT.STATE, -deadPid());
  expect(table.get(key('a'), Date.now())).toBeNull(); // the claim never finished: no key there
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 1 });
});

test('an entry a dead process was rewriting (counter locked, key half-written) matches no key afterwards and is reusable', () => {
  const { table, key, words, counters, entry } = tableWithKey('a');
  Atomics.store(words, entry + LAYOUT.OWNER, deadPid());
  const scratch = new BigInt64Array(1);
  const halves = new Uint32Array(scratch.buffer);
  scratch[0] = Atomics.load(counters, (entry + LAYOUT.COUNTER) >> 1);
  halves[0] = (halves[0] | LAYOUT.LOCKED) >>> 0; // count field = LOCKED, end kept
  Atomics.store(counters, (entry + LAYOUT.COUNTER) >> 1, scratch[0]);
  Atomics.add(words, entry + LAYOUT.INCARNATION, 1); // odd: mid-rewrite
  expect(table.get(key('a'), Date.now())).toBeNull();
  expect(Atomics.load(words, entry + LAYOUT.LENGTH)).toBe(-1);
  expect(table.increment(key('b'), 60000, Date.now())).toMatchObject({ count: 1 });
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 1 });
});

test("a window opens at the first increment after the last one ended, and its end never moves, whatever another process's clock", () => {
  const { table, key } = tableWithKey('w');
  const now = Date.now();
  const opened = table.increment(key('w'), 100, now + 60001); // the 60 s window ended: a new one opens
  expect(opened).toEqual({ count: 1, resetAt: now + 60101 });
  // A process whose clock is behind (it still sees the old window as live) adds to the window that is,
  // without moving its end: the repro (B opens a window ending at 10000, A with now 5000 moves it).
  expect(table.increment(key('w'), 1000, now + 50000)).toEqual({ count: 2, resetAt: now + 60101 });
  expect(table.increment(key('w'), 5000, now + 60002)).toEqual({ count: 3, resetAt: now + 60101 });
  expect(table.get(key('w'), now + 60100)).toEqual({ count: 3, resetAt: now + 60101 });
});

test('two tables on one buffer (two processes): a stale clock cannot wipe out a live window', () => {
  const { buffer, key } = tableWithKey('x');
  const b = new CounterTable(buffer, 8, false);
  const a = new CounterTable(buffer, 8, false);
  const start = Date.now();
  expect(b.increment(key('k'), 10000, start)).toEqual({ count: 1, resetAt: start + 10000 });
  expect(a.increment(key('k'), 1000, start - 5000)).toEqual({ count: 2, resetAt: start + 10000 });
  expect(b.get(key('k'), start + 9001)).toEqual({ count: 2, resetAt: start + 10000 });
});

test('reset and a rewrite for another key move the end forward, so no earlier word of the entry comes back', () => {
  const { table, key, counters, entry } = tableWithKey('r', 1);
  const now = Date.now();
  const index = (entry + LAYOUT.COUNTER) >> 1;
  const before = Atomics.load(counters, index);
  table.reset(key('r'), now);
  const afterReset = Atomics.load(counters, index);
  expect(afterReset > before).toBe(true); // end is the high bits: a larger word, count 0
  // The one entry is full with a live window: another key is refused, not given the live entry.
  expect(table.increment(key('s'), 1000, now)).toMatchObject({ count: 1 }); // r was reset: its entry is free to rewrite
  expect(Atomics.load(counters, index) > afterReset).toBe(true);
  expect(table.increment(key('t'), 1000, now)).toBe(-2); // FULL: s's window is live
  expect(table.get(key('s'), now)?.count).toBe(1);
});

test("the issue's interleaving: A decides to open a window, B opens it first; A's CAS fails and its retry joins B's window", () => {
  const { buffer, key } = tableWithKey('x');
  const a = new CounterTable(buffer, 8, false);
  const b = new CounterTable(buffer, 8, false);
  const k = key('k');
  const t0 = a.epoch + 100000;
  a.increment(k, 1000, t0); // window t0 .. t0+1000
  let interleaved = false;
  a.trace = (phase) => {
    if (phase !== 'try' || interleaved) return;
    interleaved = true; // between A's load and A's CAS: B, with a later clock, opens the next window
    expect(b.increment(k, 10000, t0 + 1000)).toEqual({ count: 1, resetAt: t0 + 11000 });
  };
  // A's clock says t0+5000: the first window has ended, so it prepares a new one ending at t0+6000...
  expect(a.increment(k, 1000, t0 + 5000)).toEqual({ count: 2, resetAt: t0 + 11000 }); // ...but joins B's
  expect(b.get(k, t0 + 9001)).toEqual({ count: 2, resetAt: t0 + 11000 });
});

/** A live process other than this one: the claimer or rewriter that was stopped in the middle of its step. */
let stopped: child_process.ChildProcess;
beforeAll(() => {
  stopped = child_process.spawn('sleep', ['60'], { stdio: 'ignore' });
});
afterAll(async () => {
  const exited = new Promise((resolve) => stopped.once('exit', resolve));
  stopped.kill('SIGKILL');
  await exited;
});

/** A key whose home slot is `home`. */
function keyWithHome(key: (name: string) => TableKey, capacity: number, home: number, stem: string): TableKey {
  for (let i = 0; ; i++) if ((key(`${stem}${i}`).hash >>> 0) % capacity === home) return key(`${stem}${i}`);
}

/** How many published entries hold `k` (invariant 1: at most one). */
function entriesHolding(buffer: ArrayBuffer, capacity: number, k: TableKey): number {
  const words = new Int32Array(buffer);
  const chars = new Uint16Array(buffer);
  let found = 0;
  for (let index = 0; index < capacity; index++) {
    const entry = LAYOUT.HEADER_WORDS + index * LAYOUT.ENTRY_WORDS;
    const incarnation = Atomics.load(words, entry + LAYOUT.INCARNATION);
    if (incarnation === 0 || incarnation & 1 || words[entry + HASH] !== k.hash || words[entry + LAYOUT.LENGTH] !== k.key.length) continue;
    if ([...k.key].every((char, i) => chars[(entry + KEY) * 2 + i] === char.charCodeAt(0))) found += 1;
  }
  return found;
}

/** Locks an entry's counter as a rewriter does (count LOCKED, end kept), with `owner` as the rewriter. */
function lockCounter(words: Int32Array, counters: BigInt64Array, entry: number, owner: number): void {
  Atomics.store(words, entry + LAYOUT.OWNER, owner);
  const scratch = new BigInt64Array(1);
  const halves = new Uint32Array(scratch.buffer);
  scratch[0] = Atomics.load(counters, (entry + LAYOUT.COUNTER) >> 1);
  halves[0] = (halves[0] | LAYOUT.LOCKED) >>> 0;
  Atomics.store(counters, (entry + LAYOUT.COUNTER) >> 1, scratch[0]);
}

test('a counter LOCKED by a live rewriter (stopped between its CAS and the incarnation bump) costs a call the bound, not seconds of spinning', () => {
  const { table, key, words, counters, entry } = tableWithKey('a');
  const unlocked = Atomics.load(counters, (entry + LAYOUT.COUNTER) >> 1);
  lockCounter(words, counters, entry, stopped.pid as number);
  const started = performance.now();
  expect(table.increment(key('a'), 60000, Date.now())).toBe(BUSY); // nothing counted: the entry is not the key's to use now
  expect(table.set(key('a'), 5, 60000, Date.now())).toBe(BUSY);
  // An entry is locked only to be taken for another key, once its window has ended: no window to read or change.
  expect(table.get(key('a'), Date.now())).toBeNull();
  table.reset(key('a'), Date.now());
  table.decrement(key('a'), Date.now());
  expect(performance.now() - started).toBeLessThan(1000); // the bound is 1 ms a call (a loaded machine adds its scheduling delays); the old code spun 13 s
  // Another key is not held up.
  expect(table.increment(key('b'), 60000, Date.now())).toMatchObject({ count: 1 });
  // The rewriter resumes (here: puts the word back): the key counts on.
  Atomics.store(counters, (entry + LAYOUT.COUNTER) >> 1, unlocked);
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 2 });
});

test('an insert never goes past an entry a live process is claiming (it may be claiming the same key): one entry per key, no hit lost', () => {
  const capacity = 8;
  const { table, key, buffer, words } = emptyTable(capacity);
  const now = Date.now();
  const k = key('k');
  const home = (k.hash >>> 0) % capacity;
  // The entry after k's home holds another key's ended window: a reclaim could take it for k.
  table.increment(keyWithHome(key, capacity, (home + 1) % capacity, 'x'), 1, now - 10000);
  // A live process claims k's home entry for k and is stopped before it writes the key.
  const claimed = LAYOUT.HEADER_WORDS + home * LAYOUT.ENTRY_WORDS;
  Atomics.store(words, claimed + LAYOUT.STATE, -(stopped.pid as number));
  const started = performance.now();
  expect(table.get(k, now)).toBeNull(); // not in yet
  expect(table.increment(k, 60000, now)).toBe(BUSY);
  expect(performance.now() - started).toBeLessThan(1000);
  // The claimer resumes: it writes k, publishes the entry (as locate() does) and counts its hit.
  const chars = new Uint16Array(buffer);
  for (let i = 0; i < k.key.length; i++) chars[(claimed + KEY) * 2 + i] = k.key.charCodeAt(i);
  words[claimed + LAYOUT.LENGTH] = k.key.length;
  words[claimed + HASH] = k.hash;
  Atomics.store(words, claimed + LAYOUT.STATE, LAYOUT.LIVE);
  Atomics.store(words, claimed + LAYOUT.INCARNATION, 2);
  expect(table.increment(k, 60000, now)).toMatchObject({ count: 1 });
  expect(table.increment(k, 60000, now)).toMatchObject({ count: 2 });
  expect(entriesHolding(buffer, capacity, k)).toBe(1);
  expect(table.get(k, now)?.count).toBe(2);
});

test("reclaim holds the reclaim lock through its rewrite, also when its lookup first recovers a dead rewriter's entry", () => {
  const capacity = 8;
  const { table, key, buffer, words, counters } = emptyTable(capacity);
  const now = Date.now();
  const k = key('k');
  const home = (k.hash >>> 0) % capacity;
  // k's home entry: another key's, which a process was rewriting when it was killed (counter locked, odd).
  table.increment(keyWithHome(key, capacity, home, 'x'), 60000, now);
  const entry = LAYOUT.HEADER_WORDS + home * LAYOUT.ENTRY_WORDS;
  lockCounter(words, counters, entry, deadPid());
  Atomics.add(words, entry + LAYOUT.INCARNATION, 1);
  // Every rewrite is made by the reclaim lock's holder: record who holds it at each one.
  const internals = table as unknown as { rewrite: (...args: unknown[]) => void; reclaim: (key: TableKey, at: number) => number };
  const rewrite = internals.rewrite;
  const holders: number[] = [];
  internals.rewrite = function (this: unknown, ...args: unknown[]) {
    holders.push(Atomics.load(words, H_RECLAIM_LOCK));
    return rewrite.apply(this, args);
  };
  expect(internals.reclaim(k, now - table.epoch)).toBe(entry);
  expect(holders).toEqual([process.pid, process.pid]); // the dead rewrite undone, then the entry rewritten for k
  expect(Atomics.load(words, H_RECLAIM_LOCK)).toBe(0);
  expect(entriesHolding(buffer, capacity, k)).toBe(1);
});

test("a counter a dead process LOCKED (killed between its CAS and the incarnation bump) is undone by the next write, which counts the key anew", () => {
  const { table, key, words, counters, entry } = tableWithKey('a');
  lockCounter(words, counters, entry, deadPid());
  expect(table.get(key('a'), Date.now())).toBeNull(); // an entry is locked only once its window has ended
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 1 });
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 2 });
  expect(Atomics.load(words, H_RECLAIM_LOCK)).toBe(0);
});
