// Hot upgrade of the primary (SIGUSR2): a new primary process takes over every socket and the counter store
// from the old one, under load, or is stopped while the old one keeps serving. Real processes, real clients.
// The new primary shares the old one's stdout and stderr, so its events and lines reach the same Primary.
import child_process from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { homeSlot } from '../src/core/reuseport-program';
import { childrenOf, fixture, get, isDead, waitFor } from './helpers';
import { load, Primary, stopAllPrimaries, type AppEvent } from './primary';
import { describeWithTool, IS_ROOT, wrk } from './tools';

const scratch = mkdtempSync(join(tmpdir(), 'prefork-upgrade-'));
afterEach(() => stopAllPrimaries()); // stops a new primary an upgrade left too
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The test fixture as its own primary, its workers reading `behaviourFile` when they start (empty for now). */
function startPrimary(options: object, behaviourFile: string): Primary {
  writeFileSync(behaviourFile, '');
  return new Primary(options, { env: { TEST_BEHAVIOUR_FILE: behaviourFile } });
}

const upgradeEvent = (primary: Primary, outcome: string): Promise<AppEvent> =>
  primary.waitFor((event) => event.event === 'upgrade' && event.outcome === outcome, { timeout: 20000 });

const pids = (workers: AppEvent[]): number[] => workers.map((worker) => worker.pid as number);
const outcomes = (primary: Primary): string[] => primary.events.filter((event) => event.event === 'upgrade').map((event) => event.outcome as string).sort();

describe.each([false, true])('SIGUSR2 (keep-alive clients: %s)', (keepAlive) => {
  it('hands every socket and the counter store to a new primary under load: no failed request, the pid file moves', async () => {
    const pidFile = join(scratch, `pid-${keepAlive}`);
    const primary = startPrimary({ balance: 'client-ip', pidFile }, join(scratch, `behaviour-${keepAlive}`));
    const { port, workers } = await primary.allReady();
    for (let i = 0; i < 5; i++) await get(port, '127.0.0.1', '/count');
    expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(primary.process.pid));

    const traffic = load(port, { keepAlive });
    await sleep(300);
    const readyBefore = primary.events.length;
    primary.signal('SIGUSR2');
    const upgraded = await upgradeEvent(primary, 'upgraded');
    await upgradeEvent(primary, 'took-over');
    expect(await primary.exited).toEqual({ code: 0, signal: null });
    const after = await primary.waitForEvent('all-ready', { after: readyBefore });
    const newWorkers = after.workers as AppEvent[];
    await sleep(300);
    const result = await traffic.stop();

    expect(result.errors).toEqual([]);
    expect(outcomes(primary)).toEqual(['took-over', 'upgraded']);
    expect(pids(newWorkers).some((pid) => (result.byPid.get(String(pid)) ?? 0) > 0)).toBe(true); // the new workers served the load
    expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(upgraded.pid));
    expect(await get(port, '127.0.0.1', '/count')).toBe('6'); // the counts survived
    // The handed-over groups kept their order: every client address still reaches its home slot.
    const bySlot = new Map(newWorkers.map((worker) => [worker.id, worker.pid]));
    for (let n = 1; n <= 20; n++) {
      expect(Number(await get(port, '127.0.0.1', '/', `127.0.0.${n}`))).toBe(bySlot.get(homeSlot(`127.0.0.${n}`, 2)));
    }
    expect(pids(workers).every(isDead)).toBe(true);
  });
});

it("the new primary's workers do not inherit PREFORK_HANDOVER (a child of theirs running prefork would take fd 3 for the old primary)", async () => {
  const primary = startPrimary({}, join(scratch, 'behaviour-environ'));
  await primary.allReady();
  const readyBefore = primary.events.length;
  primary.signal('SIGUSR2');
  await upgradeEvent(primary, 'took-over');
  const after = await primary.waitForEvent('all-ready', { after: readyBefore });
  const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  const newWorkers = pids(after.workers as AppEvent[]);
  expect(newWorkers).toHaveLength(2);
  for (const pid of newWorkers) {
    const names = environ(pid).map((entry) => entry.slice(0, entry.indexOf('=')));
    expect(names).toContain('PREFORK_WORKER_ID'); // it is one of prefork's workers, as started
    expect(names).not.toContain('PREFORK_HANDOVER');
  }
});

