// The primary and the native core under attack and under faults: what a worker may ask for, the sealed store,
// dropped privileges, failed spawns, the supervisor's races, a fuzzing worker, and the native guards.
import child_process from 'node:child_process';
import { closeSync, ftruncateSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker as Thread } from 'node:worker_threads';
import { createListenSocket, spawn, supervise, Supervisor, type SupervisorOptions } from '../src';
import { native } from '../src/core/binding';
import { regionBytes } from '../src/store/counter-table';
import { createRegion } from '../src/store/counter-store';
import { app, AppRun, stopAllApps } from './apps';
import { childrenOf, fixture, get, isDead, processState, waitFor } from './helpers';
import { Primary, stopAllPrimaries } from './primary';
import { TestSupervisors } from './supervisors';
import { testAsRoot, testWithTool } from './tools';

const supervisors = new TestSupervisors();
const { scratch } = supervisors;
const start = (options: SupervisorOptions = {}, behaviour = ''): Supervisor => supervisors.start(options, behaviour);

afterEach(async () => {
  await stopAllApps();
  await stopAllPrimaries();
  await supervisors.stopAll();
});

afterAll(() => supervisors.remove());

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const liveChildren = () => childrenOf().filter((child) => child.state !== 'Z').map((child) => child.pid).sort();
const workerPids = (supervisor: Supervisor) => supervisor.workers.map((worker) => worker.pid).sort();

describe('what a worker may ask the primary for', () => {
  testAsRoot('workers running as nobody cannot make the root primary open an address nobody configured (port 523)', async () => {
    const run = new AppRun(['-r', 'prefork/register', app('compat/listen-error.js')], { PORT: '523', PREFORK_USER: 'nobody' });
    const [line] = await run.waitForMatches(/^ERROR (\{.*\}) \d+$/gm, 1);
    expect(JSON.parse(line[1])).toEqual({ code: 'ERR_PREFORK_ADDRESS_NOT_ALLOWED', syscall: 'listen', address: '127.0.0.1', port: 523 });
    expect(run.errors).not.toMatch(/Unhandled|uncaught/i);
  });

  testAsRoot('with PREFORK_LISTEN the configured address serves workers running as nobody', async () => {
    const probe = await createListenSocket({ host: '127.0.0.1', port: 0 });
    closeSync(probe.fd);
    const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')], {
      PORT: String(probe.port), PREFORK_USER: 'nobody', PREFORK_LISTEN: `127.0.0.1:${probe.port}`,
    });
    const { port, pids } = await run.listening(2);
    expect(port).toBe(probe.port);
    expect(pids).toContain(Number(await get(port)));
  });

  test("the primary never joins another process's SO_REUSEPORT group: EADDRINUSE, and that process keeps every connection", async () => {
    const other = await createListenSocket({ host: '127.0.0.1', port: 0 }); // SO_REUSEPORT, listening, same uid
    const server = require('node:http').createServer((_request: unknown, response: import('node:http').ServerResponse) => response.end('other service'));
    await new Promise<void>((resolve) => server.listen({ fd: other.fd }, resolve));
    try {
      const run = new AppRun(['-r', 'prefork/register', app('compat/listen-error.js')], { PORT: String(other.port) });
      const [line] = await run.waitForMatches(/^ERROR (\{.*\}) \d+$/gm, 1);
      expect(JSON.parse(line[1])).toMatchObject({ code: 'EADDRINUSE', port: other.port });
      for (let i = 0; i < 12; i++) expect(await get(other.port)).toBe('other service');
    } finally {
      server.close();
    }
  });

  test('maxRequestedAddresses caps what workers may have the primary open (one fd per slot each)', async () => {
    const run = new AppRun(['-r', 'prefork/register', app('compat/many-listens.js')], { LISTENS: '5', PREFORK_MAX_REQUESTED_ADDRESSES: '3', PREFORK_WORKERS: '1' });
    const [line] = await run.waitForMatches(/^LISTENS (.*)$/gm, 1);
    expect(line[1].split(' ')).toEqual(['ok', 'ok', 'ok', 'ERR_PREFORK_ADDRESS_NOT_ALLOWED', 'ERR_PREFORK_ADDRESS_NOT_ALLOWED']);
  });

  test('a second prefork on the same port is an error, not a silent 50/50 split', async () => {
    const first = start({ workers: 1 });
    await first.ready();
    const port = first.addresses[0].port;
    const second = start({ workers: 1, listen: port });
    await expect(second.ready()).rejects.toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
  });
});

