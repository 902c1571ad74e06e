// Hot upgrade of the primary (SIGUSR2): a new primary process takes over every socket and the counter store
// from the old one, under load, or is stopped while the old one keeps serving. Real processes, real clients.
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { homeSlot } from '../src/core/reuseport-program';
import { AppRun, stopAllApps } from './apps';
import { fixture, get, isDead, waitFor } from './helpers';
import { describeWithTool, wrk } from './tools';

const scratch = mkdtempSync(join(tmpdir(), 'prefork-upgrade-'));
afterEach(() => stopAllApps());
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Event { event: string; [field: string]: unknown }

/** The test fixture as its own primary process (signals and exitProcess on), with `options` for supervise(). */
function startApp(options: Record<string, unknown>, behaviourFile: string): AppRun {
  writeFileSync(behaviourFile, '');
  return new AppRun([fixture('app.js')], { TEST_OPTIONS: JSON.stringify({ listen: 0, workers: 2, ...options }), TEST_BEHAVIOUR_FILE: behaviourFile });
}

function events(run: AppRun, name: string): Event[] {
  return run.matches(/^EVENT (.*)$/gm).map((match) => JSON.parse(match[1]) as Event).filter((event) => event.event === name);
}

async function waitForEvent(run: AppRun, name: string, count = 1, timeout = 20000): Promise<Event[]> {
  await run.waitForMatches(new RegExp(`^EVENT \\{"event":"${name}"`, 'gm'), count, { timeout });
  return events(run, name);
}

/**
 * Requests in a loop until stopped, `concurrency` at a time, on fresh connections (`keepAlive` false) or over
 * one keep-alive agent: the count of answers by pid, and every failure.
 */
function load(port: number, { keepAlive, concurrency = 4 }: { keepAlive: boolean; concurrency?: number }) {
  const agent = new http.Agent({ keepAlive, maxSockets: concurrency });
  const served = new Map<number, number>();
  const failures: string[] = [];
  let running = true;
  const one = () => new Promise<void>((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/', agent, headers: keepAlive ? {} : { connection: 'close' } }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk) => (body += chunk)).on('end', () => {
        if (response.statusCode === 200) served.set(Number(body), (served.get(Number(body)) ?? 0) + 1);
        else failures.push(`status ${response.statusCode}`);
        resolve();
      });
    });
    request.on('error', (error) => {
      failures.push(error.message);
      resolve();
    });
    request.setTimeout(5000, () => request.destroy(new Error('timed out')));
  });
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) await one();
  });
  return {
    served,
    failures,
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
    },
  };
}

/** Stops the new primary (no longer our child) and waits for it and its workers to be gone. */
async function stopPrimary(pid: number, workers: number[]): Promise<void> {
  if (!isDead(pid)) process.kill(pid, 'SIGTERM');
  await waitFor(() => [pid, ...workers].every(isDead), 15000, `primary ${pid} and its workers to exit`);
}

describe.each([false, true])('SIGUSR2 (keep-alive clients: %s)', (keepAlive) => {
  it('hands every socket and the counter store to a new primary under load: no failed request, the pid file moves', async () => {
    const behaviour = join(scratch, `behaviour-${keepAlive}`);
    const pidFile = join(scratch, `pid-${keepAlive}`);
    const run = startApp({ balance: 'client-ip', pidFile }, behaviour);
    const [ready] = await waitForEvent(run, 'all-ready');
    const { port } = (ready.addresses as Array<{ port: number }>)[0];
    const oldWorkers = (ready.workers as Array<{ pid: number }>).map((worker) => worker.pid);
    for (let i = 0; i < 5; i++) await get(port, '127.0.0.1', '/count');
    expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(run.process.pid));

    const traffic = load(port, { keepAlive });
    await new Promise((resolve) => setTimeout(resolve, 300));
    run.process.kill('SIGUSR2');
    const [upgraded] = await waitForEvent(run, 'upgrade', 2);
    const newPid = upgraded.pid as number;
    let newWorkers: number[] = [];
    try {
      expect(events(run, 'upgrade').map((event) => event.outcome).sort()).toEqual(['took-over', 'upgraded']);
      expect(await run.exited).toEqual({ code: 0, signal: null });
      const [, after] = await waitForEvent(run, 'all-ready', 2);
      newWorkers = (after.workers as Array<{ pid: number }>).map((worker) => worker.pid);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await traffic.stop();

      expect(traffic.failures).toEqual([]);
      expect(newWorkers.some((pid) => (traffic.served.get(pid) ?? 0) > 0)).toBe(true); // the new workers served the load
      expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(newPid));
      expect(await get(port, '127.0.0.1', '/count')).toBe('6'); // the counts survived
      // The handed-over groups kept their order: every client address still reaches its home slot.
      const bySlot = new Map((after.workers as Array<{ id: number; pid: number }>).map((worker) => [worker.id, worker.pid]));
      for (let n = 1; n <= 20; n++) {
        expect(Number(await get(port, '127.0.0.1', '/', `127.0.0.${n}`))).toBe(bySlot.get(homeSlot(`127.0.0.${n}`, 2)));
      }
      expect(oldWorkers.every(isDead)).toBe(true);
    } finally {
      await traffic.stop();
      await stopPrimary(newPid, newWorkers);
    }
  });
});

