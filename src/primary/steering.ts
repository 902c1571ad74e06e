// Kernel steering (the `balance` option): the primary owns every socket of each reuseport group, so it sets the
// group's classic BPF program, which picks the socket for each new connection on its SYN.
//
// The program names sockets by their index in the group, and the group's order is the kernel's: a socket joins
// at the end when it starts listening, and when one closes, the last moves into its place. So the primary is
// the only one that changes a group: it calls listen() itself (a worker's listen() on the socket changes nothing),
// and it closes a socket only when its copy is the last one (the slot's workers have exited). Each change is
// made in the order that keeps the program right at every moment:
//   join:  the new socket gets the next index, which no program names; the next program may name it.
//   leave: first a program that names neither the leaving socket nor the last one (the one that moves), which is
//          right both before and after the close; then the close; then the program for the new order.
// `members` mirrors the kernel's array under these rules; nothing else reorders it.
//
// During a hot upgrade two primaries hold copies of the same sockets (see upgrade.ts). Then a close is not the
// last one and changes nothing in the kernel, so a leave of a socket the other primary holds waits until that
// primary is gone (the socket is steered around meanwhile). The old primary opens no socket into a group while
// the new one may be appending its own (joinsAllowed()), and only one of them attaches programs at a time: the
// old one until the new one is ready and takes over (setAuthority()).
import { closeSync } from 'node:fs';
import { native } from '../core/binding';
import type { ListenSocket } from '../core/listen-socket';
import { formatAddress } from '../protocol/address';
import { clientAddressProgram, constantProgram, KERNEL_HASH, weightedProgram, type Program } from '../core/reuseport-program';

export const BALANCE_MODES = ['hash', 'client-ip'] as const;
export type BalanceMode = (typeof BALANCE_MODES)[number];

/**
 * How often the primary looks for a stuck worker (one whose event loop stopped turning), and workers beat on steered
 * sockets. A look attaches nothing unless a worker became stuck or responsive again since the last one.
 */
export const STUCK_CHECK_INTERVAL_MS = 100;

/** A worker whose event loop has not turned for this long gets no new connections until it turns again. */
export const STUCK_AFTER_MS = 3 * STUCK_CHECK_INTERVAL_MS;

/** What the steering asks of the slots. */
export interface SlotView {
  /** The number of slots now (client-ip hashes over it). */
  slotCount(): number;
  /** Whether the slot's worker takes new connections on the address: ready, not stopping, not stuck. */
  serving(slot: number, address: number): boolean;
}

/**
 * The steering for these options, or null where there is none: shared sockets, or a system that refuses
 * reuseport programs (then one line says so, unless the kernel's hash was asked for anyway).
 */
export function createSteering(mode: BalanceMode, sockets: 'reuseport' | 'shared', view: SlotView): Steering | null {
  const refused = sockets === 'shared' ? `sockets are 'shared' on ${process.platform}: every worker accepts from one queue` : Steering.probe();
  if (refused === null) return new Steering(mode, view);
  if (mode !== 'hash') process.stderr.write(`prefork: balance '${mode}' is not available (${refused}); new connections are balanced by the kernel's hash\n`);
  return null;
}

interface Member {
  readonly slot: number;
  readonly socket: ListenSocket;
  /** A removed slot's socket, kept open (and steered around) until its draining worker has exited. */
  retired: boolean;
  /** The other primary of a hot upgrade holds a copy: closing ours does not take it out of the group. */
  sharedWithPeer: boolean;
}

export class Steering {
  /** Per address, its sockets in the kernel's order. */
  private readonly groups: Member[][] = [];
  /**
   * Per address, the key (what it was built from) of the program tried last, attached or not: the same program is
   * never tried again, so after a failed attach the next try comes with the next change of the slots, not a timer.
   */
  private readonly tried: Array<string | null> = [];
  /** Per address, the share of new connections the last program gives each slot; null: no program of ours decides. */
  private readonly shares: Array<Map<number, number> | null> = [];
  /** Per address, while the last attach failed: what decides new connections instead, as logged. */
  private readonly failures: Array<string | undefined> = [];
  private timer: NodeJS.Timeout | null = null;
  private queued = false;
  private stopped = false;
  /** Whether this primary sets the programs (false: the other primary of an upgrade does). */
  private authority = true;
  /** After a hot upgrade handed the groups over: closes change nothing we track, and nothing is attached. */
  private handedOver = false;
  /** Sockets whose leave waits for the other primary of an upgrade to be gone. */
  private deferred: ListenSocket[] = [];
  /** Resolves when sockets may join groups again (no upgrade is sharing them). */
  private joinsBlocked: Promise<void> | null = null;

  constructor(readonly mode: BalanceMode, private readonly view: SlotView) {}

