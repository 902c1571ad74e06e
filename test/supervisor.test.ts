// The supervisor's lifecycle with real primaries, workers and HTTP: balance, restarts, reload, scale, shutdown.
import { readlinkSync } from 'node:fs';
import { get, isDead, waitFor } from './helpers';
import { load, Primary, stopAllPrimaries, tally } from './primary';

afterEach(stopAllPrimaries);

test('two workers share connections: each answers at least 25% of 400 connection-per-request requests', async () => {
  const primary = new Primary({ workers: 2 });
  const { port, workers } = await primary.allReady();
  const counts = await tally(port, 400);
  expect([...counts.keys()].sort()).toEqual(workers.map((worker) => String(worker.pid)).sort());
  for (const count of counts.values()) expect(count).toBeGreaterThanOrEqual(100);
  expect(await primary.stop()).toEqual({ code: 0, signal: null });
});

test('kill -9 of a worker under load: its slot is refilled on the same socket; only its in-flight requests fail', async () => {
  const primary = new Primary({ workers: 2 });
  const { port, workers } = await primary.allReady();
  const victim = workers[0];
  const socketBefore = readlinkSync(`/proc/${victim.pid}/fd/4`);
  const concurrency = 6;
  const traffic = load(port, { concurrency });
  await new Promise((resolve) => setTimeout(resolve, 300));
  process.kill(victim.pid as number, 'SIGKILL');
  const restart = await primary.waitForEvent('restart');
  const next = restart.next as { id: number; pid: number; generation: number };
  expect(restart).toMatchObject({ old: { id: victim.id, pid: victim.pid }, next: { id: victim.id, generation: 2 }, delay: 0 });
  await primary.waitFor((event) => event.event === 'ready' && event.pid === next.pid);
  expect(readlinkSync(`/proc/${next.pid}/fd/4`)).toBe(socketBefore);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const result = await traffic.stop();
  expect(primary.events.find((event) => event.event === 'exit')).toMatchObject({ pid: victim.pid, signal: 'SIGKILL' });
  expect(result.failed).toBeLessThanOrEqual(concurrency); // at most the requests the victim had accepted
  expect(result.byPid.get(String(next.pid))).toBeGreaterThan(0); // the replacement serves
  expect(result.ok).toBeGreaterThan(100);
});

test.each([
  ['connection-per-request', false],
  ['keep-alive', true],
])('rolling reload under %s load: zero failed requests and no old worker left', async (_name, keepAlive) => {
  const primary = new Primary({ workers: 2 });
  const { port, workers } = await primary.allReady();
  const traffic = load(port, { concurrency: 4, keepAlive });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const mark = primary.events.length;
  primary.signal('SIGHUP');
  const reload = await primary.waitForEvent('reload', { after: mark });
  // Both old workers drain and exit, after their replacements were ready.
  for (const old of workers) await primary.waitFor((event) => event.event === 'exit' && event.pid === old.pid, { after: mark });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const result = await traffic.stop();
  expect(result.errors).toEqual([]);
  expect(result.failed).toBe(0);
  const fresh = reload.workers as Array<{ pid: number; generation: number }>;
  expect(fresh.map((worker) => worker.generation)).toEqual([2, 2]);
  for (const old of workers) expect(isDead(old.pid as number)).toBe(true);
  const exits = primary.events.slice(mark).filter((event) => event.event === 'exit');
  expect(exits.map((event) => event.code)).toEqual([0, 0]); // drained, not killed
  // Every answer came from an old or a new worker, and the new ones took over the traffic.
  const known = [...workers, ...fresh].map((worker) => String(worker.pid));
  for (const pid of result.byPid.keys()) expect(known).toContain(pid);
  expect(fresh.reduce((sum, worker) => sum + (result.byPid.get(String(worker.pid)) ?? 0), 0)).toBeGreaterThan(0);
  // Order: each slot's new worker was ready before its old one exited.
  for (const old of workers) {
    const readyIndex = primary.events.findIndex((event, i) => i >= mark && event.event === 'ready' && event.id === old.id);
    const exitIndex = primary.events.findIndex((event) => event.event === 'exit' && event.pid === old.pid);
    expect(readyIndex).toBeLessThan(exitIndex);
  }
});

test('scale up with SIGTTIN and down with SIGTTOU', async () => {
  const primary = new Primary({ workers: 1 });
  const { port } = await primary.allReady();
  primary.signal('SIGTTIN');
  const up = await primary.waitForEvent('scale');
  expect(up).toMatchObject({ from: 1, to: 2 });
  const both = up.workers as Array<{ pid: number }>;
  expect(both).toHaveLength(2);
  const counts = await tally(port, 100);
  expect([...counts.keys()].sort()).toEqual(both.map((worker) => String(worker.pid)).sort());

  const mark = primary.events.length;
  primary.signal('SIGTTOU');
  const down = await primary.waitForEvent('scale', { after: mark });
  expect(down).toMatchObject({ from: 2, to: 1 });
  expect(isDead(both[1].pid)).toBe(true);
  const after = await tally(port, 50);
  expect([...after.keys()]).toEqual([String(both[0].pid)]);
});

