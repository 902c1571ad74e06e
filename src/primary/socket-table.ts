// The primary's listen sockets: one per (address, worker slot) in reuseport mode, one per address in shared mode.
import { closeSync } from 'node:fs';
import { checkAddressFree, createListenSocket, type ListenSocket } from '../core/listen-socket';
import { preforkError } from '../errors';
import { addressMatches, type ListenConfig, type ResolvedAddress } from '../protocol/address';
import type { InheritedSocket } from '../protocol/messages';
import type { ActivatedSocket } from './socket-activation';
import type { Steering } from './steering';
import type { Handover } from './upgrade';

/**
 * Sockets are bound here and listened on by the worker, so a slot joins the kernel's balancing only when its
 * worker is up. A replacement worker gets its slot's sockets again: what is queued there is not lost.
 */
export class SocketTable {
  /** Every address opened so far, the port settled (port 0 becomes the one the kernel chose for all slots). */
  readonly addresses: ResolvedAddress[] = [];
  /** A slot's sockets, indexed as `addresses`; null while the slot is out of the group (closed, waiting to restart). */
  private readonly slotSockets = new Map<number, ListenSocket[] | null>();
  private readonly sharedSockets: ListenSocket[] = [];
  /** Every socket this table holds open; all closed by closeAll(). */
  private readonly open = new Set<ListenSocket>();
  /** Addresses being opened for a worker's request: two workers asking for port 0 get one port. */
  private readonly opening = new Map<string, Promise<number>>();
  private closed = false;
  /** Sockets systemd handed over, not yet serving an address. */
  private readonly unclaimed: ActivatedSocket[];
  /** Address index → the systemd socket that serves it, shared by every slot (never closed before closeAll). */
  private readonly activated = new Map<number, ListenSocket>();
  /** Address index → slot → a socket the old primary of an upgrade handed over, until that slot takes it. */
  private readonly inherited = new Map<number, Map<number, ListenSocket>>();

  /**
   * `steering`: the primary sets each group's program, so it listens on each socket itself as the socket is
   * opened, and closes one only through the steering (see steering.ts). Without it a worker's listen() joins.
   */
  constructor(readonly mode: 'reuseport' | 'shared', activated: ActivatedSocket[] = [], private readonly steering: Steering | null = null) {
    this.unclaimed = [...activated];
  }

  /**
   * The new primary of an upgrade: every address the old one had, in its order (a worker's listen() finds them
   * as before), with its sockets; each slot takes its own as it is added. Steered, the groups are adopted in the
   * kernel's order the old primary kept.
   */
  adoptHandover(handover: Handover): void {
    for (const handed of handover.addresses) {
      const { shared, activated, group, ...address } = handed;
      const index = this.addresses.length;
      this.addresses.push(address);
      const socketAt = (fd: number): ListenSocket => {
        const socket = { fd, host: address.host, port: address.port, family: address.family };
        this.open.add(socket);
        return socket;
      };
      if (shared !== null) {
        const socket = socketAt(shared);
        if (activated) this.activated.set(index, socket);
        if (this.mode === 'shared') this.sharedSockets[index] = socket;
        continue;
      }
      const members = group.map((member) => ({ slot: member.slot, retired: member.retired, socket: socketAt(member.fd) }));
      this.inherited.set(index, new Map(members.filter((member) => !member.retired).map((member) => [member.slot, member.socket])));
      if (this.steering && handover.steered) this.steering.adoptGroup(index, members);
      for (const member of members) if (member.retired) this.close([member.socket]); // the steering closes it once the old primary is gone
    }
  }

  /** After the new primary's slots were added: handed-over sockets no slot took (fewer workers now) are closed. */
  releaseInherited(): void {
    for (const sockets of this.inherited.values()) this.close([...sockets.values()]);
    this.inherited.clear();
  }

  /** Every slot's sockets per address, for an upgrade: steered, in each group's kernel order. */
  handoverAddresses(): Handover['addresses'] {
    return this.addresses.map((address, index) => {
      const shared = this.activated.get(index) ?? (this.mode === 'shared' ? this.sharedSockets[index] : undefined);
      if (shared) return { ...address, shared: shared.fd, activated: this.activated.has(index), group: [] };
      const group = this.steering
        ? this.steering.members(index).map(({ slot, socket, retired }) => ({ slot, fd: socket.fd, retired }))
        : [...this.slotSockets].flatMap(([slot, sockets]) => (sockets?.[index] ? [{ slot, fd: sockets[index].fd, retired: false }] : []));
      return { ...address, shared: null, activated: false, group };
    });
  }