  /**
   * Whether this system lets us set a reuseport program: a bound, never listening socket on a free loopback port
   * is enough to ask, and joins no group anyone uses. Returns why not, or null.
   */
  static probe(): string | null {
    let fd = -1;
    try {
      [fd] = native.createListenSocket('127.0.0.1', 4, 0, false, -1);
      native.attachReuseportProgram(fd, constantProgram(KERNEL_HASH));
      return null;
    } catch (error) {
      return (error as Error).message;
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  }

  /**
   * Looks for stuck workers every STUCK_CHECK_INTERVAL_MS. A program is attached only when the serving members of a
   * group changed (a worker joined, left, stopped or became stuck, or turned again), never because time passed:
   * replacing a reuseport cBPF program under traffic frees the old one without an RCU grace period on kernels
   * without the 2026 fix (docs/operations.md), so each attach must be a rare event.
   */
  start(): void {
    this.timer ??= setInterval(() => this.applyAll(), STUCK_CHECK_INTERVAL_MS).unref();
  }

  /** Before the sockets close at shutdown: the kernel's hash again, so no program names a socket that is gone. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stopped = true; // nothing is attached after this, and nothing logged about it
    if (this.authority && !this.handedOver) {
      for (const [address, group] of this.groups.entries()) {
        if (group.length > 0) this.attach(address, null, () => null);
      }
    }
  }

  /** The slot's socket for `address` starts listening and so joins the group, after its current members. */
  join(address: number, slot: number, socket: ListenSocket, backlog: number): void {
    native.startListening(socket.fd, backlog);
    (this.groups[address] ??= []).push({ slot, socket, retired: false, sharedWithPeer: false });
    this.apply(address);
  }

  /** The new primary of an upgrade: the old one's group for `address`, in the kernel's order, its sockets shared. */
  adoptGroup(address: number, members: Array<{ slot: number; socket: ListenSocket; retired: boolean }>): void {
    this.groups[address] = members.map((member) => ({ ...member, sharedWithPeer: true }));
  }

  /**
   * The other primary of an upgrade holds copies of every socket in our groups until `gone` settles: leaves wait
   * for it, and (the old primary) no socket joins meanwhile, so the new one's appended sockets stay behind ours.
   */
  shareWithPeer(gone: Promise<unknown>, { blockJoins }: { blockJoins: boolean }): void {
    for (const group of this.groups) for (const member of group ?? []) member.sharedWithPeer = true;
    const settled = gone.then(() => {}, () => {}).then(() => {
      for (const group of this.groups) for (const member of group ?? []) member.sharedWithPeer = false;
      for (const socket of this.deferred.splice(0)) this.leave(socket);
      if (this.joinsBlocked === settled) this.joinsBlocked = null;
    });
    if (blockJoins) this.joinsBlocked = settled;
  }

  /** Resolves when a socket may join a group (at once, unless an upgrade shares the groups). */
  joinsAllowed(): Promise<void> {
    return this.joinsBlocked ?? Promise.resolve();
  }

  /** Whether this primary sets the programs; taking it back re-attaches every group's. */
  setAuthority(authority: boolean): void {
    this.authority = authority;
    if (!authority) return;
    this.tried.length = 0; // the other primary may have attached its own
    this.applyAll();
  }

  /** The old primary after a successful upgrade: the new one owns the groups; our closes change nothing. */
  handOver(): void {
    this.authority = false;
    this.handedOver = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const socket of this.deferred.splice(0)) closeSync(socket.fd);
  }

  /** Every socket in the groups, with its slot, in the kernel's order (what an upgrade hands over). */
  members(address: number): Array<{ slot: number; socket: ListenSocket; retired: boolean }> {
    return (this.groups[address] ?? []).map(({ slot, socket, retired }) => ({ slot, socket, retired }));
  }

  /** Whether the socket is one of a group's (it must then be closed with leave()). */
  has(socket: ListenSocket): boolean {
    return this.find(socket) !== null;
  }

  /** A removed slot's socket: steered around at once; leave() closes it once its workers are gone. */
  retire(socket: ListenSocket): void {
    const found = this.find(socket);
    if (!found) return;
    found.member.retired = true;
    this.apply(found.address);
  }

  /** Closes the socket (our copy must be its last) and updates the group in the order the kernel renumbers it. */
  leave(socket: ListenSocket): void {
    const found = this.find(socket);
    if (!found || this.handedOver) {
      closeSync(socket.fd);
      return;
    }
    if (found.member.sharedWithPeer) {
      found.member.retired = true; // steered around until the other primary is gone and the close counts
      this.deferred.push(socket);
      this.apply(found.address);
      return;
    }
    const { address, at } = found;
    const group = this.groups[address];
    const last = group[group.length - 1];
    this.apply(address, new Set([group[at], last]));
    closeSync(socket.fd);
    group[at] = last;
    group.pop();
    if (group.length === 0) {
      // The kernel freed the group, and its program with it.
      delete this.tried[address];
      delete this.failures[address];
    }
    this.apply(address);
  }

