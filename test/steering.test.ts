// Kernel steering (the `balance` option): the primary's reuseport programs, checked with real connections from
// real loopback source addresses against what the program promises.
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { native } from '../src/core/binding';
import { createListenSocket } from '../src/core/listen-socket';
import { clientAddressChoice, clientAddressProgram, homeSlot } from '../src/core/reuseport-program';
import { MAX_WORKERS } from '../src/limits';
import type { Supervisor, Worker } from '../src';
import { get, waitFor } from './helpers';
import { Primary } from './primary';
import { TestSupervisors } from './supervisors';

const supervisors = new TestSupervisors();
afterEach(() => supervisors.stopAll());
afterAll(() => supervisors.remove());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const source = (n: number) => `127.0.0.${n}`;
const SOURCES = Array.from({ length: 50 }, (_, i) => source(i + 1));

/** The pid that serves a connection from each source address (one request each, in parallel). */
async function servedBy(port: number, sources: string[]): Promise<Map<string, number>> {
  const pids = await Promise.all(sources.map((address) => get(port, '127.0.0.1', '/', address)));
  return new Map(sources.map((address, i) => [address, Number(pids[i])]));
}

/** Like servedBy, but a request a stopped worker holds counts as 'no answer' after get()'s 5 s instead of failing. */
async function answeredBy(port: number, sources: string[]): Promise<string[]> {
  return Promise.all(sources.map((address) => get(port, '127.0.0.1', '/', address).catch(() => 'no answer')));
}

const pidOf = (supervisor: Supervisor, slot: number): number => supervisor.workers.find((worker) => worker.id === slot)!.pid;

describe.each(['hash', 'client-ip'] as const)("balance '%s'", (balance) => {
  it('gives a stuck worker no new connections, and gives it some again once its event loop turns', async () => {
    const supervisor = supervisors.start({ balance, heartbeatTimeout: 60000 });
    await supervisor.ready();
    const { port } = supervisor.addresses[0];
    expect((await supervisor.stats()).balance).toEqual({ mode: balance, steered: true });
    const [stuck, other] = supervisor.workers;
    process.kill(stuck.pid, 'SIGSTOP');
    try {
      await sleep(700); // past stuckAfter (300 ms) with room for a loaded machine
      expect((await supervisor.stats()).slots.find((slot) => slot.slot === stuck.id)?.steeringShare).toBe(0);
      const pids = new Set((await servedBy(port, SOURCES)).values());
      expect(pids).toEqual(new Set([other.pid]));
    } finally {
      process.kill(stuck.pid, 'SIGCONT');
    }
    // Back in service once its loop has beaten again (give a loaded test machine a few seconds).
    const deadline = Date.now() + 5000;
    while (((await supervisor.stats()).slots.find((slot) => slot.slot === stuck.id)?.steeringShare ?? 0) === 0 && Date.now() < deadline) await sleep(25);
    const pids = new Set((await servedBy(port, SOURCES)).values());
    expect(pids.has(stuck.pid)).toBe(true);
  });
});

describe('the default: one shared accept queue', () => {
  it('gives a stuck worker no new connections (it does not accept), and attaches no program', async () => {
    const supervisor = supervisors.start({ heartbeatTimeout: 60000 });
    await supervisor.ready();
    const { port } = supervisor.addresses[0];
    const stats = await supervisor.stats();
    expect(stats.sockets).toBe('shared');
    expect(stats.balance).toEqual({ mode: 'hash', steered: false });
    const [stuck, other] = supervisor.workers;
    process.kill(stuck.pid, 'SIGSTOP');
    try {
      const pids = new Set((await servedBy(port, SOURCES)).values());
      expect(pids).toEqual(new Set([other.pid]));
    } finally {
      process.kill(stuck.pid, 'SIGCONT');
    }
  });
});