  /** systemd's sockets that no configured address claimed: each becomes an address of its own. */
  unclaimedActivated(): ActivatedSocket[] {
    return [...this.unclaimed];
  }

  /** The slot's sockets, one per address; [] while it is out of the group. */
  socketsOf(slot: number): ListenSocket[] {
    return this.slotSockets.get(slot) ?? [];
  }

  isOutOfGroup(slot: number): boolean {
    return this.slotSockets.get(slot) === null;
  }

  /** A new slot: a socket for every known address. */
  async addSlot(slot: number): Promise<void> {
    this.slotSockets.set(slot, await this.openForSlot(slot));
  }

  /** A slot that waits out a backoff must not take its share of new connections: its sockets close. */
  leaveGroup(slot: number): void {
    if (this.mode === 'reuseport') this.close(this.socketsOf(slot));
    this.slotSockets.set(slot, null);
  }

  /** A slot back from its backoff gets new sockets. */
  async rejoinGroup(slot: number): Promise<void> {
    if (!this.isOutOfGroup(slot)) return;
    const sockets = await this.openForSlot(slot);
    if (this.isOutOfGroup(slot)) this.slotSockets.set(slot, sockets);
    else if (this.mode === 'reuseport') this.close(sockets); // the slot was removed meanwhile
  }

  /**
   * A slot removed by scaling down: its worker's own copies keep serving until it drains. Steered, the slot gets
   * no new connections from now on, and our copies close once `drained` settles (its workers have exited), so
   * that the close is the one that takes each socket out of its group.
   */
  removeSlot(slot: number, drained: Promise<unknown>): void {
    const sockets = this.socketsOf(slot);
    if (this.steering && this.mode === 'reuseport') {
      for (const socket of sockets) this.steering.retire(socket);
      void drained.finally(() => this.close(sockets));
    } else {
      this.leaveGroup(slot);
    }
    this.slotSockets.delete(slot);
  }

  /**
   * A new address, from the `listen` option: its first socket settles the numeric host and, for port 0,
   * the one port every slot shares. Every slot in the group gets its socket now, bound but not listening.
   */
  async addAddress(config: ListenConfig, zeroPortCall = 0): Promise<number> {
    const handed = this.claimActivated(config);
    if (handed) return this.addActivatedAddress(config, handed, zeroPortCall);
    // Never join a group another process holds: any socket bound with SO_REUSEPORT would take a share.
    await checkAddressFree(config.host, config.port, config.ipv6Only);
    const first = await this.openSocket(config.host, config.port, config.ipv6Only);
    const index = this.addresses.length;
    this.addresses.push({
      host: first.host, port: first.port, family: first.family, ipv6Only: config.ipv6Only, backlog: config.backlog,
      configuredHost: config.host ?? null, configuredPort: config.port, zeroPortCall,
    });
    if (this.mode === 'shared') this.sharedSockets[index] = first;
    let unused: ListenSocket | null = this.mode === 'shared' ? null : first;
    for (const [slot, sockets] of this.slotSockets) {
      if (sockets === null || sockets[index] !== undefined) continue; // a slot out of the group opens all when it rejoins
      if (this.mode === 'shared') sockets[index] = first;
      else if (unused) [sockets[index], unused] = [unused, null];
      else sockets[index] = await this.openSocket(first.host, first.port, config.ipv6Only);
      if (this.mode === 'reuseport') this.join(index, slot, sockets[index]);
      if (this.mode === 'reuseport' && this.slotSockets.get(slot) !== sockets) this.close(sockets); // removed meanwhile
    }
    if (unused) this.close([unused]);
    return index;
  }

  /**
   * An address served by systemd's socket: every slot shares it (all workers accept from one queue), so the
   * queue outlives a restart of the whole service, as socket activation promises.
   */
  private addActivatedAddress(config: ListenConfig, handed: ActivatedSocket, zeroPortCall: number): number {
    const socket: ListenSocket = { fd: handed.fd, host: handed.host, port: handed.port, family: handed.family };
    const index = this.addresses.length;
    this.addresses.push({
      host: socket.host, port: socket.port, family: socket.family, ipv6Only: config.ipv6Only, backlog: config.backlog,
      configuredHost: config.host ?? null, configuredPort: config.port, zeroPortCall,
    });
    this.open.add(socket);
    this.activated.set(index, socket);
    if (this.mode === 'shared') this.sharedSockets[index] = socket;
    for (const sockets of this.slotSockets.values()) if (sockets !== null) sockets[index] = socket;
    return index;
  }

