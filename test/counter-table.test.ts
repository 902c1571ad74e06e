// The shared table's recovery from what a process killed between two steps leaves behind, built by hand
// on a private buffer: every state must be recovered, never waited on forever.
import child_process from 'node:child_process';
import { CounterTable, hashKey, LAYOUT, regionBytes, type TableKey } from '../src/store/counter-table';

const key = (text: string): TableKey => ({ prefix: '', key: text, hash: hashKey(text) });

/** A table with one key counted once, and the word index of that key's entry. */
function tableWithKey(text: string) {
  const capacity = 8;
  const buffer = new ArrayBuffer(regionBytes(capacity));
  const table = new CounterTable(buffer, capacity, true);
  table.increment(key(text), 60000, Date.now());
  const entry = LAYOUT.HEADER_WORDS + ((hashKey(text) >>> 0) % capacity) * LAYOUT.ENTRY_WORDS;
  return { table, words: new Int32Array(buffer), entry };
}

/** A pid that is certainly dead: a child that has exited and been reaped. */
const deadPid = () => child_process.spawnSync('true').pid as number;

test('an entry left LIVE but unpublished (publisher killed between two stores) is published by the next reader', () => {
  const { table, words, entry } = tableWithKey('a');
  Atomics.store(words, entry + LAYOUT.INCARNATION, 0);
  expect(table.get(key('a'), Date.now())?.count).toBe(1);
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 2 });
});

test('an entry claimed by a dead process goes back to empty and is reused', () => {
  const { table, words, entry } = tableWithKey('a');
  Atomics.store(words, entry + LAYOUT.INCARNATION, 0);
  Atomics.store(words, entry + LAYOUT.STATE, -deadPid());
  expect(table.get(key('a'), Date.now())).toBeNull(); // the claim never finished: no key there
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 1 });
});

test('an entry a dead process was rewriting (full-table reclaim) matches no key afterwards and is reusable', () => {
  const { table, words, entry } = tableWithKey('a');
  Atomics.store(words, entry + LAYOUT.PACKED, ((LAYOUT.SENTINEL_TAG << 28) | deadPid()) | 0);
  Atomics.add(words, entry + LAYOUT.INCARNATION, 1); // odd: mid-rewrite
  expect(table.get(key('a'), Date.now())).toBeNull();
  expect(table.increment(key('b'), 60000, Date.now())).toMatchObject({ count: 1 });
  expect(table.increment(key('a'), 60000, Date.now())).toMatchObject({ count: 1 });
});

test('a window opens at the first increment after the last one ended, and keeps its end time', () => {
  const { table } = tableWithKey('w');
  const now = Date.now();
  const opened = table.increment(key('w'), 100, now + 60001); // the 60 s window ended: a new one opens
  expect(opened).toEqual({ count: 1, resetAt: now + 60101 });
  expect(table.increment(key('w'), 5000, now + 60002)).toEqual({ count: 2, resetAt: now + 60101 });
});
