// The worker side: knows it is a worker, adopts the primary's sockets into net.Servers, drains on shutdown.
import { closeSync, fstatSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { ServerResponse } from 'node:http';
import { native } from './binding';
import { ControlChannel } from './channel';
import { preforkError } from './errors';
import type { ListenConfig } from './options';
import {
  CHANNEL_FD, ENV_CHANNEL_ID, ENV_GENERATION, ENV_LISTEN, ENV_SHUTDOWN_TIMEOUT, ENV_STORE, ENV_WAIT_READY, ENV_WORKER_ID, STORE_FD,
  type InheritedSocket, type PrimaryMessage, type WorkerMessage,
} from './protocol';

interface WorkerContext {
  id: number;
  generation: number;
  sockets: InheritedSocket[];
  channel: ControlChannel;
  shutdownTimeout: number;
  waitReady: boolean;
  /** Keys of the primary's shared counter store (on STORE_FD), or null when it shares none. */
  storeCapacity: number | null;
}

/** How long an orphaned worker (its primary died) may drain before it exits… */
const ORPHAN_DRAIN_MS = 900;
/** …and when the native watchdog kills it if its JavaScript is stuck and cannot exit by itself. */
const ORPHAN_KILL_MS = 950;
/** A worker asked to drain by its primary exits by itself this long after the primary's SIGKILL was due. */
const SELF_EXIT_MARGIN_MS = 1000;
/** Keep-alive connections still idle this long after a shutdown began are closed. */
const IDLE_SWEEP_MS = 1000;

// One context per process, even when two copies of prefork are loaded (an app's and the CLI's).
const CONTEXT_KEY = Symbol.for('prefork.worker');
type ContextHolder = { [CONTEXT_KEY]?: WorkerContext | null };

const servers = new Map<net.Server, Set<net.Socket>>();
const socketRequests = new Map<number, { resolve: (socket: InheritedSocket) => void; reject: (error: Error) => void }>();
let nextRequestId = 1;
const shutdownHandlers: Array<() => unknown> = [];
let shutdownStarted = false;
let exitTimer: NodeJS.Timeout | undefined;
let exitDeadline = Infinity;

/**
 * The worker context, set up on first use. The env marker alone is not enough: fd 3 must be the very
 * socket the primary made (its inode is in the env) and its peer our parent. The PREFORK_* variables are
 * then removed, so the app's own children are not taken for workers.
 */
function context(): WorkerContext | null {
  const holder = globalThis as ContextHolder;
  if (holder[CONTEXT_KEY] !== undefined) return holder[CONTEXT_KEY];
  holder[CONTEXT_KEY] = null;
  const id = process.env[ENV_WORKER_ID];
  if (id === undefined) return null;
  const peer = native.peerPid(CHANNEL_FD);
  if (peer <= 0 || String(fstatSync(CHANNEL_FD).ino) !== process.env[ENV_CHANNEL_ID]) return null;
  if (peer !== process.ppid) {
    process.stderr.write('prefork: this worker\'s primary is gone; exiting\n');
    process.exit(1);
  }
  const sockets = JSON.parse(process.env[ENV_LISTEN] ?? '[]') as InheritedSocket[];
  const found: WorkerContext = {
    id: Number(id),
    generation: Number(process.env[ENV_GENERATION]),
    sockets,
    channel: new ControlChannel(CHANNEL_FD, { ref: false }),
    shutdownTimeout: Number(process.env[ENV_SHUTDOWN_TIMEOUT]),
    waitReady: process.env[ENV_WAIT_READY] === '1',
    storeCapacity: process.env[ENV_STORE] ? Number(process.env[ENV_STORE]) : null,
  };
  for (const name of [ENV_WORKER_ID, ENV_GENERATION, ENV_LISTEN, ENV_SHUTDOWN_TIMEOUT, ENV_WAIT_READY, ENV_CHANNEL_ID, ENV_STORE]) {
    delete process.env[name];
  }
  // Node marks inherited fds CLOEXEC only up to the first gap: a grandchild holding a listen socket would
  // join the reuseport group and never accept.
  native.setCloexec(CHANNEL_FD);
  native.startOrphanWatchdog(CHANNEL_FD, ORPHAN_KILL_MS);
  if (found.storeCapacity !== null) native.setCloexec(STORE_FD);
  for (const socket of sockets) native.setCloexec(socket.fd);
  holder[CONTEXT_KEY] = found;

  found.channel.on('message', (message: PrimaryMessage, fds: number[]) => {
    if (message.type === 'socket' || message.type === 'socket-error') return onSocketReply(found, message, fds);
    for (const fd of fds) closeSync(fd);
    // The primary SIGKILLs at `timeout`; our own deadline is only the fallback if it cannot.
    if (message.type === 'shutdown') shutdown(message.timeout + SELF_EXIT_MARGIN_MS);
    else if (message.type === 'stats') void sendStats(found, message.requestId);
  });
  found.channel.on('close', () => {
    for (const request of socketRequests.values()) request.reject(preforkError('ERR_PREFORK_CHANNEL_CLOSED', 'The primary is gone'));
    socketRequests.clear();
    shutdown(ORPHAN_DRAIN_MS); // EOF: the primary is gone
  });
  found.channel.on('error', (error: Error) => process.stderr.write(`prefork: worker ${found.id}: ${error.message}\n`));
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => shutdown(found.shutdownTimeout));
  send({ type: 'online' });
  return found;
}