  /** Recomputes the programs once the current turn of the event loop is done (after a worker's state changed). */
  refreshSoon(): void {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(() => {
      this.queued = false;
      this.applyAll();
    });
  }

  /**
   * Each slot's share of new connections under the programs now (address 0's; a slot absent gets none), or null
   * while no program of ours decides (the last attach failed).
   */
  share(slot: number, address = 0): number | null {
    const shares = this.shares[address];
    return shares === null ? null : shares?.get(slot) ?? 0;
  }

  /** Whether every group has the program the balance asks for: false after a failed attach, until one attaches. */
  steers(): boolean {
    return this.failures.every((failure) => failure === undefined);
  }

  private applyAll(): void {
    for (const address of this.groups.keys()) this.apply(address);
  }

  private find(socket: ListenSocket): { address: number; at: number; member: Member } | null {
    for (const [address, group] of this.groups.entries()) {
      const at = group.findIndex((member) => member.socket === socket);
      if (at >= 0) return { address, at, member: group[at] };
    }
    return null;
  }

  /** Attaches the program for `address` now, naming none of `avoid`. */
  private apply(address: number, avoid: Set<Member> = new Set()): void {
    const group = this.groups[address] ?? [];
    if (this.stopped || !this.authority || group.length === 0) {
      this.shares[address] = new Map();
      return;
    }
    const serving = group.flatMap((member, index) =>
      !member.retired && !avoid.has(member) && this.view.serving(member.slot, address) ? [{ member, index }] : []);
    const weights = serving.map(({ member, index }) => ({ index, slot: member.slot, weight: 1 }));
    const total = weights.reduce((sum, entry) => sum + entry.weight, 0);
    const shares = new Map(weights.map((entry) => [entry.slot, total > 0 ? entry.weight / total : 0]));
    // What the program depends on: when it has not changed (most looks), nothing is built or attached.
    const choice = weights.map((entry) => `${entry.index}:${entry.slot}:${entry.weight}`).join(',');
    if (this.mode === 'client-ip') {
      const slotCount = this.view.slotCount();
      this.attach(address, `${slotCount}|${choice}`, () => clientAddressProgram(slotCount, new Map(weights.map((entry) => [entry.slot, entry.index]))));
    } else if (this.mode === 'hash' && serving.length === group.length) {
      this.attach(address, null, () => null); // every socket serving: no program at all, the kernel's own hash
    } else {
      this.attach(address, choice, () => weightedProgram(weights));
    }
    this.shares[address] = this.failures[address] === undefined ? shares : null;
  }

  /**
   * Attaches the program `key` stands for (null: none), unless it is the one tried last. When that fails (ENOMEM:
   * the program is larger than net.core.optmem_max, or the kernel is short of memory), the previous program must
   * not stay in charge: it names sockets by an order that may be gone, and slots that changed since. So it is
   * detached, and the kernel's hash decides until the slots change and the next program is tried.
   */
  private attach(address: number, key: string | null, build: () => Program | null): void {
    if (key === this.tried[address] || (key === null && this.tried[address] === undefined)) return;
    this.tried[address] = key;
    const { socket } = this.groups[address][0];
    const where = formatAddress(socket.host, socket.port);
    try {
      const program = build();
      if (program) native.attachReuseportProgram(socket.fd, program);
      else detach(socket.fd);
    } catch (error) {
      let failure: string;
      try {
        detach(socket.fd);
        failure = `cannot attach the balance program for ${where} (${(error as Error).message}); the kernel's hash decides new connections there until the slots change`;
      } catch (detachError) {
        failure = `cannot attach the balance program for ${where} (${(error as Error).message}), nor detach the one before (${(detachError as Error).message}): that one decides new connections there until the slots change`;
      }
      if (failure !== this.failures[address] && !this.stopped) process.stderr.write(`prefork: ${failure}\n`);
      this.failures[address] = failure;
      return;
    }
    if (this.failures[address] !== undefined && !this.stopped) process.stderr.write(`prefork: balance '${this.mode}' steers new connections on ${where} again\n`);
    delete this.failures[address];
  }
}

/** The kernel's own hash again: detach (Linux 5.8+), or a program that always leaves the choice to the hash. */
function detach(fd: number): void {
  try {
    native.detachReuseportProgram(fd);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ENOENT') return; // none attached
    native.attachReuseportProgram(fd, constantProgram(KERNEL_HASH));
  }
}