describe.each([
  ['its workers crash', 'exit-before-listen', {}, /exited \(code 1\) before it was ready/],
  ['it is not ready within readyTimeout', 'never-ready', { waitReady: true }, /was not ready within readyTimeout \(2000 ms\)/],
] as const)('an upgrade whose new primary fails (%s)', (_, newBehaviour, options, reason) => {
  it('stops the new primary; the old one keeps serving every request, and refuses a second upgrade meanwhile', async () => {
    const behaviour = join(scratch, `behaviour-${newBehaviour}`);
    const pidFile = join(scratch, `pid-${newBehaviour}`);
    const run = startApp({ readyTimeout: 2000, pidFile, ...options }, behaviour);
    if ('waitReady' in options) writeFileSync(behaviour, 'ready-late');
    const [ready] = await waitForEvent(run, 'all-ready');
    const { port } = (ready.addresses as Array<{ port: number }>)[0];
    const oldWorkers = (ready.workers as Array<{ pid: number }>).map((worker) => worker.pid);
    writeFileSync(behaviour, newBehaviour); // how the new primary's workers will behave

    const traffic = load(port, { keepAlive: false });
    run.process.kill('SIGUSR2');
    await new Promise((resolve) => setTimeout(resolve, 200));
    run.process.kill('SIGUSR2'); // while the first is running: refused
    const [rolledBack] = await waitForEvent(run, 'upgrade');
    await new Promise((resolve) => setTimeout(resolve, 200));
    await traffic.stop();

    expect(rolledBack).toMatchObject({ outcome: 'rolled-back', error: expect.stringMatching(reason) });
    expect(rolledBack.error).toMatch(/the old one \(pid \d+\) keeps serving/);
    expect(run.errors).toMatch(/prefork: Upgrade failed: the new primary/);
    expect(run.errors).toMatch(/Cannot upgrade: an upgrade is already running/);
    expect(isDead(rolledBack.pid as number)).toBe(true);
    expect(traffic.failures).toEqual([]);
    // Its workers took connections from the shared sockets while they ran (as a reload's new worker does); now
    // only the old ones serve.
    const after = await Promise.all(Array.from({ length: 10 }, () => get(port)));
    expect(after.every((pid) => oldWorkers.includes(Number(pid)))).toBe(true);
    expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(run.process.pid));
    expect(run.process.exitCode).toBeNull();
  });
});

describeWithTool('wrk', 'SIGUSR2 under wrk -c50', () => {
  it.each([
    ['Connection: close', ['Connection: close']],
    ['keep-alive', []],
  ])('fails no request across an upgrade (%s)', async (_, headers) => {
    const run = startApp({}, join(scratch, `behaviour-wrk-${headers.length}`));
    const [ready] = await waitForEvent(run, 'all-ready');
    const { port } = (ready.addresses as Array<{ port: number }>)[0];
    const result = wrk(port, 6, headers);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    run.process.kill('SIGUSR2');
    const [upgraded] = await waitForEvent(run, 'upgrade', 2);
    const newPid = upgraded.pid as number;
    try {
      const { requests, socketErrors, non2xx, output } = await result;
      expect({ socketErrors, non2xx }).toEqual({ socketErrors: 0, non2xx: 0 });
      expect(requests).toBeGreaterThan(1000);
      expect(events(run, 'upgrade').map((event) => event.outcome).sort()).toEqual(['took-over', 'upgraded']);
      expect(output).not.toMatch(/Socket errors/);
    } finally {
      const [, after] = await waitForEvent(run, 'all-ready', 2);
      await stopPrimary(newPid, (after.workers as Array<{ pid: number }>).map((worker) => worker.pid));
    }
  });
});
