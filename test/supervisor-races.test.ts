// The supervisor's one owner of slot transitions, tried at random: kill -9 of workers, reloads and scaling,
// fired without waiting for each other; after every round the invariants must hold. The seed is printed so a
// failing run can be replayed (PREFORK_RACE_SEED).
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { supervise } from '../src';
import { childrenOf, fixture, get, waitFor } from './helpers';

const ROUNDS = 40;

/** mulberry32: a small seeded generator, so a failing sequence can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sockets this process holds whose local port is `port` (the primary's listen sockets for it). */
function socketsOnPort(port: number): number {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').trim().split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (parseInt(fields[1].split(':')[1], 16) === port && fields[9] !== '0') inodes.add(fields[9]);
    }
  }
  let count = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (inodes.has(/^socket:\[(\d+)\]$/.exec(target)?.[1] ?? '')) count += 1;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

const live = () => childrenOf().filter((child) => child.state !== 'Z').map((child) => child.pid).sort((a, b) => a - b);

test(`randomized: kill -9, reload and scale interleaved for ${ROUNDS} rounds; after each, one live worker per slot, workers = live children, every slot answers, no stray socket`, async () => {
  const seed = Number(process.env.PREFORK_RACE_SEED ?? Date.now() % 1e9);
  process.stdout.write(`supervisor race test seed: ${seed}\n`);
  const next = random(seed);
  let port = 0;
  const scratch = mkdtempSync(join(tmpdir(), 'prefork-races-'));
  const behaviour = join(scratch, 'behaviour');
  writeFileSync(behaviour, '');
  const supervisor = supervise({
    script: fixture('app.js'), args: [], execArgv: [], workers: 2, listen: '127.0.0.1:0', readyTimeout: 10000, shutdownTimeout: 2000, signals: false, exitProcess: false,
    sockets: 'reuseport', // a socket per slot, opened and closed with each slot: where the races are
    restart: { delay: 10, maxDelay: 200, resetAfter: 500, maxRestarts: 100000, window: 1000 }, env: { TEST_OPTIONS: '{"listen":"127.0.0.1:0"}', TEST_BEHAVIOUR_FILE: behaviour },
  });
  try {
    await supervisor.ready();
    port = supervisor.addresses[0].port;
    writeFileSync(behaviour, 'flaky-start'); // from now on one worker start in three fails: reloads fail, restarts retry
    for (let round = 1; round <= ROUNDS; round++) {
      const operations: Array<Promise<unknown>> = [];
      const steps = 1 + Math.floor(next() * 4);
      const done: string[] = [];
      for (let step = 0; step < steps; step++) {
        const choice = next();
        if (choice < 0.4) {
          const victims = supervisor.workers;
          const victim = victims[Math.floor(next() * victims.length)];
          if (victim) {
            process.kill(victim.pid, 'SIGKILL');
            done.push(`kill ${victim.id}`);
          }
        } else if (choice < 0.7) {
          operations.push(supervisor.reload().catch(() => {}));
          done.push('reload');
        } else {
          const target = 1 + Math.floor(next() * 3);
          operations.push(supervisor.scale(target).catch(() => {}));
          done.push(`scale ${target}`);
        }
        if (next() < 0.5) await new Promise((resolve) => setTimeout(resolve, Math.floor(next() * 60)));
      }
      const what = `round ${round} (seed ${seed}): ${done.join(', ')}`;
      await Promise.all(operations);
      writeFileSync(behaviour, ''); // let the round settle
      await new Promise((resolve) => setTimeout(resolve, 100));
      // Quiet again: every slot has a ready worker, and the drained generations have exited.
      await waitFor(
        () => supervisor.workers.length === supervisor.workerCount && supervisor.workers.every((worker) => worker.state === 'ready') &&
          live().join() === supervisor.workers.map((worker) => worker.pid).sort((a, b) => a - b).join() || undefined,
        20000, `quiet after ${what}: workers ${JSON.stringify(supervisor.workers)}, children ${live()}`,
      );
      const slots = supervisor.workers.map((worker) => worker.id).sort();
      expect(slots).toEqual(Array.from({ length: supervisor.workerCount }, (_, i) => i)); // exactly one per slot
      const answered = new Set<number>();
      for (let i = 0; i < 80 && answered.size < supervisor.workers.length; i++) answered.add(Number(await get(port)));
      expect([...answered].sort()).toEqual(supervisor.workers.map((worker) => worker.pid).sort());
      expect(socketsOnPort(port)).toBe(supervisor.workerCount);
      writeFileSync(behaviour, 'flaky-start');
    }
    const reload = supervisor.reload().catch((error: { code: string }) => error.code);
    await supervisor.shutdown({ timeout: 1000 });
    expect(['ERR_PREFORK_SHUT_DOWN', 'ERR_PREFORK_NOT_RUNNING', undefined]).toContain(await reload);
    expect(live()).toEqual([]);
    expect(socketsOnPort(port)).toBe(0);
  } finally {
    await supervisor.shutdown({ timeout: 0 });
    rmSync(scratch, { recursive: true, force: true });
  }
}, 240000);
