// supervise() used in-process: events, ready(), workers, stats(), reload(), scale(), shutdown(), readiness
// modes, the dead-slot rule, Fiber's one-line listen(), and isWorker()'s proof of a real control channel.
import child_process from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { isWorker, Supervisor, type SupervisorEvents, type SupervisorOptions } from '../src';
import { fixture, get, isDead, waitFor } from './helpers';
import { TestSupervisors } from './supervisors';

const supervisors = new TestSupervisors();
const start = (options: SupervisorOptions = {}, behaviour = ''): Supervisor => supervisors.start(options, behaviour);

afterEach(() => supervisors.stopAll());
afterAll(() => supervisors.remove());

/** Requests with a short timeout: a connection stuck in a dead socket's queue fails instead of waiting. */
function quickGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, agent: false, headers: { connection: 'close' } }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk) => (body += chunk)).on('end', () => resolve(body));
    });
    request.on('error', reject);
    request.setTimeout(700, () => request.destroy(new Error('stuck in a queue nobody accepts from')));
  });
}

test('events tell the lifecycle in order, and workers, addresses and stats() describe it', async () => {
  const supervisor = start();
  const events: string[] = [];
  for (const name of ['fork', 'online', 'listening', 'ready'] as const) supervisor.on(name, (...[worker]: SupervisorEvents[typeof name]) => void events.push(`${name}:${worker.id}`));
  await supervisor.ready();
  for (const id of [0, 1]) {
    const own = events.filter((event) => event.endsWith(`:${id}`));
    expect(own).toEqual([`fork:${id}`, `online:${id}`, `listening:${id}`, `ready:${id}`]);
  }
  expect(supervisor.workers).toEqual([
    { id: 0, pid: expect.any(Number), generation: 1, state: 'ready', startedAt: expect.any(Date), restarts: 0, replaced: null, exitReason: null },
    { id: 1, pid: expect.any(Number), generation: 1, state: 'ready', startedAt: expect.any(Date), restarts: 0, replaced: null, exitReason: null },
  ]);
  const [address] = supervisor.addresses;
  expect(address.port).toBeGreaterThan(0);
  const stats = await supervisor.stats();
  expect(stats).toMatchObject({ sockets: 'shared', restarts: 0, addresses: [address] }); // one queue by default
  expect(stats.workers).toHaveLength(2);
  for (const worker of stats.workers) {
    expect(worker.memory?.rss).toBeGreaterThan(0);
    expect(worker.connections).toBe(0);
  }
  const shutdown = new Promise<void>((resolve) => supervisor.once('shutdown', resolve));
  await supervisor.shutdown();
  await shutdown;
  for (const worker of stats.workers) expect(isDead(worker.pid)).toBe(true);
  await expect(get(address.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
});

test('reload() replaces every worker, and scale() adds and removes slots', async () => {
  const supervisor = start();
  await supervisor.ready();
  const before = supervisor.workers.map((worker) => worker.pid);
  const exits: unknown[] = [];
  supervisor.on('exit', (worker, code, signal, reason) => exits.push([worker.pid, code, signal, reason, worker.exitReason]));
  const reloadEvents: string[] = [];
  for (const name of ['reloading', 'reload', 'reloadfailed'] as const) supervisor.on(name, () => void reloadEvents.push(name));
  await supervisor.reload();
  expect(reloadEvents).toEqual(['reloading', 'reload']);
  expect(supervisor.workers.map((worker) => [worker.generation, worker.replaced])).toEqual([[2, 'reload'], [2, 'reload']]);
  await waitFor(() => before.every(isDead), 5000, 'old workers to drain');
  await waitFor(() => exits.length === 2 || undefined, 2000, 'their exit events');
  expect(exits).toEqual(expect.arrayContaining(before.map((pid) => [pid, 0, null, 'reload', 'reload'])));

  const scaled: Array<[number, number]> = [];
  supervisor.on('scale', (from, to) => scaled.push([from, to]));
  await supervisor.scale(3);
  expect(supervisor.workers.map((worker) => worker.id)).toEqual([0, 1, 2]);
  const removed = supervisor.workers[2].pid;
  await supervisor.scale(1);
  expect(supervisor.workers.map((worker) => worker.id)).toEqual([0]);
  expect(isDead(removed)).toBe(true);
  await waitFor(() => exits.length === 4 || undefined, 2000, 'the scaled-away exits');
  expect(exits.slice(2).map((exit) => (exit as unknown[])[3])).toEqual(['scale', 'scale']);
  expect(scaled).toEqual([[2, 3], [3, 1]]);
  expect(() => supervisor.scale(0)).toThrow('The "workers" option must be an integer from 1 to 1024. Received 0');
});

test('a reload whose new workers fail keeps the old ones serving, and says why', async () => {
  const supervisor = start();
  await supervisor.ready();
  const port = supervisor.addresses[0].port;
  const serving = supervisor.workers.map((worker) => worker.pid);
  supervisors.behave(supervisor, 'exit-before-listen');
  const reloadEvents: unknown[] = [];
  for (const name of ['reloading', 'reload', 'reloadfailed'] as const) supervisor.on(name, (...args: unknown[]) => void reloadEvents.push([name, ...args]));
  const reload = supervisor.reload();
  await expect(reload).rejects.toMatchObject({
    code: 'ERR_PREFORK_RELOAD_FAILED',
    message: expect.stringMatching(/^Reload stopped at worker slot 0: worker 0 \(pid \d+\) exited with code 3 before it was ready; the old workers keep serving$/),
  });
  // 'reloadfailed' carries the very error reload() rejects with (a SIGHUP reload has no promise to await).
  const failure = await reload.catch((error: Error) => error);
  expect(reloadEvents).toEqual([['reloading'], ['reloadfailed', failure]]);
  expect((reloadEvents[1] as unknown[])[1]).toBe(failure);
  expect(supervisor.workers.map((worker) => worker.pid)).toEqual(serving);
  expect(serving).toContain(Number(await get(port)));
});

test('a reload whose new worker fails after the old one died refills the slot', async () => {
  const supervisor = start({ workers: 1, waitReady: true, readyTimeout: 1000 }, 'ready-late');
  await supervisor.ready();
  const [old] = supervisor.workers;
  supervisors.behave(supervisor, 'never-ready');
  const reload = supervisor.reload();
  await new Promise((resolve) => supervisor.once('fork', resolve));
  process.kill(old.pid, 'SIGKILL');
  await expect(reload).rejects.toMatchObject({ code: 'ERR_PREFORK_RELOAD_FAILED' });
  supervisors.behave(supervisor, 'ready-late');
  await waitFor(() => supervisor.workers[0]?.state === 'ready', 5000, 'the slot to be refilled');
  expect(Number(await get(supervisor.addresses[0].port))).toBe(supervisor.workers[0].pid);
});

test('scaling down while the removed worker drains resets no new connection', async () => {
  const supervisor = start({ workers: 2 });
  await supervisor.ready();
  const port = supervisor.addresses[0].port;
  const slow = Array.from({ length: 8 }, () => get(port, '127.0.0.1', '/slow?ms=1500')); // keeps both draining a while
  await new Promise((resolve) => setTimeout(resolve, 200));
  const scaled = supervisor.scale(1);
  await new Promise((resolve) => setTimeout(resolve, 100));
  for (let i = 0; i < 40; i++) expect(await get(port)).toMatch(/^\d+$/);
  await scaled;
  expect((await Promise.all(slow)).every((body) => /^\d+$/.test(body))).toBe(true);
});

test('waitReady: a worker is ready when it calls ready(), not when it listens', async () => {
  const supervisor = start({ workers: 1, waitReady: true }, 'ready-late');
  const times: Record<string, number> = {};
  supervisor.on('listening', () => (times.listening = Date.now()));
  supervisor.on('ready', () => (times.ready = Date.now()));
  await supervisor.ready();
  expect(times.ready - times.listening).toBeGreaterThanOrEqual(250);
});

test('readyTimeout: a worker that never gets ready fails the start with ERR_PREFORK_READY_TIMEOUT, leaving nothing', async () => {
  const supervisor = start({ workers: 1, waitReady: true, readyTimeout: 300 }, 'never-ready');
  await expect(supervisor.ready()).rejects.toMatchObject({ code: 'ERR_PREFORK_READY_TIMEOUT' });
});

test('a slot waiting out its backoff leaves the kernel balancing, so no connection waits on it', async () => {
  const supervisor = start({ restart: { delay: 3000 } }, 'crash-slot-1-after-listen');
  // Crash 1 restarts at once on the same socket; crash 2 waits 3 s with the slot's socket closed.
  const delays: number[] = [];
  supervisor.on('restart', (_old, _next, delay) => delays.push(delay));
  const secondCrash = new Promise<void>((resolve) => {
    let exits = 0;
    supervisor.on('exit', (worker) => worker.id === 1 && ++exits === 2 && resolve());
  });
  await supervisor.ready();
  await secondCrash;
  expect(delays).toEqual([0]);
  const port = supervisor.addresses[0].port;
  const healthy = String(supervisor.workers.find((worker) => worker.id === 0)?.pid);
  for (let i = 0; i < 60; i++) expect(await quickGet(port)).toBe(healthy);
});

test("Fiber's one line: listen() makes the script the primary of 2 workers; top-level code runs in all three; node:cluster calls the workers workers", async () => {
  const app = child_process.spawn(process.execPath, [fixture('one-line.js')], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  app.stdout.setEncoding('utf8').on('data', (chunk) => (output += chunk));
  try {
    const ready = await waitFor(() => /READY (.+)\n/.exec(output)?.[1], 10000, 'READY');
    const { port, workers } = JSON.parse(ready) as { port: number; workers: number[] };
    expect(output).toContain(`TOP primary ${app.pid} cluster.isPrimary=true`);
    expect(output).toContain(`TOP worker-0 ${workers[0]} cluster.isPrimary=false`);
    expect(output).toContain(`TOP worker-1 ${workers[1]} cluster.isPrimary=false`);
    const answers = new Set<string>();
    for (let i = 0; i < 60; i++) answers.add(await get(port));
    expect([...answers].sort()).toEqual(workers.map(String).sort());
    app.kill('SIGTERM');
    expect(await new Promise((resolve) => app.once('exit', (code) => resolve(code)))).toBe(0);
    for (const pid of workers) expect(isDead(pid)).toBe(true);
  } finally {
    app.kill('SIGKILL');
  }
});

test('isWorker() is not fooled by the environment variable alone', () => {
  const probe = `process.stdout.write(String(require(${JSON.stringify(join(__dirname, '..', 'lib'))}).isWorker()))`;
  const env = { ...process.env, PREFORK_WORKER_ID: '0', PREFORK_LISTEN: '[]' };
  const noChannel = child_process.spawnSync(process.execPath, ['-e', probe], { env, encoding: 'utf8' });
  expect(noChannel.stdout).toBe('false');
  const fileOnFd3 = child_process.spawnSync(process.execPath, ['-e', probe], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit', 'ignore'] });
  expect(fileOnFd3.stdout).toBe('false');
  // A socketpair from the parent on fd 3 (what a worker's own child_process.fork() gives its child) is not it either.
  const parentsSocketpair = child_process.spawnSync(process.execPath, ['-e', probe], {
    env: { ...env, PREFORK_CHANNEL_ID: '12345' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit', 'pipe'],
  });
  expect(parentsSocketpair.stdout).toBe('false');
  expect(isWorker()).toBe(false);
});