test('a slow in-flight request finishes during a graceful shutdown, and the primary exits 0', async () => {
  const primary = new Primary({ workers: 1 });
  const { port, workers } = await primary.allReady();
  const slow = get(port, '127.0.0.1', '/slow?ms=1500');
  await new Promise((resolve) => setTimeout(resolve, 300));
  primary.signal('SIGTERM');
  expect(await slow).toBe(String(workers[0].pid));
  expect(await primary.exited).toEqual({ code: 0, signal: null });
  expect(primary.events.find((event) => event.event === 'exit')).toMatchObject({ code: 0, signal: null });
  await expect(get(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' }); // the port is released
});

test('a worker that does not finish its shutdown is SIGKILLed after shutdownTimeout', async () => {
  const primary = new Primary({ workers: 1, shutdownTimeout: 500 }, { behaviour: 'hang-on-shutdown' });
  await primary.allReady();
  const started = Date.now();
  primary.signal('SIGTERM');
  const exit = await primary.waitForEvent('exit');
  expect(exit).toMatchObject({ signal: 'SIGKILL' });
  expect(Date.now() - started).toBeGreaterThanOrEqual(450);
  expect(await primary.exited).toEqual({ code: 0, signal: null });
});

test('a crash loop gives up with ERR_PREFORK_CRASH_LOOP, and the primary exits 1', async () => {
  const primary = new Primary({ workers: 1, restart: { maxRestarts: 3, delay: 20 } }, { behaviour: 'crash-after-listen' });
  const giveup = await primary.waitForEvent('giveup');
  expect(giveup).toMatchObject({ slot: 0, code: 'ERR_PREFORK_CRASH_LOOP' });
  expect(giveup.message).toMatch(/worker slot 0 exited 4 times within 60000 ms \(last exit: code 1\); giving up/);
  expect(await primary.exited).toEqual({ code: 1, signal: null });
  expect(primary.stderr).toContain('ERR_PREFORK_CRASH_LOOP');
  const restarts = primary.events.filter((event) => event.event === 'restart');
  expect(restarts.map((event) => event.delay)).toEqual([0, 20, 30]);
  await primary.stop();
});

test('kill -9 of the primary leaves no worker alive after 1 s', async () => {
  const primary = new Primary({ workers: 2 });
  const { workers } = await primary.allReady();
  primary.signal('SIGKILL');
  await primary.exited;
  await waitFor(() => workers.every((worker) => isDead(worker.pid as number)), 1000, 'workers to follow their primary');
});

test('a worker whose event loop is stuck still dies within 1 s of its primary (the native watchdog)', async () => {
  const primary = new Primary({ workers: 1 }, { behaviour: 'wedge-after-ready' });
  const { workers } = await primary.allReady();
  await new Promise((resolve) => setTimeout(resolve, 400)); // the worker is spinning now
  primary.signal('SIGKILL');
  await primary.exited;
  await waitFor(() => isDead(workers[0].pid as number), 1000, 'the stuck worker to follow its primary');
});

test('workers of a primary started with --inspect get their own inspector ports', async () => {
  const base = 20000 + Math.floor(Math.random() * 10000); // below the ephemeral range (32768+), where clients' ports come from
  const primary = new Primary({ workers: 2 }, { nodeArgs: [`--inspect=127.0.0.1:${base}`] });
  await primary.allReady();
  expect(primary.stderr).toContain(`Debugger listening on ws://127.0.0.1:${base}/`);
  expect(primary.stderr).toContain(`Debugger listening on ws://127.0.0.1:${base + 1}/`);
  expect(primary.stderr).toContain(`Debugger listening on ws://127.0.0.1:${base + 2}/`);
  expect(primary.stderr).not.toContain('address already in use');
});

test("sockets: 'shared' (macOS's mode, forced here) serves from every worker through one socket", async () => {
  const primary = new Primary({ workers: 2, sockets: 'shared' });
  const { port, workers } = await primary.allReady();
  expect((await primary.waitForEvent('all-ready')).sockets).toBe('shared');
  const inodes = workers.map((worker) => readlinkSync(`/proc/${worker.pid}/fd/4`));
  expect(inodes[0]).toBe(inodes[1]);
  const traffic = load(port, { concurrency: 4 });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const result = await traffic.stop();
  expect(result.failed).toBe(0);
  expect(result.byPid.size).toBe(2);
});

const asRoot = process.getuid?.() === 0 ? test : test.skip;
asRoot('a root primary binds a port below 1024 and runs its workers as another user', async () => {
  const port = 600 + Math.floor(Math.random() * 400);
  const primary = new Primary({ workers: 2, listen: port, user: 'nobody' });
  const { workers } = await primary.allReady();
  for (const worker of workers) {
    const status = require('node:fs').readFileSync(`/proc/${worker.pid}/status`, 'utf8') as string;
    expect(status).toMatch(/^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
  }
  expect(await get(port)).toMatch(/^\d+$/);
});
