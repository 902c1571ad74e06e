// Liveness: a worker whose event loop is stuck (an endless loop, a blocking native call, SIGSTOP) is seen
// through its heartbeat in shared memory, killed and replaced on its slot's socket, while connection-per-request
// traffic at 100 req/s keeps being served. Also what stats() reports, and the options' bad input.
import http from 'node:http';
import { join } from 'node:path';
import { supervise, type Supervisor, type Worker } from '../src';
import { childrenOf, fixture, waitFor } from './helpers';

const REGISTER = join(__dirname, '..', 'lib', 'zero-code', 'register.js');
const HEARTBEAT_TIMEOUT = 1000;
let supervisor: Supervisor | null = null;

afterEach(async () => {
  await supervisor?.shutdown({ timeout: 1000 });
  supervisor = null;
  await waitFor(() => childrenOf().length === 0 || undefined, 3000, 'no child left').catch(() => {});
  expect(childrenOf()).toEqual([]);
});

function startLivenessApp(options: Parameters<typeof supervise>[0] = {}): Supervisor {
  supervisor = supervise({
    script: fixture('apps/liveness.js'), args: [], execArgv: ['--require', REGISTER], workers: 2, listen: '127.0.0.1:0', ...options,
  });
  return supervisor;
}

/** One GET on a new connection: its time in ms, or the error. */
function timedGet(port: number, path = '/'): Promise<{ ms: number; body?: string; error?: string }> {
  const start = Date.now();
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ ms: Date.now() - start, body }));
    });
    request.on('error', (error: NodeJS.ErrnoException) => resolve({ ms: Date.now() - start, error: error.code ?? error.message }));
    request.setTimeout(10_000, () => request.destroy(new Error('no answer in 10 s')));
  });
}

