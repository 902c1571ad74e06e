// A worker's listen() on an address it did not inherit: the primary opens the address (once, for all slots) and
// sends the worker its slot's socket, or refuses. It opens nothing for workers whose privileges were dropped, at
// most maxRequestedAddresses for the others, and never a port another process holds. A refusal reaches the app
// as its server's error and is said once on stderr.
import { debug } from '../debug';
import { preforkError } from '../errors';
import { formatAddress, listenConfig, type ListenConfig } from '../protocol/address';
import type { PrimaryMessage, WorkerMessage } from '../protocol/messages';
import type { SupervisorConfig } from './options';
import type { SocketTable } from './socket-table';
import type { WorkerProcess } from './worker-process';

export type SocketRequest = Extract<WorkerMessage, { type: 'socket' }>;

/** A refused listen; `notAllowed`: why the primary will not open the address itself. */
type Refusal = NodeJS.ErrnoException & { notAllowed?: string };

export class SocketRequests {
  /** Addresses opened because a worker asked (not configured): capped by maxRequestedAddresses. */
  private requestedAddresses = 0;
  /** Refused listens already reported (address and reason): see reportRefusal(). */
  private readonly refusalsReported = new Set<string>();

  constructor(
    private readonly config: SupervisorConfig,
    private readonly sockets: SocketTable,
    /** Whether the worker still serves its slot (or is about to, after a reload): a stopped one gets no socket. */
    private readonly servesItsSlot: (worker: WorkerProcess) => boolean,
  ) {}

  /** Opens the address if it may (or finds it opened) and sends the worker its slot's socket there, or the refusal. */
  async answer(worker: WorkerProcess, request: SocketRequest): Promise<void> {
    debug('primary: worker %d (pid %d) asks for a socket on %s (request %d)', worker.record.id, worker.record.pid, formatAddress(request.host, request.port), request.requestId);
    try {
      const config = listenConfig(request.host ?? undefined, request.port, request.ipv6Only, request.backlog);
      const index = this.sockets.find(config, request.zeroPortCall) ?? (await this.openRequested(config, request.zeroPortCall));
      const socket = this.sockets.socketsOf(worker.record.id)[index];
      if (!socket || !this.servesItsSlot(worker)) {
        throw preforkError('ERR_PREFORK_NOT_RUNNING', 'Cannot serve a socket to a stopped worker');
      }
      if (!worker.channel.closed) {
        debug('primary: request %d of worker %d answered with %s:%d (fd %d)', request.requestId, worker.record.id, this.sockets.addresses[index].host, this.sockets.addresses[index].port, socket.fd);
        worker.channel.send({ type: 'socket', requestId: request.requestId, socket: this.sockets.describe(index, -1) } satisfies PrimaryMessage, [socket.fd]);
      }
    } catch (cause) {
      const { message, code, errno, syscall } = cause as NodeJS.ErrnoException;
      debug('primary: request %d of worker %d refused: %s', request.requestId, worker.record.id, message);
      this.reportRefusal(worker, formatAddress(request.host, request.port), cause as Refusal);
      if (!worker.channel.closed) {
        worker.channel.send({ type: 'socket-error', requestId: request.requestId, error: { message, code, errno, syscall } } satisfies PrimaryMessage);
      }
    }
  }

  /**
   * A listen the primary refused is said on stderr, whatever the app does with the error (express 5 hands it to
   * the listen callback, which usually prints "listening"): once per address and reason, not again for each worker
   * or restart that asks. A refusal because the worker is being stopped is no news.
   */
  private reportRefusal(worker: WorkerProcess, address: string, error: Refusal): void {
    if (error.code === 'ERR_PREFORK_NOT_RUNNING') return;
    const key = `${address} ${error.code ?? error.message}`;
    if (this.refusalsReported.has(key)) return;
    this.refusalsReported.add(key);
    const { id, pid } = worker.record;
    process.stderr.write(`prefork: worker ${id} (pid ${pid}) could not listen on ${address}: ${describeRefusal(error)}\n`);
  }

  /**
   * A worker asks for an address nobody configured. Workers whose privileges were dropped (user, group) may
   * not: the primary would open for them what they cannot. Others may, up to maxRequestedAddresses, and
   * never on a port another process holds.
   */
  private openRequested(config: ListenConfig, zeroPortCall: number): Promise<number> {
    const label = formatAddress(config.host, config.port);
    if (this.config.uid !== undefined || this.config.gid !== undefined) {
      return Promise.reject(notAllowed(label, 'not among the addresses the operator configured (listen, PREFORK_LISTEN, --listen), and workers run with dropped privileges'));
    }
    if (this.requestedAddresses >= this.config.maxRequestedAddresses) {
      return Promise.reject(notAllowed(label, `workers asked for more than ${this.config.maxRequestedAddresses} addresses (maxRequestedAddresses)`));
    }
    this.requestedAddresses += 1;
    const opening = this.sockets.ensureAddress(config, zeroPortCall);
    opening.catch(() => (this.requestedAddresses -= 1));
    return opening;
  }
}

/** The primary will not open `label` for a worker, and says why. */
function notAllowed(label: string, why: string): Refusal {
  return Object.assign(preforkError('ERR_PREFORK_ADDRESS_NOT_ALLOWED', `listen ${label}: ${why}`), { syscall: 'listen', notAllowed: why });
}

/** Why a listen was refused, in a user's words, with the code to search for. */
function describeRefusal(error: Refusal): string {
  if (error.notAllowed !== undefined) return `not allowed: ${error.notAllowed} (${error.code})`;
  switch (error.code) {
    case 'EADDRINUSE':
      return 'address in use (EADDRINUSE)';
    case 'EACCES':
      return 'permission denied (EACCES)';
    default:
      return error.code && !error.message.includes(error.code) ? `${error.message} (${error.code})` : error.message;
  }
}
