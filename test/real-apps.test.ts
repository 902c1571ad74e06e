// Real apps' own shutdown code under `node -r prefork/register`, 2 workers: a reload under wrk fails no request
// and answers no non-2xx; a stop (the primary's SIGTERM, a group SIGINT as Ctrl-C sends, a group SIGTERM as
// systemd and `tini -g` send) runs the app's cleanup in every worker, closes WebSockets with 1001, and ends
// within 2 s with nothing left behind. The apps are in test/fixtures/apps/real and never require prefork.
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';
import { io as connectSocketIo, type Socket as SocketIoClient } from 'socket.io-client';
import { app, AppRun, stopAllApps } from './apps';
import { childrenOf, isDead, waitFor } from './helpers';
import { describeWithTool, wrk } from './tools';
const { buildNext } = require('./fixtures/apps/real/next-build') as { buildNext: () => Promise<string> };

afterEach(stopAllApps);

interface RealApp {
  name: string;
  /** What follows `node -r prefork/register`, and its environment. */
  launch: () => Promise<{ args: string[]; env?: NodeJS.ProcessEnv }>;
  /** Its cleanup prints `CLEANUP <pid> <signal>` in each worker. */
  cleanup: boolean;
  webSockets?: 'ws' | 'socket.io';
  /** Seconds of wrk around a reload: a slow starter's new workers take longer under load. */
  loadSeconds?: number;
  /** Seconds after which wrk counts a request as failed, if not its default 2. */
  slowestAnswer?: number;
  /** Written for node:cluster (a primary that forks, workers that serve): each prefork worker must run its worker branch. */
  clusterApp?: true;
}

const script = (name: string, env?: NodeJS.ProcessEnv) => async () => ({ args: [app(name)], env });

/** A port free now: Next's standalone server takes PORT=0 for its default, 3000. */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

const APPS: RealApp[] = [
  { name: 'server.close() on SIGTERM and SIGINT', launch: script('real/self-close.js'), cleanup: true },
  { name: 'async cleanup (a pool that takes 300 ms to end)', launch: script('real/async-cleanup.js'), cleanup: true },
  { name: 'Fastify, closed on SIGTERM and SIGINT (return503OnClosing on)', launch: script('real/fastify.js'), cleanup: true },
  { name: 'NestJS with Express (enableShutdownHooks)', launch: script('real/nest.mjs', { NEST_ADAPTER: 'express' }), cleanup: true, loadSeconds: 12 },
  { name: 'NestJS with Fastify (enableShutdownHooks)', launch: script('real/nest.mjs', { NEST_ADAPTER: 'fastify' }), cleanup: true, loadSeconds: 12 },
  { name: 'ws, with no shutdown code', launch: script('real/ws.js'), cleanup: false, webSockets: 'ws' },
  { name: 'socket.io, io.close() on SIGTERM and SIGINT', launch: script('real/socket-io.js'), cleanup: true, webSockets: 'socket.io' },
  { name: "throng, its worker's server.close() and disconnect() on SIGTERM and SIGINT", launch: script('real/throng.js'), cleanup: true, clusterApp: true },
  { name: 'node:cluster by hand, with no shutdown code', launch: script('real/cluster.js'), cleanup: false, clusterApp: true },
  {
    // Its own handlers close the server and exit 143 (SIGTERM) or 130 (SIGINT). Under wrk -c50 on 2 cores, one
    // plain Next process answers at p99 3.3 s, max 4.3 s (~400 req/s) with no reload at all.
    name: 'Next.js standalone server',
    launch: async () => ({ args: [await buildNext()], env: { PORT: String(await freePort()), HOSTNAME: '127.0.0.1' } }),
    cleanup: false,
    loadSeconds: 12,
    slowestAnswer: 15,
  },
];

beforeAll(() => buildNext(), 300_000); // once; then cached in test/fixtures/apps/real/next/.next

/** A stop with nothing in flight ends within this (the drain timeout is 10 s). */
const STOP_BOUND_MS = 2000;
const WEB_SOCKET_CLIENTS = 3;

/** Starts the app and waits until both workers are ready; its port and worker pids from the primary's line. */
async function start(realApp: RealApp, options: { group?: boolean } = {}): Promise<{ run: AppRun; port: number; pids: number[] }> {
  const { args, env } = await realApp.launch();
  const run = new AppRun(['-r', 'prefork/register', ...args], env, options);
  const [ready] = await run.waitForMatches(/2 workers ready \(pids (\d+), (\d+)\) on \S+:(\d+);/g, 1, { source: 'errors', timeout: 20000 });
  return { run, port: Number(ready[3]), pids: [Number(ready[1]), Number(ready[2])] };
}

/** Every worker pid the primary ever logged is gone once it exited. */
function expectNoWorkerLeft(run: AppRun): void {
  const pids = [...run.errors.matchAll(/pids? ([\d, ]+)/g)].flatMap((match) => match[1].split(', ').map(Number)).filter((pid) => pid > 0);
  expect(pids.filter((pid) => !isDead(pid))).toEqual([]);
}

