// A worker serves a net.Server from the primary's socket for an address: inherited, or asked for on the channel.
import { closeSync } from 'node:fs';
import type net from 'node:net';
import { native } from '../core/binding';
import { preforkError } from '../errors';
import { addressMatches, type ListenConfig } from '../protocol/address';
import type { InheritedSocket, PrimaryMessage, WorkerMessage } from '../protocol/messages';
import { debug } from '../debug';
import { context, holdChannel, send, type WorkerContext } from './context';
import { track } from './shutdown';
import { countServed } from './heartbeat';

/** How many listen(0) calls this worker made per host: the n-th gets its own port, as under node:cluster. */
const zeroPortCalls = new Map<string, number>();

const socketRequests = new Map<number, { resolve: (socket: InheritedSocket) => void; reject: (error: Error) => void }>();
let nextRequestId = 1;

/** Errors the server emitted itself, so a caller can avoid reporting them twice. */
export const serverErrors = new WeakSet<Error>();

/**
 * In a worker: serve `server` from the primary's socket for `address`, inherited or, for an address the
 * primary did not open in advance, asked for over the control channel. Resolves once it is listening.
 * `stillWanted` is asked once the socket is in hand: false (the app closed the server, or listened again,
 * meanwhile) leaves the server alone and resolves at once; the socket stays with the worker for a later listen.
 */
export async function adopt(server: net.Server, address: ListenConfig, backlog: number | undefined, stillWanted = () => true): Promise<net.Server> {
  const worker = context();
  if (!worker) throw preforkError('ERR_PREFORK_NOT_WORKER', 'adopt() needs a prefork worker');
  if (worker.shuttingDown) throw notRunning(address);
  let zeroPortCall = 0;
  if (address.port === 0) {
    const host = `${address.host ?? ''}|${address.ipv6Only}`;
    zeroPortCall = zeroPortCalls.get(host) ?? 0;
    zeroPortCalls.set(host, zeroPortCall + 1);
  }
  const inherited = worker.sockets.find((candidate) => addressMatches(candidate, address.host, address.port, zeroPortCall));
  debug('worker %d: listen %s%s: %s', worker.id, address.label, address.port === 0 ? ` (call ${zeroPortCall})` : '', inherited ? `inherited fd ${inherited.fd}` : 'asking the primary');
  const socket = inherited ?? (await requestSocket(worker, address, zeroPortCall));
  if (worker.shuttingDown) throw notRunning(address); // the reply came after the shutdown closed its sockets
  if (!stillWanted()) {
    debug('worker %d: listen %s abandoned by the app before its socket came', worker.id, address.label);
    send({ type: 'abandoned', index: socket.index }); // so the primary does not wait for it to be ready
    return server;
  }
  const fd = native.dupCloexec(socket.fd); // server.close() closes its fd: every server gets its own
  track(worker, server);
  countServed(worker, server);
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => {
      serverErrors.add(error);
      server.off('listening', onListening);
      try {
        closeSync(fd);
      } catch {
        // Node closed it already
      }
      reject(error);
    };
    const onListening = () => {
      server.off('error', onError);
      debug('worker %d: listening on %s:%d (fd %d)', worker.id, socket.host, socket.port, fd);
      send({ type: 'listening', index: socket.index });
      resolve(server);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    // backlog positionally: listen({ fd, backlog }) ignores it.
    server.listen({ fd }, backlog ?? socket.backlog);
  });
}

/** A listen() once the worker's shutdown began: its sockets are closed (or about to be). */
function notRunning(address: ListenConfig): Error {
  return Object.assign(preforkError('ERR_PREFORK_NOT_RUNNING', `listen ${address.label}: this worker is shutting down`), { syscall: 'listen' });
}

function requestSocket(worker: WorkerContext, address: ListenConfig, zeroPortCall: number): Promise<InheritedSocket> {
  if (worker.channel.closed) return Promise.reject(preforkError('ERR_PREFORK_CHANNEL_CLOSED', 'The primary is gone: no socket to listen on'));
  const requestId = nextRequestId++;
  holdChannel(worker, 'socket requests', true); // the channel is unref'd: without this, a worker waiting for its socket would exit
  return new Promise<InheritedSocket>((resolve, reject) => {
    socketRequests.set(requestId, { resolve, reject });
    worker.channel.send({
      type: 'socket', requestId, host: address.host ?? null, port: address.port, ipv6Only: address.ipv6Only, backlog: address.backlog, zeroPortCall,
    } satisfies WorkerMessage);
  }).finally(() => {
    if (socketRequests.size === 0) holdChannel(worker, 'socket requests', false);
  });
}

/** The primary's answer to a socket request: the socket (its fd received with the message) or an error. */
export function onSocketReply(worker: WorkerContext, message: Extract<PrimaryMessage, { type: 'socket' | 'socket-error' }>, fds: number[]): void {
  const request = socketRequests.get(message.requestId);
  socketRequests.delete(message.requestId);
  if (message.type === 'socket-error') {
    const { message: text, ...details } = message.error;
    debug('worker %d: socket request %d refused: %s', worker.id, message.requestId, text);
    request?.reject(Object.assign(new Error(text), details));
    return;
  }
  if (worker.shuttingDown) {
    for (const fd of fds) closeSync(fd);
    request?.reject(preforkError('ERR_PREFORK_NOT_RUNNING', 'This worker is shutting down'));
    return;
  }
  const socket = { ...message.socket, fd: fds[0] };
  debug('worker %d: socket request %d answered: %s:%d on fd %d', worker.id, message.requestId, socket.host, socket.port, socket.fd);
  worker.sockets.push(socket); // kept for this worker's next server on the same address, closed on shutdown
  request?.resolve(socket);
}

/** The channel closed: no answer will come. */
export function failSocketRequests(): void {
  for (const request of socketRequests.values()) request.reject(preforkError('ERR_PREFORK_CHANNEL_CLOSED', 'The primary is gone'));
  socketRequests.clear();
}
