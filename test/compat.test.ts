// Zero-code mode is invisible to the app: real libraries under `node -r prefork/register` with 2 workers,
// each checked by what it does (worker threads, child processes, cluster, socket.io, pino, graceful-shutdown
// libraries, listen() as Node has it), plus NODE_DEBUG=prefork, the process.send shim and Windows.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io as connect } from 'socket.io-client';
import { app, AppRun, cli, stopAllApps } from './apps';
import { fixture, get } from './helpers';

afterEach(stopAllApps);

const register = (name: string) => ['-r', 'prefork/register', app(name)];

/** GETs `path` until both workers have answered (each body ends with the pid that served it); returns every body. */
async function fromBothWorkers(port: number, pids: number[], path = '/', tries = 40): Promise<string[]> {
  const bodies: string[] = [];
  const answered = (pid: number) => bodies.some((body) => body === String(pid) || body.endsWith(` ${pid}`));
  for (let i = 0; i < tries && !pids.every(answered); i++) bodies.push(await get(port, '127.0.0.1', path));
  expect(pids.filter((pid) => !answered(pid))).toEqual([]);
  return bodies;
}

test('worker_threads and a piscina pool run in workers (the preload does nothing in a thread)', async () => {
  const run = new AppRun(register('compat/threads.js'));
  const { port, pids } = await run.listening(2);
  for (const body of await fromBothWorkers(port, pids, '/thread')) expect(body).toMatch(/^thread ran \d+$/);
  for (const body of await fromBothWorkers(port, pids, '/piscina')) expect(body).toMatch(/^piscina 5 \d+$/);
  expect(run.errors).not.toContain('no app to run');
});