function send(message: WorkerMessage): void {
  const found = context();
  if (found && !found.channel.closed) found.channel.send(message);
}

/** True in a process started by a prefork primary (with a real control channel to it). */
export function isWorker(): boolean {
  return context() !== null;
}

/** True in any process that is not a prefork worker: the primary, or a plain `node app.js`. */
export function isPrimary(): boolean {
  return context() === null;
}

/** The capacity of the counter store the primary shares on STORE_FD, or null (not a worker, or none shared). */
export function inheritedStoreCapacity(): number | null {
  return context()?.storeCapacity ?? null;
}

/** This worker's slot, 0 … workers-1; null outside a worker. */
export function workerId(): number | null {
  return context()?.id ?? null;
}

/** 1 for a slot's first worker, +1 for each replacement; null outside a worker. */
export function generation(): number | null {
  return context()?.generation ?? null;
}

/** Tells the primary this worker is ready (needed with `waitReady: true`). Does nothing outside a worker. */
export function ready(): void {
  send({ type: 'ready' });
}

/**
 * Runs `handler` when this worker shuts down, after it stopped accepting and while in-flight requests
 * finish; the worker exits when every handler has settled and every connection has ended.
 */
export function onShutdown(handler: () => unknown): void {
  if (typeof handler !== 'function') throw new TypeError('onShutdown() expects a function');
  shutdownHandlers.push(handler);
}

/** In a worker: serve `server` from the primary's socket for `address`. Resolves once it is listening. */
/**
 * In a worker: serve `server` from the primary's socket for `address`, inherited or, for an address the
 * primary did not open in advance, asked for over the control channel. Resolves once it is listening.
 * Errors the server emitted itself are marked in `serverErrors`, so a caller can avoid reporting them twice.
 */
export async function adopt(server: net.Server, address: ListenConfig, backlog: number | undefined): Promise<net.Server> {
  const found = context();
  if (!found) throw preforkError('ERR_PREFORK_NOT_WORKER', 'adopt() needs a prefork worker');
  const socket = found.sockets.find((candidate) => matches(candidate, address)) ?? (await requestSocket(found, address));
  const fd = native.dupCloexec(socket.fd); // server.close() closes its fd: every server gets its own
  track(server);
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
      send({ type: 'listening', index: socket.index, address: { host: socket.host, port: socket.port, family: socket.family } });
      resolve(server);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    // backlog positionally: listen({ fd, backlog }) ignores it.
    server.listen({ fd }, backlog ?? socket.backlog);
  });
}

export const serverErrors = new WeakSet<Error>();

function requestSocket(found: WorkerContext, address: ListenConfig): Promise<InheritedSocket> {
  if (found.channel.closed) return Promise.reject(preforkError('ERR_PREFORK_CHANNEL_CLOSED', 'The primary is gone: no socket to listen on'));
  const requestId = nextRequestId++;
  found.channel.ref(); // the channel is unref'd: without this, a worker waiting for its socket would exit
  return new Promise<InheritedSocket>((resolve, reject) => {
    socketRequests.set(requestId, { resolve, reject });
    found.channel.send({
      type: 'socket', requestId, host: address.host ?? null, port: address.port, ipv6Only: address.ipv6Only, backlog: address.backlog,
    } satisfies WorkerMessage);
  }).finally(() => {
    if (socketRequests.size === 0) found.channel.unref();
  });
}

