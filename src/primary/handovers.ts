// The primary's half of engine.io sticky sessions (the design is in src/worker/sticky.ts): a connection a
// worker hands over goes on at once to the worker that owns its session, or is closed; the primary keeps none.
//
// The one fd a worker may send rides with a 'handover' message, at most one per frame (the channel fails on more,
// and a worker that sends fds with anything else is killed, as before). The fd must be a connected TCP socket on
// the address the message names: anything else is a protocol breach. Each worker may hand over
// MAX_HANDOVERS_PER_SECOND; beyond that, as when the owner is gone, the connection is closed unanswered and its
// client reconnects.
import { closeSync } from 'node:fs';
import { native } from '../core/binding';
import { debug } from '../debug';
import { MAX_HANDOVERS_PER_SECOND } from '../limits';
import type { WorkerMessage } from '../protocol/messages';
import type { SocketTable } from './socket-table';
import type { WorkerProcess } from './worker-process';

type HandoverMessage = Extract<WorkerMessage, { type: 'handover' }>;

/** A worker's handovers in the current one-second window. */
interface Window {
  startedAt: number;
  count: number;
  dropped: number;
}

export class ConnectionHandovers {
  private readonly windows = new WeakMap<WorkerProcess, Window>();

  /**
   * `owner(slot, index)`: the slot's worker if it serves on address `index`, else null. `misbehaved` ends a worker
   * that broke the protocol.
   */
  constructor(
    private readonly sockets: SocketTable,
    private readonly owner: (slot: number, index: number) => WorkerProcess | null,
    private readonly misbehaved: (worker: WorkerProcess, problem: string) => void,
  ) {}

  /** Forwards `fds[0]` as the message says, or closes it; every fd given is closed here (the channel sent its own dup). */
  forward(from: WorkerProcess, message: HandoverMessage, fds: number[]): void {
    try {
      const problem = this.check(from, message, fds);
      if (problem) return this.misbehaved(from, problem);
      if (!this.withinRate(from)) return;
      const to = this.owner(message.slot, message.index);
      if (!to || to.channel.closed) {
        debug('primary: handover from worker %d to slot %d: no worker serves there; closed', from.record.id, message.slot);
        return;
      }
      to.channel.send({ type: 'handover', index: message.index, bytes: message.bytes }, fds);
    } catch (error) {
      debug('primary: handover from worker %d failed: %s', from.record.id, (error as Error).message);
    } finally {
      for (const fd of fds) closeSync(fd);
    }
  }

  private check(from: WorkerProcess, message: HandoverMessage, fds: number[]): string | null {
    if (fds.length !== 1) return `a handover with ${fds.length} fds`;
    if (message.slot === from.record.id) return 'a handover to its own slot';
    const address = this.sockets.addresses[message.index];
    if (!address) return `a handover on address ${message.index}, which it was never given`;
    let socket: ReturnType<typeof native.inspectSocket>;
    try {
      socket = native.inspectSocket(fds[0]);
    } catch {
      return 'a handover of an fd that is not a socket';
    }
    if (!socket.stream || socket.listening || !socket.connected || socket.family === 0 || socket.port !== address.port) {
      return `a handover of an fd that is not a connection on ${address.host}:${address.port}`;
    }
    return null;
  }

  /** Counts the handover; false (and one line per window) once the worker is over its rate. */
  private withinRate(from: WorkerProcess): boolean {
    const now = Date.now();
    let window = this.windows.get(from);
    if (!window || now - window.startedAt >= 1000) {
      window = { startedAt: now, count: 0, dropped: 0 };
      this.windows.set(from, window);
    }
    window.count += 1;
    if (window.count <= MAX_HANDOVERS_PER_SECOND) return true;
    if (window.dropped++ === 0) {
      process.stderr.write(`prefork: worker ${from.record.id} (pid ${from.record.pid}) hands over more than ${MAX_HANDOVERS_PER_SECOND} connections a second; closing the rest for this second\n`);
    }
    return false;
  }
}