/** WebSocket clients connected to the app; `closed` resolves with how each one's connection ended. */
async function connectClients(kind: 'ws' | 'socket.io', port: number): Promise<{ closed: Promise<string[]> }> {
  if (kind === 'ws') {
    const sockets = Array.from({ length: WEB_SOCKET_CLIENTS }, () => new WebSocket(`ws://127.0.0.1:${port}/`));
    const closed = Promise.all(sockets.map((socket) => new Promise<string>((resolve) => socket.once('close', (code) => resolve(String(code))))));
    await Promise.all(sockets.map((socket) => new Promise((resolve, reject) => socket.once('open', () => resolve(socket)).once('error', reject))));
    return { closed };
  }
  const sockets: SocketIoClient[] = Array.from({ length: WEB_SOCKET_CLIENTS }, () =>
    connectSocketIo(`http://127.0.0.1:${port}`, { transports: ['websocket'], reconnection: false, forceNew: true }));
  const closed = Promise.all(sockets.map((socket) => new Promise<string>((resolve) => socket.once('disconnect', (reason) => resolve(reason)))));
  await Promise.all(sockets.map((socket) => new Promise((resolve, reject) => socket.once('connect', () => resolve(socket)).once('connect_error', reject))));
  return { closed };
}

/** Every client saw the server go away: ws's close code 1001, or socket.io's reason. */
function expectWentAway(realApp: RealApp, endings: string[]): void {
  const wentAway = { ws: ['1001'], 'socket.io': ['transport close', 'io server disconnect'] }[realApp.webSockets!];
  expect(endings).toHaveLength(WEB_SOCKET_CLIENTS);
  expect(endings.filter((ending) => !wentAway.includes(ending))).toEqual([]);
}

describe.each(APPS)('$name', (realApp) => {
  describeWithTool('wrk', 'a reload under wrk -c50', () => {
    test.each([['keep-alive', []], ['Connection: close', ['Connection: close']]])('%s: no failed request, no non-2xx, the old workers gone without SIGKILL', async (_mode, headers) => {
      const { run, port, pids } = await start(realApp);
      const clients = realApp.webSockets ? await connectClients(realApp.webSockets, port) : null;
      const load = wrk(port, realApp.loadSeconds ?? 8, headers as string[], { timeout: realApp.slowestAnswer });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      run.process.kill('SIGHUP');
      await run.waitForMatches(/reload done/g, 1, { source: 'errors', timeout: 20000 });
      const reloadedAt = Date.now();
      const result = await load;
      expect(reloadedAt).toBeLessThan(Date.now()); // the reload ended while the load still ran
      const socketErrors = /Socket errors:.*/.exec(result.output)?.[0] ?? 'no socket error';
      expect({ socketErrors, non2xx: result.non2xx }).toEqual({ socketErrors: 'no socket error', non2xx: 0 });
      expect(result.requests).toBeGreaterThan(0);
      for (const pid of pids) await run.waitForMatches(new RegExp(`\\(pid ${pid}\\) exited with .*\\(reload\\)`, 'g'), 1, { source: 'errors', timeout: 1000 });
      if (clients) expectWentAway(realApp, await clients.closed);
      expect(run.errors).not.toMatch(/SIGKILL|\(crash\)/);
      expect(await run.stop()).toEqual({ code: 0, signal: null });
      expectNoWorkerLeft(run);
    });
  });

  test.each([
    ['the primary gets SIGTERM', 'SIGTERM', false],
    ['the group gets SIGINT (Ctrl-C)', 'SIGINT', true],
    ['the group gets SIGTERM (systemd, tini -g)', 'SIGTERM', true],
  ] as const)('a stop when %s: the app cleans up in each worker, WebSockets go away, done within 2 s', async (_how, signal, toGroup) => {
    const { run, port, pids } = await start(realApp, { group: true });
    const clients = realApp.webSockets ? await connectClients(realApp.webSockets, port) : null;
    const sent = Date.now();
    if (toGroup) run.signalGroup(signal);
    else run.process.kill(signal);
    expect(await run.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - sent).toBeLessThan(STOP_BOUND_MS);
    if (realApp.cleanup) {
      // A worker hears the group's signal itself; the primary's request (SIGTERM) may reach it first.
      const heard = run.matches(/^CLEANUP (\d+) (\w+)$/gm).map((line) => [Number(line[1]), line[2]]);
      expect(heard.map(([pid]) => pid).sort()).toEqual([...pids].sort());
      for (const [, appSignal] of heard) expect(toGroup ? [signal, 'SIGTERM'] : ['SIGTERM']).toContain(appSignal);
    }
    if (clients) expectWentAway(realApp, await clients.closed);
    // A group's signal may be done with in a worker before the primary handles its own: logged as `(signal)`, and
    // the primary's stop then comes before any replacement.
    expect(run.errors).not.toMatch(toGroup ? /SIGKILL|\(crash\)|restarted/ : /SIGKILL|\(crash\)|\(signal\)|restarted/);
    await waitFor(() => pids.every(isDead), 2000, 'the workers to be gone');
    expectNoWorkerLeft(run);
  });
});

