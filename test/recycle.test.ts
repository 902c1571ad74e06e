// Recycling: workers past maxRequests, maxMemory or maxAge are replaced as in a reload (the new one ready
// before the old one drains), one slot at a time, with no failed request under load.
import { join } from 'node:path';
import { supervise, type Supervisor, type Worker } from '../src';
import { childrenOf, fixture, get, waitFor } from './helpers';
import { describeWithTool, wrk } from './tools';

const REGISTER = join(__dirname, '..', 'lib', 'zero-code', 'register.js');
let supervisor: Supervisor | null = null;

afterEach(async () => {
  await supervisor?.shutdown({ timeout: 2000 });
  supervisor = null;
  await waitFor(() => childrenOf().length === 0 || undefined, 3000, 'no child left').catch(() => {});
  expect(childrenOf()).toEqual([]);
});

/** The app, 2 workers; every lifecycle event is recorded as [name, worker copy, ...rest]. */
function startRecycled(recycle: object): Array<[string, Worker, ...unknown[]]> {
  const events: Array<[string, Worker, ...unknown[]]> = [];
  supervisor = supervise({
    script: fixture('apps/liveness.js'), args: [], execArgv: ['--require', REGISTER], workers: 2, listen: '127.0.0.1:0', recycle,
  });
  for (const name of ['fork', 'ready', 'exit', 'restart', 'recycle', 'unresponsive'] as const) {
    supervisor.on(name, (worker: Worker, ...rest: unknown[]) => events.push([name, { ...worker }, ...rest]));
  }
  return events;
}

/** Recycles never overlap: each recycling's new worker is forked only after the previous recycling ended. */
function expectOneAtATime(events: Array<[string, Worker, ...unknown[]]>): void {
  let open = 0;
  for (const [name, worker] of events) {
    if (name === 'fork' && worker.replaced?.startsWith('recycle-')) open += 1;
    if (name === 'recycle') open -= 1;
    expect(open).toBeLessThanOrEqual(1);
  }
}

describeWithTool('wrk', 'recycling after maxRequests under wrk -c50 for 20 s', () => {
  test.each([
    ['keep-alive', []],
    ['a connection per request', ['Connection: close']],
  ])('%s: 0 failed requests and at least 10 recycles', async (_name, headers) => {
    const events = startRecycled({ maxRequests: 500, maxRequestsJitter: 100 });
    await supervisor!.ready();
    const result = await wrk(supervisor!.addresses[0].port, 20, headers as string[]);
    const recycles = events.filter(([name]) => name === 'recycle');
    expect(result.requests).toBeGreaterThan(1000);
    expect({ socketErrors: result.socketErrors, non2xx: result.non2xx }).toEqual({ socketErrors: 0, non2xx: 0 });
    expect(recycles.length).toBeGreaterThanOrEqual(10);
    expect(new Set(recycles.map(([, , , limit]) => limit))).toEqual(new Set(['requests']));
    // Every old worker drained and exited 0, for the reason it was recycled; nothing crashed or hung.
    const exits = events.filter(([name]) => name === 'exit');
    expect(exits.every(([, , code, signal, reason]) => code === 0 && signal === null && reason === 'recycle-requests')).toBe(true);
    expect(events.filter(([name]) => name === 'restart' || name === 'unresponsive')).toEqual([]);
    expectOneAtATime(events);
    expect(supervisor!.workers).toHaveLength(2);
  }, 60_000);
});

test('a worker that allocates without limit is recycled at maxMemory, gracefully', async () => {
  const maxMemory = 160 * 1024 * 1024;
  const events = startRecycled({ maxMemory });
  await supervisor!.ready();
  const leaking = Number(await get(supervisor!.addresses[0].port, '127.0.0.1', '/leak'));
  const recycled = await waitFor(() => events.find(([name, worker]) => name === 'recycle' && worker.pid === leaking), 15_000, 'the leaking worker recycled');
  expect(recycled[3]).toBe('memory');
  const exit = await waitFor(() => events.find(([name, worker]) => name === 'exit' && worker.pid === leaking), 5000, 'its exit');
  expect(exit.slice(2)).toEqual([0, null, 'recycle-memory']); // drained and exited 0: not killed by us or the kernel
  expect((recycled[2] as Worker).replaced).toBe('recycle-memory');
  // The other worker, which does not leak, was never recycled.
  expect(events.filter(([name]) => name === 'recycle')).toHaveLength(1);
  expect(supervisor!.workers).toHaveLength(2);
  expect(Number(await get(supervisor!.addresses[0].port))).toBeGreaterThan(0);
});

test('maxAge recycles each worker after it ran that long, one at a time', async () => {
  const events = startRecycled({ maxAge: 1000 });
  await supervisor!.ready();
  const first = supervisor!.workers.map((worker) => worker.pid);
  await waitFor(() => events.filter(([name]) => name === 'recycle').length >= 3 || undefined, 10_000, '3 recycles');
  const recycles = events.filter(([name]) => name === 'recycle');
  expect(recycles.every(([, , , limit]) => limit === 'age')).toBe(true);
  expect(recycles.every(([, old]) => Date.now() - new Date(old.startedAt).getTime() >= 1000)).toBe(true);
  expect(first.every((pid) => recycles.some(([, old]) => old.pid === pid))).toBe(true);
  expectOneAtATime(events);
});