describe('the shared store region', () => {
  test('is sealed: nobody can shrink or grow it (a shrink would SIGBUS every process mapping it)', () => {
    const { fd } = createRegion(16);
    try {
      expect(() => ftruncateSync(fd, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      expect(() => ftruncateSync(fd, regionBytes(16) * 2)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    } finally {
      closeSync(fd);
    }
  });

  test('is mapped only at the size it has (fstat), whatever a worker is told', () => {
    const { fd } = createRegion(16);
    try {
      expect(() => native.mapSharedRegion(fd, regionBytes(32))).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'mmap' }));
    } finally {
      closeSync(fd);
    }
  });
});

describe('dropped privileges', () => {
  let runs = 0;
  /** `id` as the child sees itself: "uid gid groups…". */
  const ids = (options: object) =>
    new Promise<string>((resolve) => {
      const out = join(scratch, `ids-${runs++}`);
      const child = spawn({ file: 'sh', args: ['sh', '-c', 'echo "$(id -u) $(id -g) $(id -G)" > "$OUT"'], env: { ...process.env, OUT: out }, ...options });
      child.once('exit', () => resolve(readFileSync(out, 'utf8').trim()));
    });

  testAsRoot("spawn({ uid }) without gid takes the user's primary group and groups (initgroups), never root's", async () => {
    const expected = child_process.execFileSync('sh', ['-c', 'echo "$(id -u nobody) $(id -g nobody) $(id -G nobody)"'], { encoding: 'utf8' }).trim();
    expect(await ids({ uid: Number(expected.split(' ')[0]) })).toBe(expected);
  });

  test('a uid with no user entry needs gid: an error naming it, no process', () => {
    const before = childrenOf().length;
    expect(() => spawn({ file: 'true', args: ['true'], uid: 54321 })).toThrow('The "gid" option is required: uid 54321 has no entry in the user database');
    expect(childrenOf().length).toBe(before);
  });

  testAsRoot('a uid with no user entry and a gid runs with that group only', async () => {
    expect(await ids({ uid: 54321, gid: 54321 })).toBe('54321 54321 54321');
  });
});