describe.each([
  ['its workers crash', 'exit-before-listen', {}, /exited \(code 1\) before it was ready/],
  ['it is not ready within readyTimeout', 'never-ready', { waitReady: true }, /was not ready within readyTimeout \(2000 ms\)/],
] as const)('an upgrade whose new primary fails (%s)', (_, newBehaviour, options, reason) => {
  it('stops the new primary; the old one keeps serving every request, and refuses a second upgrade meanwhile', async () => {
    const behaviour = join(scratch, `behaviour-${newBehaviour}`);
    const pidFile = join(scratch, `pid-${newBehaviour}`);
    const primary = startPrimary({ readyTimeout: 2000, pidFile, ...options }, behaviour);
    if ('waitReady' in options) writeFileSync(behaviour, 'ready-late');
    const { port, workers } = await primary.allReady();
    writeFileSync(behaviour, newBehaviour); // how the new primary's workers will behave

    const traffic = load(port, { keepAlive: false });
    primary.signal('SIGUSR2');
    // The second one while the first is running, so it is refused: as soon as the new primary is a process. A
    // fixed delay was too long once on a fast Node, when the new primary had already failed and a second
    // upgrade ran.
    const oldWorkers = new Set(pids(workers));
    await waitFor(() => childrenOf(primary.process.pid).some((child) => !oldWorkers.has(child.pid)), 5000, 'the new primary');
    primary.signal('SIGUSR2');
    const rolledBack = await upgradeEvent(primary, 'rolled-back');
    await sleep(200);
    const result = await traffic.stop();

    expect(outcomes(primary)).toEqual(['rolled-back']);
    expect(rolledBack.error).toMatch(reason);
    expect(rolledBack.error).toMatch(/the old one \(pid \d+\) keeps serving/);
    expect(primary.stderr).toMatch(/prefork: Upgrade failed: the new primary/);
    expect(primary.stderr).toMatch(/Cannot upgrade: an upgrade is already running/);
    expect(isDead(rolledBack.pid as number)).toBe(true);
    expect(result.errors).toEqual([]);
    // Its workers took connections from the shared sockets while they ran (as a reload's new worker does); now
    // only the old ones serve.
    const answers = await Promise.all(Array.from({ length: 10 }, () => get(port)));
    expect(answers.every((pid) => pids(workers).includes(Number(pid)))).toBe(true);
    expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(primary.process.pid));
    expect(primary.process.exitCode).toBeNull();
  });
});

describeWithTool('wrk', 'SIGUSR2 under wrk -c50', () => {
  it.each([
    ['Connection: close', ['Connection: close']],
    ['keep-alive', []],
  ])('fails no request across an upgrade (%s)', async (_, headers) => {
    const primary = startPrimary({}, join(scratch, `behaviour-wrk-${headers.length}`));
    const { port } = await primary.allReady();
    const running = wrk(port, 6, headers);
    await sleep(2000);
    primary.signal('SIGUSR2');
    await upgradeEvent(primary, 'upgraded');
    await upgradeEvent(primary, 'took-over');
    const { requests, socketErrors, non2xx } = await running;
    expect({ socketErrors, non2xx }).toEqual({ socketErrors: 0, non2xx: 0 });
    expect(requests).toBeGreaterThan(1000);
    expect(outcomes(primary)).toEqual(['took-over', 'upgraded']);
  });
});

it('readyTimeout 0: an upgrade to a build whose workers are never ready does not wedge the queue; a scale rolls it back and completes', async () => {
  const behaviour = join(scratch, 'behaviour-never-ready-unbounded');
  const primary = startPrimary({ readyTimeout: 0, waitReady: true }, behaviour);
  writeFileSync(behaviour, 'ready-late');
  const { workers } = await primary.allReady();
  writeFileSync(behaviour, 'never-ready');
  primary.signal('SIGUSR2');
  const oldWorkers = new Set(pids(workers));
  const successor = await waitFor(() => childrenOf(primary.process.pid).find((child) => !oldWorkers.has(child.pid)), 5000, 'the new primary');
  await waitFor(() => childrenOf(successor.pid).length === 2 || undefined, 5000, "the new primary's workers");
  primary.signal('SIGTTOU');
  const rolledBack = await upgradeEvent(primary, 'rolled-back');
  expect(rolledBack.error).toMatch(/superseded by a later reload or scale/);
  const scaled = await primary.waitForEvent('scale', { timeout: 20000 });
  expect(scaled).toMatchObject({ from: 2, to: 1 });
  await waitFor(() => isDead(successor.pid) || undefined, 5000, 'the new primary to be stopped');
  expect(outcomes(primary)).toEqual(['rolled-back']);
});