describe("balance 'least-loaded' (deprecated)", () => {
  it('is accepted and means the default, one shared queue, with one line on stderr', async () => {
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr) as (...args: unknown[]) => boolean;
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array, ...rest: unknown[]) => {
      if (String(chunk).startsWith('prefork:')) lines.push(String(chunk));
      return write(chunk, ...rest);
    }) as typeof process.stderr.write);
    try {
      const supervisor = supervisors.start({ balance: 'least-loaded' as never });
      await supervisor.ready();
      const stats = await supervisor.stats();
      expect(stats.sockets).toBe('shared');
      expect(stats.balance).toEqual({ mode: 'hash', steered: false });
    } finally {
      spy.mockRestore();
    }
    expect(lines).toEqual([
      "prefork: balance 'least-loaded' is deprecated and ignored: every worker takes connections from one shared queue (sockets: 'shared'), which measured a better tail\n",
    ]);
  });
});

describe("balance 'client-ip'", () => {
  it('sends each of 50 loopback addresses always to one worker, its home slot, and splits them within 30% of even', async () => {
    const supervisor = supervisors.start({ balance: 'client-ip' });
    await supervisor.ready();
    const { port } = supervisor.addresses[0];
    const rounds = [await servedBy(port, SOURCES), await servedBy(port, SOURCES), await servedBy(port, SOURCES)];
    for (const address of SOURCES) {
      expect(rounds.map((round) => round.get(address))).toEqual(new Array(3).fill(pidOf(supervisor, homeSlot(address, 2))));
    }
    for (const worker of supervisor.workers) {
      const clients = SOURCES.filter((address) => rounds[0].get(address) === worker.pid).length;
      expect(clients).toBeGreaterThanOrEqual(25 * 0.7);
      expect(clients).toBeLessThanOrEqual(25 * 1.3);
    }
    // IPv6 too (the listen address is dual-stack '::')
    const overIpv6 = await Promise.all(Array.from({ length: 5 }, () => get(port, '::1', '/', '::1')));
    expect(new Set(overIpv6)).toEqual(new Set([String(pidOf(supervisor, homeSlot('::1', 2)))]));
  });

  it("moves only a stopped slot's clients while the group renumbers, and sends them home when it is back", async () => {
    const supervisor = supervisors.start({ balance: 'client-ip', workers: 3, restart: { delay: 1500, resetAfter: 60000 } });
    await supervisor.ready();
    const { port } = supervisor.addresses[0];
    const home = new Map(SOURCES.map((address) => [address, homeSlot(address, 3)]));
    const before = await servedBy(port, SOURCES);
    for (const address of SOURCES) expect(before.get(address)).toBe(pidOf(supervisor, home.get(address)!));

    // Slot 0 crashes twice: the second restart waits 1.5 s with slot 0's socket closed. The kernel moved the last
    // socket of the group into its place; the program must follow.
    const restarted = once(supervisor, 'restart');
    process.kill(pidOf(supervisor, 0), 'SIGKILL');
    const [, first] = (await restarted) as [Worker, Worker];
    await waitFor(() => supervisor.workers.find((worker) => worker.id === 0)?.state === 'ready', 5000, 'slot 0 ready');
    const exited = once(supervisor, 'exit');
    process.kill(first.pid, 'SIGKILL');
    await exited;
    await sleep(50);
    const during = await servedBy(port, SOURCES);
    const others = new Set([pidOf(supervisor, 1), pidOf(supervisor, 2)]);
    for (const address of SOURCES) {
      if (home.get(address) === 0) expect(others.has(during.get(address)!)).toBe(true);
      else expect(during.get(address)).toBe(before.get(address));
    }

    await waitFor(() => supervisor.workers.find((worker) => worker.id === 0)?.state === 'ready', 10000, 'slot 0 back');
    await sleep(50);
    const after = await servedBy(port, SOURCES);
    for (const address of SOURCES) expect(after.get(address)).toBe(pidOf(supervisor, home.get(address)!));
  });

  it('keeps every address on its home slot across scaling down and up (the removed socket closes when its worker is gone)', async () => {
    const supervisor = supervisors.start({ balance: 'client-ip', workers: 3 });
    await supervisor.ready();
    const { port } = supervisor.addresses[0];
    await supervisor.scale(2);
    await sleep(50);
    let served = await servedBy(port, SOURCES);
    for (const address of SOURCES) expect(served.get(address)).toBe(pidOf(supervisor, homeSlot(address, 2)));
    await supervisor.scale(3);
    await sleep(50);
    served = await servedBy(port, SOURCES);
    for (const address of SOURCES) expect(served.get(address)).toBe(pidOf(supervisor, homeSlot(address, 3)));
  });
});