describe('faults', () => {
  test('a failed spawn (EMFILE) counts as a crash of its slot: backoff, the other worker keeps serving, then the slot is refilled', async () => {
    const primary = new Primary({ restart: { delay: 300, maxRestarts: 50 } });
    const ready = await primary.waitFor((event) => event.event === 'all-ready');
    const port = (ready.addresses as Array<{ port: number }>)[0].port;
    const [victim, survivor] = ready.workers as Array<{ pid: number }>;
    const open = readdirSync(`/proc/${primary.process.pid}/fd`).length;
    const [soft, hard] = /Max open files\s+(\d+)\s+(\d+)/.exec(readFileSync(`/proc/${primary.process.pid}/limits`, 'utf8'))!.slice(1);
    child_process.execFileSync('prlimit', ['--pid', String(primary.process.pid), `--nofile=${open - 2}:${hard}`]);
    process.kill(victim.pid, 'SIGKILL');
    const failure = await primary.waitFor((event) => event.event === 'spawnfailed');
    expect(failure).toMatchObject({ slot: 0, code: 'EMFILE' });
    expect(Number(await get(port))).toBe(survivor.pid);
    child_process.execFileSync('prlimit', ['--pid', String(primary.process.pid), `--nofile=${soft}:${hard}`]);
    await primary.waitFor((event) => event.event === 'restart', { timeout: 10000 });
    expect(primary.events.some((event) => event.event === 'giveup' || event.event === 'shutdown')).toBe(false);
  });

  test('a reload whose new worker exits after the old one was killed starts one replacement, not two', async () => {
    const supervisor = start({ workers: 1 }, 'exit-if-generation:2');
    await supervisor.ready();
    const [old] = supervisor.workers;
    const reload = supervisor.reload();
    await new Promise((resolve) => supervisor.once('fork', resolve));
    process.kill(old.pid, 'SIGKILL');
    await expect(reload).rejects.toMatchObject({ code: 'ERR_PREFORK_RELOAD_FAILED' });
    await waitFor(() => supervisor.workers[0]?.state === 'ready', 5000, 'the slot refilled');
    await settle(500);
    expect(liveChildren()).toEqual(workerPids(supervisor));
    expect(liveChildren()).toHaveLength(1);
  });

  test('SIGTTIN twice during a reload: each step counts from the workers then, 2 -> 3 -> 4', async () => {
    const primary = new Primary({}, { behaviour: '' });
    await primary.waitFor((event) => event.event === 'all-ready');
    process.kill(primary.process.pid!, 'SIGHUP');
    await primary.waitFor((event) => event.event === 'fork' && event.generation === 2);
    process.kill(primary.process.pid!, 'SIGTTIN');
    await settle(50); // two pending SIGTTINs would be delivered as one
    process.kill(primary.process.pid!, 'SIGTTIN');
    const second = await primary.waitFor((event) => event.event === 'scale' && event.to === 4, { timeout: 15000 });
    expect(primary.events.filter((event) => event.event === 'scale').map((event) => [event.from, event.to])).toEqual([[2, 3], [3, 4]]);
    expect(second.workers).toHaveLength(4);
  });

  test("shutdown({ timeout }) shortens the drain deadline a reload already gave an old worker", async () => {
    // Workers whose event loop wedges 200 ms after ready: they cannot drain or exit by themselves.
    const supervisor = start({ workers: 1, shutdownTimeout: 30000 }, 'wedge-after-ready');
    await supervisor.ready();
    await settle(400); // wedged now
    await supervisor.reload(); // the old worker now has up to 30 s before its SIGKILL
    const began = Date.now();
    await supervisor.shutdown({ timeout: 200 });
    expect(Date.now() - began).toBeLessThan(5000);
    expect(liveChildren()).toEqual([]);
  });

  test('a shutdown during a reload rejects the reload with ERR_PREFORK_SHUT_DOWN (not "the old workers keep serving")', async () => {
    const supervisor = start({ workers: 1, waitReady: true, readyTimeout: 0 }, 'ready-late');
    await supervisor.ready();
    supervisors.behave(supervisor, 'never-ready');
    const reload = supervisor.reload();
    await new Promise((resolve) => supervisor.once('fork', resolve));
    void supervisor.shutdown({ timeout: 500 });
    await expect(reload).rejects.toMatchObject({ code: 'ERR_PREFORK_SHUT_DOWN', message: 'Reload stopped at worker slot 0: the supervisor is shutting down' });
  });

  test('with readyTimeout 0, a reload whose worker never gets ready does not block a later scale', async () => {
    const supervisor = start({ workers: 1, waitReady: true, readyTimeout: 0 }, 'ready-late');
    await supervisor.ready();
    const old = supervisor.workers[0].pid;
    supervisors.behave(supervisor, 'never-ready');
    const reload = supervisor.reload();
    await new Promise((resolve) => supervisor.once('fork', resolve));
    supervisors.behave(supervisor, 'ready-late');
    const scaled = supervisor.scale(2);
    await expect(reload).rejects.toMatchObject({ code: 'ERR_PREFORK_RELOAD_FAILED', message: expect.stringContaining('superseded') });
    await scaled;
    expect(supervisor.workers).toHaveLength(2);
    expect(supervisor.workers[0].pid).toBe(old);
  });

  test('a worker that sends garbage, oversized, unknown or lying frames is killed and replaced; the primary keeps serving', async () => {
    const supervisor = start({ script: fixture('fuzz-worker.js'), workers: 2, restart: { maxRestarts: 1000, delay: 1 } });
    await supervisor.ready();
    const port = supervisor.addresses[0].port;
    const steady = supervisor.workers.find((worker) => worker.id === 0)!.pid;
    let kills = 0;
    supervisor.on('exit', (worker, _code, signal) => {
      if (worker.id === 1 && signal === 'SIGKILL') kills += 1;
    });
    await waitFor(() => kills >= 12 || undefined, 20000, '12 fuzzing workers killed');
    expect(supervisor.workers.find((worker) => worker.id === 0)!.pid).toBe(steady);
    expect(await get(port)).toMatch(/^\d+$/);
  });

  // The attacker is a python3 helper: Node cannot send fds it did not get from a handle.
  testWithTool('python3', "a worker flooding the primary with fds its frames do not announce is killed and replaced: the primary's fd table stays small", async () => {
    // Slot 1 runs hostile code: 100 'ready' frames each carrying 64 copies of fd 0; the first attacker announces one fd per frame, the second none.
    // A GET /flood that reaches slot 1 sets its worker off.
    const primary = new Primary({ restart: { delay: 100, maxRestarts: 100 } }, { behaviour: 'fd-flood:100' });
    const { port, workers } = await primary.allReady();
    const pid = primary.process.pid!;
    const openAtStart = readdirSync(`/proc/${pid}/fd`).length;
    let mostOpen = openAtStart;
    const sampler = setInterval(() => {
      try {
        mostOpen = Math.max(mostOpen, readdirSync(`/proc/${pid}/fd`).length);
      } catch {
        // the primary exited: the test's own checks say so
      }
    }, 5);
    // Slot 1 sets its worker off; slot 0 answers with its pid. Bounded: a slot 1 that never answers fails here.
    const untilFlooding = async () => {
      for (let tries = 0; (await get(port, '127.0.0.1', '/flood')) !== 'flooding'; tries++) {
        if (tries >= 200) throw new Error(`no request reached slot 1 in 200 tries; stderr: ${primary.stderr}`);
      }
    };
    const floods = () => primary.stderr.match(/^FLOOD sent \d+ fds$/gm) ?? [];
    try {
      await untilFlooding();
      await waitFor(() => floods().length >= 1 || undefined, 10000, 'the first attacker to be done');
      await settle(200);
      expect(mostOpen).toBeLessThan(openAtStart + 20);
      await primary.waitFor((event) => event.event === 'ready' && event.id === 1 && event.generation === 2, { timeout: 15000 });
      await untilFlooding();
      await waitFor(() => floods().length >= 2 || undefined, 10000, 'the second attacker to be done');
      await primary.waitFor((event) => event.event === 'ready' && event.id === 1 && event.generation === 3, { timeout: 15000 });
    } finally {
      clearInterval(sampler);
    }
    expect(mostOpen).toBeLessThan(openAtStart + 20);
    const killed = primary.events.filter((event) => event.event === 'exit' && event.id === 1);
    expect(killed.slice(0, 2)).toEqual([expect.objectContaining({ generation: 1, signal: 'SIGKILL' }), expect.objectContaining({ generation: 2, signal: 'SIGKILL' })]);
    expect(primary.stderr.match(/^prefork: worker 1 \(pid \d+\) broke the control protocol \(.*fds.*\); killing it$/gm)).toHaveLength(2);
    // Slot 0 was never replaced and serves its share.
    expect(primary.events.some((event) => event.event === 'exit' && event.id === 0)).toBe(false);
    const answeredBy = await Promise.all(Array.from({ length: 16 }, () => get(port)));
    expect(answeredBy).toContain(String(workers.find((worker) => worker.id === 0)!.pid));
  });

  test.each([
    ['with a message that carries none', 'ready', "an fd with a 'ready' message"],
    ['as a handover of something that is not a socket', 'file', 'a handover of an fd that is not a socket'],
    ['as a handover of its listen socket', 'listener', 'a handover of an fd that is not a connection on'],
  ])('a worker that sends the primary an fd %s is killed and replaced; the primary keeps no fd of it', async (_case, send, problem) => {
    const primary = new Primary({ restart: { delay: 100, maxRestarts: 100 } }, { behaviour: 'hostile-fd' });
    const { port } = await primary.allReady();
    const pid = primary.process.pid!;
    const openAtStart = readdirSync(`/proc/${pid}/fd`).length;
    for (let tries = 0; (await get(port, '127.0.0.1', `/hostile?send=${send}`)) !== 'sent'; tries++) {
      if (tries >= 200) throw new Error(`no request reached slot 1 in 200 tries; stderr: ${primary.stderr}`);
    }
    await primary.waitFor((event) => event.event === 'ready' && event.id === 1 && event.generation === 2, { timeout: 15000 });
    expect(primary.events.find((event) => event.event === 'exit' && event.id === 1)).toEqual(expect.objectContaining({ generation: 1, signal: 'SIGKILL' }));
    expect(primary.stderr).toMatch(new RegExp(`^prefork: worker 1 \\(pid \\d+\\) broke the control protocol \\(${problem.replace(/[()]/g, '\\$&')}.*\\); killing it$`, 'm'));
    expect(readdirSync(`/proc/${pid}/fd`).length).toBe(openAtStart);
  });

  test("a worker that says it is stopping on a signal but serves on is SIGKILLed after shutdownTimeout and replaced", async () => {
    const supervisor = start({ workers: 1, shutdownTimeout: 300 }, 'claim-stopping');
    const exited = new Promise<[string | null, string | null]>((resolve) => supervisor.once('exit', (worker, _code, signal) => resolve([signal, worker.exitReason])));
    await supervisor.ready();
    supervisors.behave(supervisor, ''); // its replacement behaves
    const liar = supervisor.workers[0].pid;
    expect(await exited).toEqual(['SIGKILL', 'signal']);
    await waitFor(() => supervisor.workers[0]?.state === 'ready' || undefined, 5000, 'the replacement to be ready');
    expect(supervisor.workers[0].pid).not.toBe(liar);
    expect(await get(supervisor.addresses[0].port)).toBe(String(supervisor.workers[0].pid));
  });
});