/** Every process below `parent`, however deep. */
function descendantsOf(parent: number): number[] {
  return childrenOf(parent).flatMap(({ pid }) => [pid, ...descendantsOf(pid)]);
}

test.each(APPS.filter((realApp) => realApp.clusterApp))('$name: each prefork worker runs its cluster worker branch, so the primary has 2 workers and no other process', async (realApp) => {
  const { run, port, pids } = await start(realApp);
  expect(await fetch(`http://127.0.0.1:${port}/`).then((response) => response.status)).toBe(200);
  expect(descendantsOf(run.process.pid!).sort()).toEqual([...pids].sort());
  expect(run.sideEffectPids().sort()).toEqual([...pids].sort()); // the app's top-level code ran in the workers alone
  expect(await run.stop()).toEqual({ code: 0, signal: null });
  expectNoWorkerLeft(run);
});

test('a SIGTERM sent to one worker runs its shutdown and the app\'s cleanup; the primary replaces it, not as a crash', async () => {
  const { run, port, pids } = await start(APPS[1]);
  process.kill(pids[0], 'SIGTERM');
  await run.waitForMatches(new RegExp(`^CLEANUP ${pids[0]} SIGTERM$`, 'gm'), 1);
  await run.waitForMatches(new RegExp(`worker \\d \\(pid ${pids[0]}\\) exited with code 0 \\(signal\\)`, 'g'), 1, { source: 'errors' });
  await run.waitForMatches(/restarted as pid \d+ after \d+ ms \(signal\)/g, 1, { source: 'errors' });
  await run.waitForMatches(/^LISTENING /gm, 3);
  expect(run.errors).not.toMatch(/\(crash\)/);
  expect(await fetch(`http://127.0.0.1:${port}/`).then((response) => response.status)).toBe(200);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
  expectNoWorkerLeft(run);
});

test('workers that stopped on a signal before the primary got its own are not replaced only to be stopped again', async () => {
  const { run, pids } = await start(APPS[0]);
  for (const pid of pids) process.kill(pid, 'SIGTERM'); // as a group's signal the primary handles late
  await run.waitForMatches(/exited with code 0 \(signal\)/g, 2, { source: 'errors' });
  run.process.kill('SIGTERM');
  expect(await run.exited).toEqual({ code: 0, signal: null });
  expect(run.errors).not.toMatch(/restarted|SIGKILL/);
  expectNoWorkerLeft(run);
});

test("the group's signal arriving after the primary's request (its own reaction to it) is the same stop: the app's cleanup is not cut", async () => {
  const { run, pids } = await start(APPS[1]);
  run.process.kill('SIGHUP'); // the old workers are asked to stop: their app's once('SIGTERM') listener runs
  await run.waitForMatches(new RegExp(`^CLEANING ${pids[0]} SIGTERM$`, 'gm'), 1);
  process.kill(pids[0], 'SIGTERM'); // as a group SIGTERM that reached this worker late
  await run.waitForMatches(new RegExp(`^CLEANUP ${pids[0]} SIGTERM$`, 'gm'), 1);
  await run.waitForMatches(new RegExp(`\\(pid ${pids[0]}\\) exited with code 0 \\(reload\\)`, 'g'), 1, { source: 'errors' });
  await run.waitForMatches(/reload done/g, 1, { source: 'errors' });
  expect(await run.stop()).toEqual({ code: 0, signal: null });
  expectNoWorkerLeft(run);
});

test('a WebSocket no library serves (a handshake by hand) still gets 1001 going away at a stop', async () => {
  const { run, port } = await start({ name: 'raw', launch: script('real/raw-websocket.js'), cleanup: false });
  const { closed } = await connectClients('ws', port);
  run.process.kill('SIGTERM');
  expect(await run.exited).toEqual({ code: 0, signal: null });
  expect(await closed).toEqual(Array(WEB_SOCKET_CLIENTS).fill('1001'));
  expectNoWorkerLeft(run);
});

test("a response that never ends (server-sent events) does not keep the app's listeners from their turn", async () => {
  const { run, port, pids } = await start({ name: 'sse', launch: script('real/sse.js', { PREFORK_SHUTDOWN_TIMEOUT: '4000' }), cleanup: true });
  const streams = [1, 2, 3, 4].map(() => {
    const events: string[] = [];
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    const ended = new Promise<string[]>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/events', agent: false }, (response) => {
        response.setEncoding('utf8').on('data', (chunk: string) => {
          events.push(chunk.trim());
          opened();
        });
        response.once('end', () => resolve(events));
      }).on('error', reject);
    });
    return { open, ended };
  });
  await Promise.all(streams.map((stream) => stream.open));
  run.process.kill('SIGTERM');
  expect(await run.exited).toEqual({ code: 0, signal: null });
  for (const events of await Promise.all(streams.map((stream) => stream.ended))) expect(events.at(-1)).toBe('data: goodbye');
  expect(run.matches(/^CLEANUP (\d+) SIGTERM$/gm).map((line) => Number(line[1])).sort()).toEqual([...pids].sort());
  expect(run.errors).not.toMatch(/SIGKILL|had not finished/);
  expectNoWorkerLeft(run);
});