  /** The handed-over socket a configured address means: the same port, and the same host unless none is given. */
  private claimActivated(config: ListenConfig): ActivatedSocket | undefined {
    const at = this.unclaimed.findIndex((socket) => config.port !== 0 && socket.port === config.port &&
      (config.host === undefined || config.host === socket.host || (config.host === 'localhost' && ['127.0.0.1', '::1'].includes(socket.host))));
    return at < 0 ? undefined : this.unclaimed.splice(at, 1)[0];
  }

  /** The index of a known address that a worker's listen(host, port) means, or undefined. */
  find(config: ListenConfig, zeroPortCall: number): number | undefined {
    const index = this.addresses.findIndex((known) => addressMatches(known, config.host, config.port, zeroPortCall));
    return index >= 0 ? index : undefined;
  }

  /** The index of the address a worker's listen(host, port) means; an address not open yet is opened once for all. */
  ensureAddress(config: ListenConfig, zeroPortCall: number): Promise<number> {
    const index = this.find(config, zeroPortCall);
    if (index !== undefined) return Promise.resolve(index);
    const key = `${config.host ?? ''}|${config.port}|${config.ipv6Only}|${config.port === 0 ? zeroPortCall : 0}`;
    let opening = this.opening.get(key);
    if (!opening) {
      opening = this.addAddress(config, config.port === 0 ? zeroPortCall : 0);
      this.opening.set(key, opening);
      opening.catch(() => {}).finally(() => this.opening.delete(key));
    }
    return opening;
  }

  /** What a worker is told of the socket for address `index`, found at `fd` in it. */
  describe(index: number, fd: number): InheritedSocket {
    const { host, port, family, backlog, configuredHost, configuredPort, zeroPortCall } = this.addresses[index];
    return { index, host, port, family, fd, backlog, configuredHost, configuredPort, zeroPortCall };
  }

  /** Closes every socket; nothing opens after this. */
  closeAll(): void {
    this.closed = true;
    this.steering?.stop();
    this.close([...this.open], { activatedToo: true });
    for (const socket of this.unclaimed.splice(0)) closeSync(socket.fd);
  }

  private async openForSlot(slot: number): Promise<ListenSocket[]> {
    if (this.mode === 'shared') return [...this.sharedSockets];
    const sockets: ListenSocket[] = [];
    for (const [index, address] of this.addresses.entries()) {
      const handed = this.activated.get(index) ?? this.inherited.get(index)?.get(slot);
      if (handed) {
        this.inherited.get(index)?.delete(slot);
        sockets.push(handed);
        continue;
      }
      const socket = await this.openSocket(address.host, address.port, address.ipv6Only);
      sockets.push(socket);
      this.join(index, slot, socket);
    }
    return sockets;
  }

  /** Steered: the socket starts listening now, joining its group (unsteered, the worker's listen() does it). */
  private join(index: number, slot: number, socket: ListenSocket): void {
    if (!this.steering || this.activated.get(index) === socket) return;
    try {
      this.steering.join(index, slot, socket, this.addresses[index].backlog);
    } catch (error) {
      if (this.open.delete(socket)) closeSync(socket.fd);
      throw error;
    }
  }

  private async openSocket(host: string | undefined, port: number, ipv6Only: boolean): Promise<ListenSocket> {
    const socket = await createListenSocket({ host, port, ipv6Only, listen: false });
    if (this.closed) {
      closeSync(socket.fd);
      throw preforkError('ERR_PREFORK_NOT_RUNNING', 'Cannot open a socket: the supervisor is shutting down');
    }
    this.open.add(socket);
    return socket;
  }

  /** Closes our copies; a systemd socket, shared by all slots, only at the end. */
  private close(sockets: ListenSocket[], { activatedToo = false } = {}): void {
    const activated = new Set(this.activated.values());
    for (const socket of sockets) {
      if ((activated.has(socket) && !activatedToo) || !this.open.delete(socket)) continue;
      if (this.steering?.has(socket)) this.steering.leave(socket);
      else closeSync(socket.fd);
    }
  }
}