it("after a SIGKILL rollback, the steering waits for the new primary's orphaned workers before it changes a group: every client address still reaches its home slot", async () => {
  const behaviour = join(scratch, 'behaviour-stuck-primary');
  const primary = startPrimary({ balance: 'client-ip', waitReady: true, readyTimeout: 1500, shutdownTimeout: 500 }, behaviour);
  writeFileSync(behaviour, 'ready-late');
  const { port, workers } = await primary.allReady();
  const oldWorkers = new Set(pids(workers));
  writeFileSync(behaviour, 'stuck-primary'); // it and its workers get stuck: the rollback SIGKILLs it, their watchdogs kill them
  const eventsBefore = primary.events.length;
  primary.signal('SIGUSR2');
  const successor = await waitFor(() => childrenOf(primary.process.pid).find((child) => !oldWorkers.has(child.pid)), 5000, 'the new primary');
  // Its workers have read their behaviour once they listen; old slot 0's replacements must become ready.
  await waitFor(() => primary.events.slice(eventsBefore).filter((event) => event.event === 'listening').length >= 2 || undefined, 5000, "the new primary's workers");
  writeFileSync(behaviour, 'ready-late');
  // Two crashes in a row of old slot 0: the second restart waits 100 ms out of the group (its socket's leave waits
  // for the new primary, and its rejoin too).
  process.kill(workers[0].pid as number, 'SIGKILL');
  const ours = (pid: number) => childrenOf(primary.process.pid).some((child) => child.pid === pid);
  const replacement = await waitFor(() => childrenOf(primary.process.pid).find((child) => !oldWorkers.has(child.pid) && child.pid !== successor.pid), 5000, 'the replacement');
  process.kill(replacement.pid, 'SIGKILL');
  const rolledBack = await upgradeEvent(primary, 'rolled-back');
  expect(rolledBack.error).toMatch(/was not ready within readyTimeout/);
  const restart = await primary.waitFor((event) => event.event === 'restart' && (event.old as AppEvent).pid === replacement.pid, { after: eventsBefore, timeout: 10000 });
  const restarted = (restart.next as AppEvent).pid as number;
  expect(ours(restarted)).toBe(true);
  await primary.waitFor((event) => event.event === 'ready' && event.pid === restarted, { after: eventsBefore, timeout: 10000 });
  await sleep(2500); // every orphan gone (the watchdog kills them within 950 ms of their primary's death)
  const bySlot = new Map([[0, restarted], [1, workers[1].pid]]);
  for (let n = 1; n <= 20; n++) {
    expect(Number(await get(port, '127.0.0.1', '/', `127.0.0.${n}`))).toBe(bySlot.get(homeSlot(`127.0.0.${n}`, 2)));
  }
});

const canUnshare = IS_ROOT && child_process.spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;
(canUnshare ? it : it.skip)('as PID 1 (unshare --pid, a container without --init): two upgrades in a row refuse no connection, and SIGTERM to PID 1 then stops everything', async () => {
  const behaviour = join(scratch, 'behaviour-pid1');
  writeFileSync(behaviour, '');
  const namespace = child_process.spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child=SIGKILL', process.execPath, fixture('app.js')], {
    env: { ...process.env, TEST_OPTIONS: JSON.stringify({ reapOrphans: true }), TEST_BEHAVIOUR_FILE: behaviour }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: AppEvent[] = [];
  let stdout = '';
  let stderr = '';
  namespace.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (stdout + chunk).split('\n');
    stdout = lines.pop() ?? '';
    for (const line of lines) if (line.startsWith('EVENT ')) events.push(JSON.parse(line.slice(6)));
  });
  namespace.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => namespace.once('exit', (code, signal) => resolve({ code, signal })));
  const named = (name: string) => events.filter((event) => event.event === name);
  const descendants = (pid: number): number[] => childrenOf(pid).flatMap((child) => [child.pid, ...descendants(child.pid)]);
  try {
    await waitFor(() => named('all-ready').length === 1 || namespace.exitCode !== null || undefined, 15000, 'the first workers');
    const port = (named('all-ready')[0].addresses as Array<{ port: number }>)[0].port;
    const pid1 = childrenOf(namespace.pid!)[0].pid; // PID 1 inside, seen from here
    expect(readFileSync(`/proc/${pid1}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);

    const traffic = load(port, { keepAlive: false });
    for (const round of [1, 2]) {
      await sleep(300);
      process.kill(pid1, 'SIGUSR2'); // the second one is forwarded to the primary that serves now
      await waitFor(() => named('all-ready').length === round + 1 || namespace.exitCode !== null || undefined, 20000, `upgrade ${round}`);
      await waitFor(() => named('upgrade').filter((event) => event.outcome === 'took-over').length === round || namespace.exitCode !== null || undefined, 20000, `take-over ${round}`);
    }
    await sleep(300);
    const result = await traffic.stop();
    expect(namespace.exitCode).toBeNull();
    expect(result.errors).toEqual([]);
    expect(named('upgrade').map((event) => event.outcome).sort()).toEqual(['took-over', 'took-over', 'upgraded', 'upgraded']);
    const serving = pids(named('all-ready')[2].workers as AppEvent[]).map(String);
    expect(serving).toContain(await get(port)); // the third primary's workers serve (namespace pids, as they print them)

    const everyone = descendants(pid1);
    process.kill(pid1, 'SIGTERM'); // what docker stop sends
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(named('shutdown')).toHaveLength(3); // each primary drained; the last one on the forwarded SIGTERM
    expect(stderr).not.toMatch(/SIGKILL|killed/);
    expect([pid1, ...everyone].filter((pid) => !isDead(pid))).toEqual([]);
  } finally {
    if (namespace.exitCode === null && namespace.signalCode === null) namespace.kill('SIGKILL');
    await exited;
  }
});
if (!canUnshare) it('(skipped: the PID-1 upgrade test needs root and unshare --pid from util-linux)', () => {});