describe("the 'client-ip' program in the kernel", () => {
  /**
   * `slotCount` slots, one listening socket each, joined in an order unlike the slots' (slot → index is a
   * permutation), and the slots in `outOfService` steered around. Each source address connects once; the kernel
   * must send it where clientAddressChoice says, and none to a slot out of service.
   */
  async function checkInKernel(slotCount: number, outOfService: number[]): Promise<void> {
    const indexOf = (slot: number) => (slot * (slotCount === 6 ? 5 : 389) + 1) % slotCount; // a permutation of the slots
    const serving = new Map<number, number>();
    for (let slot = 0; slot < slotCount; slot++) if (!outOfService.includes(slot)) serving.set(slot, indexOf(slot));
    const acceptedBy = new Map<string, number>();
    const servers: net.Server[] = [];
    const clients: net.Socket[] = [];
    try {
      let port = 0;
      let firstFd = -1;
      for (let index = 0; index < slotCount; index++) {
        const socket = await createListenSocket({ host: '127.0.0.1', port }); // listens now: joins the group at `index`
        port = socket.port;
        if (index === 0) firstFd = socket.fd;
        const server = net.createServer((connection) => {
          acceptedBy.set(connection.remoteAddress!, index);
          connection.destroy();
        });
        servers.push(server);
        await new Promise<void>((resolve) => server.listen({ fd: socket.fd }, resolve));
      }
      native.attachReuseportProgram(firstFd, clientAddressProgram(slotCount, serving)); // on any socket: it is the group's
      for (const address of SOURCES) {
        const client = net.connect({ host: '127.0.0.1', port, localAddress: address });
        client.on('error', () => {});
        clients.push(client);
      }
      await waitFor(() => acceptedBy.size === SOURCES.length, 5000, 'a connection from every source');
      for (const address of SOURCES) expect([address, acceptedBy.get(address)]).toEqual([address, clientAddressChoice(address, slotCount, serving)]);
      const outOfServiceIndices = outOfService.map(indexOf);
      expect([...acceptedBy.values()].filter((index) => outOfServiceIndices.includes(index))).toEqual([]);
    } finally {
      for (const client of clients) client.destroy();
      await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    }
  }

  it('sends each client to its home slot, or around a slot out of service, with a few slots', async () => {
    // Slots 2 and 4 out of service, and whichever is the first source's home, so that a fallback is taken.
    await checkInKernel(6, [...new Set([2, 4, homeSlot(SOURCES[0], 6)])]);
  });

  it(`fits the kernel's 4,096 instructions with ${MAX_WORKERS} slots (MAX_WORKERS), and steers right there too`, async () => {
    // The homes of three sources out of service: a fallback over the other 1,021 slots.
    await checkInKernel(MAX_WORKERS, [...new Set(SOURCES.slice(0, 3).map((address) => homeSlot(address, MAX_WORKERS)))]);
    // The largest program (every slot's entry, and a fallback over all but one): converted for the kernel at 8 bytes
    // an instruction, it must also stay below the 20 KB net.core.optmem_max of kernels before 6.9 (ENOMEM there).
    const allButOne = new Map(Array.from({ length: MAX_WORKERS - 1 }, (_, slot) => [slot, slot]));
    expect(clientAddressProgram(MAX_WORKERS, allButOne).length / 4).toBeLessThanOrEqual(2400);
  });
});

