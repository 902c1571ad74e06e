// The worker's context: whether this process is a prefork worker, and its identity, sockets and control channel.
import { fstatSync } from 'node:fs';
import type net from 'node:net';
import { ControlChannel } from '../core/channel';
import type { LivenessRecord } from '../protocol/liveness-record';
import type { Serialization } from '../protocol/app-messages';
import { debug } from '../debug';
import { native } from '../core/binding';
import {
  CHANNEL_FD, ENV_CHANNEL_ID, ENV_DESCENDANT_OF, ENV_GENERATION, ENV_HEARTBEAT_INTERVAL, ENV_LISTEN, ENV_SERIALIZATION, ENV_SHUTDOWN_TIMEOUT, ENV_STORE, ENV_WAIT_READY, ENV_WORKER_ID, LIVENESS_FD, STORE_FD,
  type InheritedSocket, type WorkerMessage,
} from '../protocol/messages';

export interface WorkerContext {
  id: number;
  generation: number;
  /** Inherited at start, and those received later for addresses the primary opened on request. */
  sockets: InheritedSocket[];
  channel: ControlChannel;
  shutdownTimeout: number;
  waitReady: boolean;
  /** Keys of the primary's shared counter store (on STORE_FD), or null when it shares none. */
  storeCapacity: number | null;
  /** How often its event loop writes its heartbeat (ms). */
  heartbeatInterval: number;
  /** Its liveness record once mapped (kept here, so two loaded copies of prefork share it). */
  liveness: LivenessRecord | null;
  /**
   * The servers it listens on through prefork, until each closes: drained at shutdown, their open connections
   * read at each heartbeat. Here, not in a module, because the copy of prefork that adopted a server (the app's)
   * may not be the one that drains and beats (the CLI's).
   */
  servers: Set<net.Server>;
  /** Its servers' upgraded connections (true: a WebSocket), told to go away at shutdown. */
  upgraded: Map<net.Socket, boolean>;
  /** onShutdown() handlers, whichever copy of prefork took them. */
  shutdownHandlers: Array<() => unknown>;
  /** Set once its shutdown began: its inherited sockets are closed, and a listen() is refused. */
  shuttingDown: boolean;
  /** How the app's messages are serialised (supervise()'s `serialization`). */
  serialization: Serialization;
  /** What keeps the event loop alive through the (unref'd) channel: pending socket requests, the app's message listeners. */
  channelHolds: Set<string>;
}

/** When the native watchdog kills an orphaned worker (its primary died) whose JavaScript is stuck. */
export const ORPHAN_KILL_MS = 950;

// One context per process, even when two copies of prefork are loaded (an app's and the CLI's).
const CONTEXT_KEY = Symbol.for('prefork.worker');
type ContextHolder = { [CONTEXT_KEY]?: WorkerContext | null };

/**
 * The worker context, read once. The env marker alone is not enough: fd 3 must be the very socket the
 * primary made (its inode is in the env) and its peer our parent. The PREFORK_* variables are then removed,
 * so the app's own children are not taken for workers.
 */
export function context(): WorkerContext | null {
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
  const worker: WorkerContext = {
    id: Number(id),
    generation: Number(process.env[ENV_GENERATION]),
    sockets: JSON.parse(process.env[ENV_LISTEN] ?? '[]') as InheritedSocket[],
    channel: new ControlChannel(CHANNEL_FD, { ref: false }),
    shutdownTimeout: Number(process.env[ENV_SHUTDOWN_TIMEOUT]),
    waitReady: process.env[ENV_WAIT_READY] === '1',
    storeCapacity: process.env[ENV_STORE] ? Number(process.env[ENV_STORE]) : null,
    heartbeatInterval: Number(process.env[ENV_HEARTBEAT_INTERVAL]),
    liveness: null,
    servers: new Set(),
    upgraded: new Map(),
    shutdownHandlers: [],
    shuttingDown: false,
    serialization: process.env[ENV_SERIALIZATION] === 'advanced' ? 'advanced' : 'json',
    channelHolds: new Set(),
  };
  for (const name of [ENV_WORKER_ID, ENV_GENERATION, ENV_LISTEN, ENV_SERIALIZATION, ENV_SHUTDOWN_TIMEOUT, ENV_WAIT_READY, ENV_CHANNEL_ID, ENV_STORE, ENV_HEARTBEAT_INTERVAL]) {
    delete process.env[name];
  }
  process.env[ENV_DESCENDANT_OF] = String(process.pid);
  // Node marks inherited fds CLOEXEC only up to the first gap: a grandchild holding a listen socket would
  // join the reuseport group and never accept.
  native.setCloexec(CHANNEL_FD);
  native.startOrphanWatchdog(CHANNEL_FD, ORPHAN_KILL_MS);
  if (worker.storeCapacity !== null) native.setCloexec(STORE_FD);
  native.setCloexec(LIVENESS_FD);
  for (const socket of worker.sockets) native.setCloexec(socket.fd);
  holder[CONTEXT_KEY] = worker;
  return worker;
}

/** Sends to the primary; does nothing outside a worker or once the channel closed. */
export function send(message: WorkerMessage, fds?: number[]): void {
  const worker = context();
  if (worker && !worker.channel.closed) worker.channel.send(message, fds);
}

/** The channel keeps the event loop alive while anything holds it. */
export function holdChannel(worker: WorkerContext, holder: string, held: boolean): void {
  if (held) worker.channelHolds.add(holder);
  else worker.channelHolds.delete(holder);
  if (worker.channelHolds.size > 0) worker.channel.ref();
  else worker.channel.unref();
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
  if (context()) debug('worker %d: ready() called', context()?.id);
  send({ type: 'ready' });
}

/** Whether the primary waits for ready() (waitReady: true, --wait-ready, PREFORK_WAIT_READY). */
export function waitReadyWanted(): boolean {
  return context()?.waitReady ?? false;
}

/** Open connections now over the worker's servers: Node's own count of each (what getConnections() reports). */
export function openConnections(worker: WorkerContext): number {
  let open = 0;
  for (const server of worker.servers) open += (server as net.Server & { _connections?: number })._connections ?? 0;
  return open;
}