describe('native guards', () => {
  test('the waitpid thread (no pidfd) does not reap: the pid stays a zombie until the main thread takes the exit', async () => {
    const [pid, pidfd] = native.spawn({
      file: '/bin/sh', args: ['sh', '-c', 'exit 4'], env: [], cwd: undefined, fds: [], uid: -1, gid: -1, groups: null, cpus: [], processGroup: false, deathSignal: 9,
    });
    if (pidfd >= 0) closeSync(pidfd);
    const exited = new Promise((resolve) => native.waitInThread(pid, (code, signal) => resolve({ code, signal })));
    // Busy, so the main thread cannot run the callback: the thread alone must not reap.
    const until = Date.now() + 1500;
    let seen: string | undefined;
    while (Date.now() < until && seen !== 'Z') seen = processState(pid);
    const hold = Date.now() + 300;
    while (Date.now() < hold) seen = processState(pid) ?? 'gone';
    expect(seen).toBe('Z');
    expect(await exited).toEqual({ code: 4, signal: 0 });
    expect(processState(pid)).toBeUndefined();
  });

  test('without close_range (Linux < 5.11) every open fd is still kept from the child, up to the highest the limit allows', () => {
    const out = join(scratch, 'child-fds');
    const script = `require(${JSON.stringify(join(__dirname, '..', 'lib'))}).spawn({ file: 'sh', args: ['sh', '-c', 'ls /proc/self/fd > ' + process.env.OUT] }).exited.then(() => process.exit(0));`;
    // The old fallback stopped at fd 65536 while Node raises RLIMIT_NOFILE to the hard limit; here the fd
    // is the highest the hard limit allows (above 65536 where the machine permits).
    const highest = Number(child_process.execFileSync('python3', ['-c', [
      'import os, resource, sys',
      'hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]',
      'resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))',
      'high = min(hard, 1 << 20) - 1',
      'os.dup2(os.open("/dev/null", os.O_RDONLY), high, inheritable=True)',
      'print(high, flush=True)',
      'os.execve(sys.argv[1], [sys.argv[1], "-e", sys.argv[2]], dict(os.environ, PREFORK_TEST_NO_CLOSE_RANGE="1", OUT=sys.argv[3]))',
    ].join('\n'), process.execPath, script, out], { timeout: 10000, encoding: 'utf8' }).trim());
    expect(highest).toBeGreaterThan(1000);
    const fds = readFileSync(out, 'utf8').trim().split('\n').map(Number);
    expect(fds).not.toContain(highest);
    expect(fds.every((fd) => fd <= 3)).toBe(true); // 0-2, and the fd of ls's own listing
  });

  test('the core refuses to spawn from a worker thread, whatever the TypeScript layer does', async () => {
    const thread = new Thread(`
      const { parentPort } = require('node:worker_threads');
      const native = require('node-gyp-build')(${JSON.stringify(join(__dirname, '..'))});
      try {
        native.spawn({ file: '/bin/true', args: ['true'], env: [], cwd: undefined, fds: [], uid: -1, gid: -1, groups: null, cpus: [], processGroup: false, deathSignal: 0 });
        parentPort.postMessage('spawned');
      } catch (error) { parentPort.postMessage(error.code + ' ' + error.syscall); }
    `, { eval: true });
    const answer = await new Promise((resolve) => thread.once('message', resolve));
    await thread.terminate();
    expect(answer).toBe('EPERM spawn (not on the main thread)');
  });

  test("the orphan watchdog watches its own copy of the channel: JavaScript closing fd 3 does not kill a worker whose primary lives", async () => {
    const supervisor = start({ workers: 1 }, 'close-fd-3');
    await supervisor.ready();
    const { pid } = supervisor.workers[0];
    await settle(1800);
    expect(isDead(pid)).toBe(false);
  });
});

describe('library defaults', () => {
  test('supervise() leaves the process its signals and its exit (as node:cluster does); listen() and zero-code mode take them', async () => {
    const before = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU'].map((signal) => process.listenerCount(signal));
    const supervisor = supervise({ script: fixture('app.js'), args: [], execArgv: [], workers: 1, listen: 0, env: { TEST_OPTIONS: '{"listen":0}' } });
    await supervisor.ready();
    expect(supervisor.config.signals).toBe(false);
    expect(supervisor.config.exitProcess).toBe(false);
    expect(['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU'].map((signal) => process.listenerCount(signal))).toEqual(before);
    await supervisor.shutdown();
  });
});