describe('a failed attach (simulated ENOMEM)', () => {
  it('leaves no stale program in charge: a recovered slot gets connections again, and a newly stuck one none once attaching works', async () => {
    // While this file exists the primary's attaches fail with ENOMEM (PREFORK_TEST_ATTACH_ENOMEM, native/reuseport.cc).
    const failing = join(supervisors.scratch, 'attach-fails');
    const primary = new Primary({ balance: 'client-ip', heartbeatTimeout: 60000, metrics: '127.0.0.1:0' }, { env: { PREFORK_TEST_ATTACH_ENOMEM: failing } });
    try {
      const { port, workers } = await primary.allReady();
      const metricsUrl = (await primary.waitForEvent('all-ready')).metrics as string;
      const steeringShares = async () => (await (await fetch(metricsUrl)).text()).split('\n').filter((line) => line.startsWith('prefork_slot_steering_share{'));
      const [recovered, stuck] = workers.map((worker) => String(worker.pid));
      // Waits (up to 5 s, the primary may be slow on a loaded machine) until the shares say `expected`.
      const untilShares = async (expected: string[], what: string) => {
        for (const deadline = Date.now() + 5000; ; await sleep(50)) {
          const shares = await steeringShares();
          if (JSON.stringify(shares) === JSON.stringify(expected)) return;
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: shares ${JSON.stringify(shares)}`);
        }
      };
      // The first slot gets stuck: a program that steers around it is attached.
      process.kill(Number(recovered), 'SIGSTOP');
      await untilShares(['prefork_slot_steering_share{slot="0"} 0', 'prefork_slot_steering_share{slot="1"} 1'], 'the first slot seen stuck');
      writeFileSync(failing, '');
      // It recovers, and the program that would take it back fails to attach.
      process.kill(Number(recovered), 'SIGCONT');
      await waitFor(() => /prefork: cannot/.test(primary.stderr), 5000, 'the failed attach in the log');
      await sleep(100);
      const duringFailure = await answeredBy(port, SOURCES);
      expect(duringFailure.filter((pid) => pid === recovered).length).toBeGreaterThan(0);
      expect(duringFailure.filter((pid) => pid !== recovered && pid !== stuck)).toEqual([]);
      expect(primary.stderr).toMatch(/prefork: cannot attach the balance program for \[::\]:\d+ \(setsockopt ENOMEM SO_ATTACH_REUSEPORT_CBPF\); the kernel's hash decides new connections there until the slots change\n/);
      expect(await steeringShares()).toEqual([]); // no program of ours decides: no shares to show

      // Attaching works again: the next change of the slots (the second slot gets stuck) attaches a program.
      rmSync(failing);
      process.kill(Number(stuck), 'SIGSTOP');
      try {
        await untilShares(['prefork_slot_steering_share{slot="0"} 1', 'prefork_slot_steering_share{slot="1"} 0'], 'the second slot seen stuck');
        expect(new Set(await answeredBy(port, SOURCES))).toEqual(new Set([recovered]));
        expect(await steeringShares()).toEqual(['prefork_slot_steering_share{slot="0"} 1', 'prefork_slot_steering_share{slot="1"} 0']);
        expect(primary.stderr).toMatch(/prefork: balance 'client-ip' steers new connections on \[::\]:\d+ again\n/);
        // Failing again when the second slot recovers; the detach at shutdown is no recovery to report.
        writeFileSync(failing, '');
      } finally {
        process.kill(Number(stuck), 'SIGCONT');
      }
      await waitFor(() => primary.stderr.split('prefork: cannot attach').length === 3, 5000, 'the second failed attach in the log');
      await primary.stop();
      expect(primary.stderr.split('\n').filter((line) => line.includes('balance'))).toEqual([
        expect.stringMatching(/^prefork: cannot attach/),
        expect.stringMatching(/ again$/),
        expect.stringMatching(/^prefork: cannot attach/),
      ]);
    } finally {
      rmSync(failing, { force: true });
      await primary.stop();
    }
  });
});

describe('bad balance options fail before anything starts', () => {
  it('names the valid modes', () => {
    expect(() => supervisors.start({ balance: 'round-robin' as never })).toThrow(
      /The "balance" option must be one of 'hash', 'client-ip'\. Received 'round-robin'/,
    );
  });

  it("refuses a steering mode with sockets: 'shared'", () => {
    expect(() => supervisors.start({ balance: 'client-ip', sockets: 'shared' })).toThrow(/balance.*sockets: 'shared'/);
  });
});