function onSocketReply(found: WorkerContext, message: PrimaryMessage, fds: number[]): void {
  if (message.type !== 'socket' && message.type !== 'socket-error') return;
  const request = socketRequests.get(message.requestId);
  socketRequests.delete(message.requestId);
  if (message.type === 'socket-error') {
    const { message: text, ...details } = message.error;
    request?.reject(Object.assign(new Error(text), details));
    return;
  }
  const socket = { ...message.socket, fd: fds[0] };
  found.sockets.push(socket); // kept for this worker's next server on the same address, closed on shutdown
  request?.resolve(socket);
}

function matches(socket: InheritedSocket, address: ListenConfig): boolean {
  if (address.port !== socket.configuredPort && address.port !== socket.port) return false;
  return address.host === undefined || address.host === socket.configuredHost || address.host === socket.host;
}

/** http(s) servers: answer with `Connection: close` once a shutdown began, so keep-alive clients move on unharmed. */
/**
 * Servers to drain, and their open connections: per connection, not per request, so serving costs
 * nothing extra. At shutdown a connection's current response (Node keeps it as `socket._httpMessage`)
 * gets `Connection: close`, and a 'request' listener gives it to every later one.
 */
function track(server: net.Server): void {
  if (servers.has(server)) return;
  const sockets = new Set<net.Socket>();
  servers.set(server, sockets);
  // For TLS, the socket that carries the HTTP exchange is the TLS one.
  server.on(server instanceof tls.Server ? 'secureConnection' : 'connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
}

function markConnectionClose(server: net.Server, sockets: Set<net.Socket>): void {
  if (typeof (server as { closeIdleConnections?: unknown }).closeIdleConnections !== 'function') return; // not http
  for (const socket of sockets) {
    const response = (socket as net.Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (response && !response.headersSent) response.setHeader('connection', 'close');
  }
  server.prependListener('request', (_request: unknown, response: ServerResponse) => response.setHeader('connection', 'close'));
}

/**
 * Graceful shutdown: stop accepting (the primary's socket stays open, so connections queued there go to
 * the slot's next worker), let in-flight requests finish with `Connection: close`, close keep-alive
 * connections that stay idle, run the onShutdown handlers, exit 0. Exits anyway after `timeout` ms.
 */
function shutdown(timeout: number): void {
  const deadline = Date.now() + timeout;
  if (deadline < exitDeadline) {
    exitDeadline = deadline;
    clearTimeout(exitTimer);
    exitTimer = setTimeout(() => process.exit(1), timeout);
  }
  if (shutdownStarted) return;
  shutdownStarted = true;
  const drained = [...servers].map(([server, sockets]) => {
    markConnectionClose(server, sockets);
    return new Promise<void>((resolve) => {
      // net.Server's close, not http's: http's also drops idle keep-alive connections at once, which resets
      // a client whose request is already on the way.
      if (server.listening) net.Server.prototype.close.call(server, () => resolve());
      else resolve();
    });
  });
  // Our inherited copies too: once the primary has closed its own (shutdown, scale down), the socket leaves
  // the kernel's balancing now rather than queueing connections until this worker exits.
  for (const socket of context()?.sockets ?? []) {
    try {
      closeSync(socket.fd);
    } catch {
      // closed already
    }
  }
  const sweep = setInterval(() => {
    for (const server of servers.keys()) (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
  }, IDLE_SWEEP_MS);
  const handlers = shutdownHandlers.map(async (handler) => {
    try {
      await handler();
    } catch (error) {
      process.stderr.write(`prefork: an onShutdown handler failed: ${(error as Error)?.stack ?? error}\n`);
    }
  });
  void Promise.all([...drained, ...handlers]).then(() => {
    clearInterval(sweep);
    process.exit(0);
  });
}

async function sendStats(found: WorkerContext, requestId: number): Promise<void> {
  const counts = await Promise.all(
    [...servers.keys()].map((server) => new Promise<number>((resolve) => server.getConnections((error, count) => resolve(error ? 0 : count)))),
  );
  send({ type: 'stats', requestId, memory: process.memoryUsage(), connections: counts.reduce((sum, count) => sum + count, 0) });
}

// Set up at load, so a worker says 'online' and notices its primary's death even before it listens.
context();