test('child_process.fork keeps its IPC, and a node spawned with an environment of its own runs as plain node', async () => {
  const run = new AppRun(register('compat/fork.js'));
  const { port, pids } = await run.listening(2);
  for (const body of await fromBothWorkers(port, pids, '/fork')) expect(body).toMatch(/^pong from \d+ \d+$/);
  for (const body of await fromBothWorkers(port, pids, '/spawn')) expect(body).toMatch(/^plain node ran \d+$/);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

/** A body `<JSON> <pid>` as the cluster fixtures answer: the JSON. */
const facts = (body: string): unknown => JSON.parse(body.slice(0, body.lastIndexOf(' ')));

test("an app that uses node:cluster runs its worker branch: a prefork worker is node:cluster's worker, as under PM2; its threads and forked children see plain node", async () => {
  const run = new AppRun(register('compat/cluster.js'));
  const { port, pids } = await run.listening(2);
  const served = (await fromBothWorkers(port, pids)).map(facts) as Array<{ id: number; instance: string }>;
  for (const seen of served) {
    expect(seen).toEqual({
      isPrimary: false, isMaster: false, isWorker: true, id: Number(seen.instance) + 1, isProcess: true, isConnected: true, isDead: false, instance: seen.instance,
      received: [{ hello: 'worker' }], // what the process emitted as a message
    });
  }
  expect(new Set(served.map((seen) => seen.id))).toEqual(new Set([1, 2])); // the slot + 1
  expect(run.sideEffectPids().sort()).toEqual([...pids].sort()); // no cluster worker of its own: the app's code ran in the 2 workers alone
  const plainNode = { isPrimary: true, isWorker: false, worker: null };
  for (const body of await fromBothWorkers(port, pids, '/thread')) expect(facts(body)).toEqual(plainNode);
  for (const body of await fromBothWorkers(port, pids, '/fork')) expect(facts(body)).toEqual(plainNode);
  for (const body of await fromBothWorkers(port, pids, '/udp')) expect(facts(body)).toBe('udp ok'); // node:dgram binds as under plain node
  expect(run.errors).not.toMatch(/cluster\.fork/);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test("an ES-module app under --import sees the same in node:cluster's named exports", async () => {
  const run = new AppRun(['--import', 'prefork/register', app('compat/cluster.mjs')]);
  const { port, pids } = await run.listening(2);
  const ids = (await fromBothWorkers(port, pids)).map((body) => {
    const seen = facts(body) as { isPrimary: boolean; isWorker: boolean; id: number };
    expect(seen).toEqual({ isPrimary: false, isWorker: true, id: seen.id });
    return seen.id;
  });
  expect(new Set(ids)).toEqual(new Set([1, 2]));
  expect(run.sideEffectPids().sort()).toEqual([...pids].sort());
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test("cluster.worker.disconnect() stops that worker as a SIGTERM to it would: it drains, and the primary replaces it, not as a crash", async () => {
  const run = new AppRun(register('compat/cluster.js'));
  const { port } = await run.listening(2);
  const pid = Number(/^disconnecting (\d+)$/.exec(await get(port, '127.0.0.1', '/disconnect'))![1]);
  await run.waitForMatches(new RegExp(`worker \\d \\(pid ${pid}\\) exited with code 0 \\(signal\\)`, 'g'), 1, { source: 'errors' });
  await run.waitForMatches(/restarted as pid \d+ after \d+ ms \(signal\)/g, 1, { source: 'errors' });
  await run.waitForMatches(/^LISTENING /gm, 3);
  expect(run.errors).not.toMatch(/\(crash\)/);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('an app that calls cluster.fork() in a worker anyway gets one warning saying what to do instead, and the cluster workers it asked for', async () => {
  const run = new AppRun(register('compat/cluster-fork.js'));
  const { port } = await run.listening(4); // each prefork worker forked 2 cluster workers
  expect(await get(port)).toMatch(/^nested \d+$/);
  const warnings = run.matches(/prefork: worker \d \(pid \d+\): cluster\.fork\(\) (.*)$/gm, 'errors');
  expect(warnings).toHaveLength(2); // one per prefork worker, not one per call
  expect(warnings[0][1]).toBe(
    'starts a cluster of its own inside this prefork worker. prefork already runs one worker per core, and node:cluster tells the app ' +
    'it is a worker (cluster.isPrimary is false): remove the cluster.fork() calls and serve in this process, or run the app without prefork',
  );
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('socket.io over websockets: messages round-trip through both workers', async () => {
  const run = new AppRun(register('compat/socket-io.js'));
  const { port, pids } = await run.listening(2);
  const servedBy = new Set<number>();
  for (let i = 0; i < 40 && servedBy.size < 2; i++) {
    const socket = connect(`http://127.0.0.1:${port}`, { transports: ['websocket'], reconnection: false, forceNew: true });
    try {
      const reply = await socket.timeout(5000).emitWithAck('echo', `hello ${i}`);
      expect(reply.text).toBe(`hello ${i}`);
      servedBy.add(reply.pid);
    } finally {
      socket.disconnect();
    }
  }
  expect([...servedBy].sort()).toEqual([...pids].sort());
});

/**
 * Clients on both workers join one room; a shout from either worker reaches the other worker's client (the primary
 * relays the adapter's broadcast), and a count of the room's sockets asks both workers (the answer is routed back).
 */
async function crossWorkerBroadcasts(port: number, pids: number[]): Promise<void> {
  const clients = new Map<number, ReturnType<typeof connect>>();
  const spares: Array<ReturnType<typeof connect>> = [];
  try {
    for (let i = 0; i < 40 && clients.size < 2; i++) {
      const client = connect(`http://127.0.0.1:${port}`, { transports: ['websocket'], reconnection: false, forceNew: true });
      const pid = (await client.timeout(5000).emitWithAck('join', 'room')) as number;
      if (clients.has(pid)) spares.push(client);
      else clients.set(pid, client);
    }
    expect([...clients.keys()].sort()).toEqual([...pids].sort());
    for (const [from, sender] of clients) {
      const [other] = [...clients].filter(([pid]) => pid !== from).map(([, client]) => client);
      const news = new Promise((resolve) => other.once('news', resolve));
      await sender.timeout(5000).emitWithAck('shout', 'room', `from ${from}`);
      await expect(news).resolves.toEqual({ text: `from ${from}`, from });
      expect(await sender.timeout(5000).emitWithAck('count', 'room')).toBe(2 + spares.length);
    }
  } finally {
    for (const client of [...clients.values(), ...spares]) client.disconnect();
  }
}

test.each(['json', 'advanced'])('socket.io with @socket.io/cluster-adapter, unchanged (%s serialization): a room broadcast from one worker reaches clients of the other (the primary relays as setupPrimary() would)', async (serialization) => {
  const run = new AppRun(register('compat/socket-io-adapter.js'), { PREFORK_SERIALIZATION: serialization });
  const { port, pids } = await run.listening(2);
  await crossWorkerBroadcasts(port, pids);
  expect(run.errors).not.toMatch(/process\.send is not a function|broke the control protocol|not relayed/);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test("socket.io's cluster adapter in API mode: the user's primary calls setupPrimary() and supervise(), as under node:cluster", async () => {
  const run = new AppRun([app('compat/socket-io-primary.js')]);
  const { port, pids } = await run.listening(2);
  await crossWorkerBroadcasts(port, pids);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('pino with a transport thread: every worker\'s lines reach the file', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'prefork-pino-'));
  const logFile = join(scratch, 'app.log');
  try {
    const run = new AppRun(register('compat/pino.js'), { LOG_FILE: logFile });
    const { port, pids } = await run.listening(2);
    await fromBothWorkers(port, pids);
    await run.stop(); // pino flushes its transport at exit
    const logged = readFileSync(logFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { pid: number; msg: string });
    expect(new Set(logged.map((line) => line.pid))).toEqual(new Set(pids));
    expect(logged.every((line) => line.msg === 'served')).toBe(true);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

test("an app that stops itself: server.close() ends that worker cleanly (then replaced); on shutdown the app's own SIGTERM handler (http-terminator) runs", async () => {
  const run = new AppRun(register('compat/self-stop.js'));
  const { port, pids } = await run.listening(2);
  const closedPid = Number(await get(port, '127.0.0.1', '/close'));
  await run.waitForMatches(new RegExp(`^CLOSED ${closedPid}$`, 'gm'), 1);
  await run.waitForMatches(new RegExp(`worker \\d \\(pid ${closedPid}\\) exited with code 0`, 'g'), 1, { source: 'errors' });
  await run.waitForMatches(/^LISTENING /gm, 3); // the slot's replacement
  const stopped = await run.stop();
  expect(stopped).toEqual({ code: 0, signal: null });
  const terminated = run.matches(/^TERMINATED (\d+)$/gm).map((line) => Number(line[1]));
  expect(terminated).toHaveLength(2);
  expect(terminated).not.toContain(closedPid);
  expect(pids).toContain(closedPid);
});

test('two listen(0) servers in a worker get two ports; `exclusive: true` binds in the worker, as under node:cluster', async () => {
  const run = new AppRun(register('compat/listen-variants.js'));
  const lines = await run.waitForMatches(/^PORTS (\d+) (\d+) (\d+) (\d+)$/gm, 2);
  const [a, b] = lines.map((line) => line.slice(1).map(Number));
  // The n-th listen(0) of every worker shares one port; the first and second differ.
  expect([a[0], a[1]]).toEqual([b[0], b[1]]);
  expect(a[0]).not.toBe(a[1]);
  // exclusive: each worker bound a port of its own
  expect(a[2]).not.toBe(b[2]);
  expect(await get(a[2])).toBe(`exclusive ${a[3]}`);
  expect(await get(b[2])).toBe(`exclusive ${b[3]}`);
  const first = await fromBothWorkers(a[0], [a[3], b[3]]);
  expect(first.every((body) => body.startsWith('first '))).toBe(true);
  const second = await fromBothWorkers(a[1], [a[3], b[3]]);
  expect(second.every((body) => body.startsWith('second '))).toBe(true);
});

test("a listen the primary cannot open reaches the app's 'error' listener with code, syscall, address and port", async () => {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const { port } = holder.address() as net.AddressInfo;
  try {
    const run = new AppRun(register('compat/listen-error.js'), { PORT: String(port) });
    const lines = await run.waitForMatches(/^ERROR (\{.*\}) \d+$/gm, 1);
    expect(JSON.parse(lines[0][1])).toEqual({ code: 'EADDRINUSE', syscall: 'bind', address: '127.0.0.1', port });
    expect((await run.exited).code).toBe(1); // the workers exited before ready: the primary gives up
    expect(run.errors).not.toMatch(/Unhandled|uncaught/i);
  } finally {
    holder.close();
  }
});

test("a listen() during the worker's shutdown fails with ERR_PREFORK_NOT_RUNNING, not EBADF", async () => {
  const run = new AppRun(register('compat/listen-at-shutdown.js'));
  const { port, pids } = await run.listening(2);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
  const lines = run.matches(/^LATE-LISTEN (\d+) (.*)$/gm).map((line) => `${line[1]} ${line[2]}`);
  const expected = `ERR_PREFORK_NOT_RUNNING listen listen 127.0.0.1:${port}: this worker is shutting down`;
  expect(lines.sort()).toEqual(pids.map((pid) => `${pid} ${expected}`).sort());
});

test("a library that tests typeof process.send sees in a worker what it sees under node:cluster; process.send('ready') means ready only with wait-ready", async () => {
  const underCluster = new AppRun([app('compat/under-cluster.js'), app('compat/send-shim.js')]);
  const [[, clusterSaw]] = await underCluster.waitForMatches(/^SEND (.*) \d+$/gm, 1);
  expect(clusterSaw).toBe('typeof=function connected=true returned=true callback=null');
  await underCluster.stop();
  const plain = new AppRun(register('compat/send-shim.js'));
  const plainLines = await plain.waitForMatches(/^SEND (.*) \d+$/gm, 2);
  expect(plainLines.map((line) => line[1])).toEqual([clusterSaw, clusterSaw]);
  await plain.listening(2); // without wait-ready, 'ready' is a message like any other (nobody listens: dropped)
  await plain.waitForMatches(/2 workers ready/g, 1, { source: 'errors' });
  expect(plain.errors).not.toMatch(/broke the control protocol/);
  const waiting = new AppRun(register('compat/send-shim.js'), { PREFORK_WAIT_READY: '1', PREFORK_READY_TIMEOUT: '5s' });
  const waitingLines = await waiting.waitForMatches(/^SEND (.*) \d+$/gm, 2);
  expect(waitingLines.map((line) => line[1])).toEqual([clusterSaw, clusterSaw]);
  await waiting.listening(2);
  await waiting.waitForMatches(/2 workers ready/g, 1, { source: 'errors' });
});

test('NODE_DEBUG=prefork traces the primary and the workers; without it nothing extra is printed', async () => {
  const traced = new AppRun(register('plain-http.js'), { NODE_DEBUG: 'prefork' });
  await traced.listening(2);
  await traced.waitForMatches(/2 workers ready/g, 1, { source: 'errors' });
  for (const trace of [/PREFORK \d+: register: primary/, /PREFORK \d+: register: worker/, /worker \d+: listen :0 \(call 0\): asking the primary/, /primary: worker \d \(pid \d+\) asks for a socket on :0/, /answered with 0\.0\.0\.0|answered with ::/, /worker \d+: listening on/, /primary: worker \d \(pid \d+\) is ready/]) {
    expect(traced.errors).toMatch(trace);
  }
  await traced.stop();
  expect(traced.errors).toMatch(/primary: stopping worker/);
  expect(traced.errors).toMatch(/worker: drained; exiting/);

  const quiet = new AppRun(register('plain-http.js'));
  await quiet.listening(2);
  await quiet.waitForMatches(/2 workers ready/g, 1, { source: 'errors' });
  expect(quiet.errors).not.toMatch(/PREFORK \d+:/);
});

describe('on Windows (process.platform faked before prefork loads)', () => {
  const windows = ['-r', fixture('pretend-windows.js')];

  test('node -r prefork/register runs the app as one plain process, with one notice', async () => {
    const run = new AppRun([...windows, ...register('plain-http.js')]);
    const { port, pids } = await run.listening(1);
    expect(pids).toEqual([run.process.pid]);
    expect(await get(port)).toBe(String(run.process.pid));
    expect(run.errors).toBe('prefork: win32 is not supported (prefork needs Linux or macOS); running the app as one process\n');
  });

  test('the prefork command runs the app as one plain process, with one notice', async () => {
    const run = new AppRun([...windows, cli, app('plain-http.js')]);
    const { port, pids } = await run.listening(1);
    expect(await get(port)).toBe(String(pids[0]));
    expect(run.errors).toContain('prefork: win32 is not supported');
  });

  test('the API loads (isWorker() works) and supervise() throws ERR_PREFORK_UNSUPPORTED_PLATFORM naming node:cluster', async () => {
    const run = new AppRun([...windows, '-e', `
      const prefork = require(${JSON.stringify(join(__dirname, '..', 'lib'))});
      let outcome;
      try { prefork.supervise({ workers: 1 }); outcome = 'started'; } catch (error) { outcome = error.code + ': ' + error.message; }
      console.log(JSON.stringify({ isWorker: prefork.isWorker(), outcome }));
    `]);
    expect((await run.exited).code).toBe(0);
    expect(JSON.parse(run.output)).toEqual({
      isWorker: false,
      outcome: 'ERR_PREFORK_UNSUPPORTED_PLATFORM: prefork does not run on win32: it needs fork/exec and SO_REUSEPORT (Linux or macOS). Use node:cluster there.',
    });
  });
});

test("package.json installs everywhere npm runs: no `os` list, and the install step builds nothing on Windows", async () => {
  const manifest = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { os?: string[]; scripts: Record<string, string> };
  expect(manifest.os).toBeUndefined();
  expect(manifest.scripts.install).toBe('node install.js');
  const run = new AppRun(['-r', fixture('pretend-windows.js'), join(__dirname, '..', 'install.js')]);
  expect(await run.exited).toEqual({ code: 0, signal: null });
  expect(run.output).toContain('prefork: nothing to build on Windows');
});
