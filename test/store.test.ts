// The shared counter store: its API and errors, exact counts from concurrent workers, expiry, a full table,
// and workers killed with SIGKILL in the middle of updates.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CounterStore, supervise, type Supervisor, type SupervisorOptions } from '../src';
import { childrenOf, fixture, waitFor } from './helpers';

const scratch = mkdtempSync(join(tmpdir(), 'prefork-store-'));
let supervisors: Supervisor[] = [];

function start(env: NodeJS.ProcessEnv, options: SupervisorOptions = {}): Supervisor {
  const supervisor = supervise({
    script: fixture('store-worker.js'), args: [], execArgv: [], workers: 2, waitReady: true, readyTimeout: 20000,
    signals: false, exitProcess: false, ...options, env: { RESULT_FILE: join(scratch, `result-${supervisors.length}`), ...env },
  });
  supervisors.push(supervisor);
  return supervisor;
}

const resultOf = (supervisor: Supervisor, pid: number) =>
  JSON.parse(readFileSync(`${join(scratch, `result-${supervisors.indexOf(supervisor)}`)}.${pid}`, 'utf8')) as unknown;

afterEach(async () => {
  await Promise.all(supervisors.map((supervisor) => supervisor.shutdown({ timeout: 1000 })));
  supervisors = [];
  expect(childrenOf()).toEqual([]);
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('in one process (a private table)', () => {
  test('increment, get, decrement and reset', () => {
    const store = new CounterStore({ prefix: 'api:' });
    const first = store.increment('a', 60000);
    expect(first).toEqual({ count: 1, resetAt: expect.any(Number) });
    expect(first.resetAt - Date.now()).toBeGreaterThan(59000);
    expect(store.increment('a', 60000)).toEqual({ count: 2, resetAt: first.resetAt });
    expect(store.get('a')).toEqual({ count: 2, resetAt: first.resetAt });
    store.decrement('a');
    expect(store.get('a')?.count).toBe(1);
    store.reset('a');
    expect(store.get('a')).toBeNull();
    expect(store.increment('a', 60000).count).toBe(1);
    expect(store.get('never-seen')).toBeNull();
    store.decrement('never-seen'); // no-op, no error
  });

  test('prefixes keep stores apart, and long keys are told apart by their digest', () => {
    const one = new CounterStore({ prefix: 'one:' });
    const two = new CounterStore({ prefix: 'two:' });
    one.increment('k', 60000);
    expect(two.get('k')).toBeNull();
    const long = 'x'.repeat(200);
    expect(one.increment(long, 60000).count).toBe(1);
    expect(one.increment(long, 60000).count).toBe(2);
    expect(one.get(`${long}y`)).toBeNull();
    // Lone surrogates are not merged, and a short key spelled like a digest is not the digest's counter.
    expect(one.increment(`${long}\ud800`, 60000).count).toBe(1);
    expect(one.increment(`${long}\udc00`, 60000).count).toBe(1);
    const digest = `#${require('node:crypto').createHash('sha256').update(Buffer.from(`one:${long}`, 'utf16le')).digest('base64')}`;
    expect(new CounterStore().increment(digest, 60000).count).toBe(1);
  });

  test("resetAll() starts every key of a RateLimitStore's prefix again, for every store on that prefix", () => {
    const { RateLimitStore } = require('../src') as typeof import('../src');
    const one = new RateLimitStore({ prefix: `reset-all-${Date.now()}:` });
    const two = new RateLimitStore({ prefix: one.prefix });
    const other = new RateLimitStore({ prefix: `${one.prefix}other:` });
    for (const store of [one, two, other]) store.init({ windowMs: 60000 });
    for (let i = 0; i < 3; i++) one.increment('a');
    other.increment('a');
    expect(two.get('a')?.totalHits).toBe(3);
    two.resetAll();
    expect(one.get('a')).toBeUndefined();
    expect(one.increment('a').totalHits).toBe(1);
    expect(other.get('a')?.totalHits).toBe(1); // another prefix keeps its counts
  });

  test('with a random seed, a table at half its capacity admits every key (no probe window fills up)', () => {
    const { createRegion } = require('../src/store/counter-store') as typeof import('../src/store/counter-store');
    const { fd, table } = createRegion(4096);
    require('node:fs').closeSync(fd);
    const store = new CounterStore({}, table);
    for (let i = 0; i < 2048; i++) expect(store.increment(`${Math.random()}`, 600000).count).toBe(1);
  });

  test('counts start again after the window', async () => {
    const store = new CounterStore({ prefix: 'expiry:' });
    store.increment('k', 150);
    expect(store.increment('k', 150).count).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(store.get('k')).toBeNull();
    expect(store.increment('k', 150).count).toBe(1);
  });

  test.each([
    [() => new CounterStore().increment('', 1000), TypeError, `The "key" option must be a non-empty string. Received ''`],
    [() => new CounterStore().increment('k'.repeat(5000), 1000), RangeError, `The "key" option must be at most 4096 characters long. Received '5000 characters'`],
    [() => new CounterStore().increment(42 as never, 1000), TypeError, 'The "key" option must be of type string. Received type number (42)'],
    [() => new CounterStore().increment('k', 0), RangeError, 'The "windowMs" option must be an integer from 1 to 31536000000. Received 0'],
    [() => new CounterStore().increment('k', -5), RangeError, 'The "windowMs" option must be an integer from 1 to 31536000000. Received -5'],
    [() => new CounterStore().increment('k', 1.5), RangeError, 'The "windowMs" option must be an integer from 1 to 31536000000. Received 1.5'],
    [() => new CounterStore().increment('k', '1000' as never), TypeError, `The "windowMs" option must be of type number. Received type string ('1000')`],
    [() => new CounterStore({ onFull: 'maybe' as never }), TypeError, `The "onFull" option must be 'error' or 'allow'. Received 'maybe'`],
    [() => new CounterStore({ prefx: 'a' } as never), TypeError, 'Unknown option "prefx" for CounterStore. Did you mean "prefix"?'],
  ])('bad input: %#', (call, type, message) => {
    expect(call).toThrow(type);
    expect(call).toThrow(message);
  });
});

describe('shared by workers', () => {
  test('2 workers each incrementing one key 100,000 times give exactly 200,000', async () => {
    const supervisor = start({ STORE_MODE: 'hammer', STORE_COUNT: '100000', STORE_WORKERS: '2' });
    await supervisor.ready();
    expect(supervisor.store().get('hot')?.count).toBe(200000);
  });

  test('a full table: expired keys are reclaimed first, then ERR_PREFORK_STORE_FULL (or count 0 with onFull: allow)', async () => {
    const supervisor = start({ STORE_MODE: 'fill', STORE_KEYS: '16', STORE_WINDOW: '300' }, { workers: 1, storeCapacity: 16 });
    await supervisor.ready();
    const result = resultOf(supervisor, supervisor.workers[0].pid) as { extra: { code: string; message: string }; again: { count: number }; size: number };
    expect(result.extra).toEqual({
      code: 'ERR_PREFORK_STORE_FULL',
      message: "The counter store is full (16 keys; this key's neighbourhood holds only live windows): raise the supervisor's storeCapacity or use onFull: 'allow'",
    });
    expect(result.again).toEqual({ count: 1, resetAt: expect.any(Number) }); // an expired key's entry was reused
    expect(result.size).toBe(16);

    const failOpen = start({ STORE_MODE: 'fill', STORE_KEYS: '16', STORE_WINDOW: '300', STORE_ON_FULL: 'allow' }, { workers: 1, storeCapacity: 16 });
    await failOpen.ready();
    expect((resultOf(failOpen, failOpen.workers[0].pid) as { extra: { count: number } }).extra.count).toBe(0);
  });

  test("express-rate-limit's store fails open on a full table (the request passes) and warns once, not per request", async () => {
    const supervisor = start({ STORE_MODE: 'fill-rate-limit', STORE_KEYS: '16' }, { workers: 1, storeCapacity: 16 });
    await supervisor.ready();
    expect(resultOf(supervisor, supervisor.workers[0].pid)).toEqual({ extra: [1, 1, 1], warnings: 1 });
  });

  test('a worker holding words of the table (a counter LOCKED, the reclaim lock) as a stopped or hostile one would: every call from another process returns within the bound', async () => {
    const supervisor = start({ STORE_MODE: 'hold', STORE_KEYS: '15' }, { workers: 1, storeCapacity: 16 });
    await supervisor.ready();
    await new Promise((resolve) => setTimeout(resolve, 10)); // the 15 windows of 1 ms have ended: reclaimable
    const store = supervisor.store();
    const busy = { code: 'ERR_PREFORK_STORE_BUSY', message: "The counter store is busy (another process held this key's entry for over 1 ms, for example one stopped in the middle of an update; the call changed nothing): retry, or use onFull: 'allow' to let requests through" };
    const started = performance.now();
    expect(() => store.increment('held', 60000)).toThrow(expect.objectContaining(busy)); // its entry is being taken
    expect(() => store.increment('new', 60000)).toThrow(expect.objectContaining(busy)); // a full table, its reclaim lock held
    expect(store.get('held')).toBeNull(); // a locked entry holds an ended window
    store.reset('held');
    expect(supervisor.store({ onFull: 'allow' }).increment('held', 60000)).toEqual({ count: 0, resetAt: expect.any(Number) });
    expect(performance.now() - started).toBeLessThan(1000); // 1 ms a call, plus what a loaded machine adds; the old code spun for 13 s and more
    await supervisor.shutdown({ timeout: 0 }); // the holder is gone: the next process undoes what it held
    expect(store.increment('new', 60000)).toEqual({ count: 1, resetAt: expect.any(Number) });
    expect(store.increment('held', 60000)).toEqual({ count: 1, resetAt: expect.any(Number) });
  });

  test('workers killed with SIGKILL in the middle of updates leave the table consistent and usable', async () => {
    const supervisor = start({ STORE_MODE: 'forever' }, { restart: { maxRestarts: 100, delay: 1 } });
    await supervisor.ready();
    for (let kill = 0; kill < 12; kill++) {
      await new Promise((resolve) => setTimeout(resolve, 40));
      const victim = supervisor.workers[kill % 2];
      if (victim) process.kill(victim.pid, 'SIGKILL');
    }
    await waitFor(() => supervisor.workers.length === 2 && supervisor.workers.every((worker) => worker.state === 'ready'), 10000, 'workers back');
    await supervisor.shutdown({ timeout: 0 });
    // Nothing is left claimed or half-written: every key can be counted, exactly, from here on.
    const store = supervisor.store();
    const before = store.get('hot')?.count ?? 0;
    expect(before).toBeGreaterThan(0);
    for (let i = 0; i < 1000; i++) store.increment('hot', 600000);
    expect(store.get('hot')?.count).toBe(before + 1000);
    for (let i = 0; i < 3000; i++) expect(store.increment(`fresh-${i}`, 600000).count).toBe(1);
  });
});