describe.each([
  ['an endless loop', '/spin'],
  ['a blocking native call (Atomics.wait)', '/wait'],
  ['SIGSTOP', '/stop'],
])('a worker stuck in %s', (_what, path) => {
  test('is replaced within heartbeatTimeout + 1 s, and 100 req/s meanwhile wait at most heartbeatTimeout + 500 ms', async () => {
    const events: Array<[string, Worker, ...unknown[]]> = [];
    startLivenessApp({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    for (const name of ['exit', 'unresponsive', 'restart', 'ready'] as const) supervisor!.on(name, (worker: Worker, ...rest: unknown[]) => events.push([name, { ...worker }, ...rest]));
    await supervisor!.ready();
    events.length = 0;
    const { port } = supervisor!.addresses[0];

    const stuckAt = Date.now();
    const stuck = timedGet(port, path);
    // Connections the worker accepted before its loop stopped (in the same turn as the stuck request) are
    // lost with it, by design; the traffic starts once it is stuck, so all of it waits in the kernel's queue.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const traffic: Array<Promise<{ ms: number; body?: string; error?: string }>> = [];
    let replacedAt = 0;
    // 100 req/s on new connections, until a second after the replacement is ready (at most 6 s).
    while (Date.now() - stuckAt < 6000 && (replacedAt === 0 || Date.now() - replacedAt < 1000)) {
      traffic.push(timedGet(port));
      await new Promise((resolve) => setTimeout(resolve, 10));
      const ready = events.find(([name, worker]) => name === 'ready' && worker.replaced === 'unresponsive');
      if (ready && replacedAt === 0) replacedAt = Date.now();
    }
    const results = await Promise.all(traffic);

    const unresponsive = events.filter(([name]) => name === 'unresponsive');
    expect(unresponsive).toHaveLength(1);
    const [, stuckWorker, since] = unresponsive[0];
    expect(since).toBeGreaterThanOrEqual(HEARTBEAT_TIMEOUT);
    expect(replacedAt - stuckAt).toBeLessThanOrEqual(HEARTBEAT_TIMEOUT + 1000);
    // Only the stuck worker went, killed, and its slot got the one replacement.
    expect(events.filter(([name]) => name === 'exit').map(([, worker, code, signal, reason]) => [worker.pid, code, signal, reason]))
      .toEqual([[stuckWorker.pid, null, 'SIGKILL', 'unresponsive']]);
    const restart = events.find(([name]) => name === 'restart')!;
    expect([restart[1].pid, (restart[2] as Worker).id, restart[4]]).toEqual([stuckWorker.pid, stuckWorker.id, 'unresponsive']);
    expect((await stuck).error).toBeDefined(); // the one request it had accepted is lost
    // Nothing else failed, and nothing waited long.
    expect(results.filter((result) => result.error)).toEqual([]);
    expect(Math.max(...results.map((result) => result.ms))).toBeLessThanOrEqual(HEARTBEAT_TIMEOUT + 500);
    expect(new Set(results.map((result) => result.body)).size).toBeGreaterThanOrEqual(2);
    expect(supervisor!.workers.map((worker) => worker.pid)).not.toContain(stuckWorker.pid);
  });
});

test('stats() reports per worker requests, RSS, heap, loop lag, time since the last heartbeat and why it replaced its predecessor', async () => {
  startLivenessApp({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
  await supervisor!.ready();
  const { port } = supervisor!.addresses[0];
  for (let i = 0; i < 20; i++) expect((await timedGet(port)).error).toBeUndefined();
  await new Promise((resolve) => setTimeout(resolve, 300)); // a heartbeat carries the counts over
  const { workers } = await supervisor!.stats();
  expect(workers).toHaveLength(2);
  expect(workers.reduce((sum, worker) => sum + worker.requests, 0)).toBe(20);
  for (const worker of workers) {
    expect(worker.rss).toBeGreaterThan(10 * 1024 * 1024);
    expect(worker.memory!.heapUsed).toBeGreaterThan(0);
    expect(worker.loopLag).toBeGreaterThanOrEqual(0);
    expect(worker.sinceHeartbeat).toBeGreaterThanOrEqual(0);
    expect(worker.sinceHeartbeat).toBeLessThan(HEARTBEAT_TIMEOUT);
    expect(worker.replaced).toBeNull();
    expect(worker.exitReason).toBeNull();
  }
  await supervisor!.reload();
  const reloaded = await supervisor!.stats();
  expect(reloaded.workers.map((worker) => [worker.replaced, worker.requests])).toEqual([['reload', 0], ['reload', 0]]);
});

test('heartbeatTimeout 0 turns the check off: a stuck worker is left alone', async () => {
  const unresponsive: Worker[] = [];
  startLivenessApp({ heartbeatTimeout: 0 }).on('unresponsive', (worker: Worker) => unresponsive.push(worker));
  await supervisor!.ready();
  void timedGet(supervisor!.addresses[0].port, '/spin');
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const { workers } = await supervisor!.stats();
  expect(unresponsive).toEqual([]);
  expect(workers.some((worker) => worker.sinceHeartbeat! > 1000)).toBe(true); // seen, not acted on
});

describe('bad liveness and recycle options fail before anything starts', () => {
  test.each([
    [{ heartbeatTimeout: 50 }, /"heartbeatTimeout" option must be 0 \(off\) or an integer from 100 to 2147483647. Received 50/],
    [{ heartbeatTimeout: -1 }, /"heartbeatTimeout" option must be 0 \(off\) or an integer/],
    [{ heartbeatTimeout: 1.5 }, /"heartbeatTimeout" option must be 0 \(off\) or an integer/],
    [{ heartbeatTimeout: '30s' }, /"heartbeatTimeout" option must be of type number/],
    [{ recycle: { maxMemory: 1024 * 1024 } }, /"recycle.maxMemory" option must be 0 \(off\) or an integer from 16777216/],
    [{ recycle: { maxRequests: -5 } }, /"recycle.maxRequests" option must be 0 \(off\) or an integer from 1/],
    [{ recycle: { maxAge: 10 } }, /"recycle.maxAge" option must be 0 \(off\) or an integer from 1000/],
    [{ recycle: { maxRequestsJitter: 10 } }, /"recycle.maxRequestsJitter" option needs recycle.maxRequests/],
    [{ recycle: { maxRequest: 10 } }, /Unknown option "maxRequest" for the "recycle" option. Did you mean "maxRequests"\?/],
    [{ recycle: 1000 }, /options of the "recycle" option/],
  ])('%p', (options, message) => {
    expect(() => supervise({ script: fixture('apps/liveness.js'), listen: 0, ...(options as object) })).toThrow(message);
    expect(childrenOf()).toEqual([]);
  });
});
