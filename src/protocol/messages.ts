// What the primary and a worker say to each other: the worker's environment and the control-channel messages.
import type { AppMessageFrame } from './app-messages';

/** The fds a worker finds its control channel, the counter store and its liveness record on; listen sockets follow. */
export const CHANNEL_FD = 3;
export const STORE_FD = 4;
export const LIVENESS_FD = 5;
export const FIRST_LISTEN_FD = 6;

/** Environment variables the primary sets for a worker (PREFORK_WORKER_*; the user's settings have other names). */
export const ENV_WORKER_ID = 'PREFORK_WORKER_ID';
export const ENV_GENERATION = 'PREFORK_WORKER_GENERATION';
export const ENV_LISTEN = 'PREFORK_WORKER_SOCKETS'; // JSON: InheritedSocket[]
export const ENV_SHUTDOWN_TIMEOUT = 'PREFORK_WORKER_SHUTDOWN_TIMEOUT';
export const ENV_WAIT_READY = 'PREFORK_WORKER_WAIT_READY';
/** How the app's messages are serialised: 'json' or 'advanced' (supervise()'s `serialization`). */
export const ENV_SERIALIZATION = 'PREFORK_WORKER_SERIALIZATION';
/** The inode of the worker's channel socket: fd 3 must be that very socket, not any socketpair from the parent. */
export const ENV_CHANNEL_ID = 'PREFORK_WORKER_CHANNEL';
/** The counter store's capacity, when the primary shares one on STORE_FD. */
export const ENV_STORE = 'PREFORK_WORKER_STORE';
/** How often (ms) the worker's event loop writes its heartbeat into its liveness record (on LIVENESS_FD). */
export const ENV_HEARTBEAT_INTERVAL = 'PREFORK_WORKER_HEARTBEAT_INTERVAL';
/** Set by a worker to its pid for everything it starts: there the register preload does nothing. */
export const ENV_DESCENDANT_OF = 'PREFORK_DESCENDANT_OF';

/** Characters of metrics JSON per message: even if every one is escaped to 6 bytes, a frame stays under 64 KiB. */
export const METRICS_PART_CHARS = 8192;

/** A listen socket a worker inherits: its address and the fd it sits on in the worker. */
export interface InheritedSocket {
  /** The address's index in the primary's table (what 'listening' reports). */
  index: number;
  host: string;
  port: number;
  family: 'IPv4' | 'IPv6';
  fd: number;
  backlog: number;
  /** The address as the supervisor's `listen` option gave it: a worker's listen() call is matched against it. */
  configuredHost: string | null;
  configuredPort: number;
  /** For port 0: which of a worker's listen(0) calls (on that host) it serves, from 0; else 0. */
  zeroPortCall: number;
}

export interface SocketAddress {
  host: string;
  port: number;
  family: 'IPv4' | 'IPv6';
}

export type WorkerMessage =
  | { type: 'online' }
  /** `zeroPortCall`: for port 0, this is the worker's n-th listen(0) on that host (each gets its own port, as under node:cluster). */
  | { type: 'socket'; requestId: number; host: string | null; port: number; ipv6Only: boolean; backlog: number; zeroPortCall: number }
  /** The primary takes the address from its own table: a worker's word for it is not trusted. */
  | { type: 'listening'; index: number }
  /** The app closed (or listened again) before the address's socket came: the worker will not listen there. */
  | { type: 'abandoned'; index: number }
  | { type: 'ready' }
  /** It got SIGTERM or SIGINT itself (not from the primary) and is shutting down. */
  | { type: 'stopping'; signal: 'SIGTERM' | 'SIGINT' }
  | { type: 'stats'; requestId: number; memory: NodeJS.MemoryUsage; connections: number }
  /**
   * The app's prom-client metrics (getMetricsAsJSON() as JSON text), in parts that each fit a frame; `last`
   * ends it. requestId 0: sent unasked by a draining worker, its final counts.
   */
  | { type: 'metrics'; requestId: number; part: string; last: boolean }
  /** The app's process.send(message) (app-messages.ts). */
  | AppMessageFrame
  /**
   * Sent with one fd, a connection accepted on address `index` whose engine.io session belongs to slot `slot`:
   * the primary forwards it there. `bytes`: what this worker already read from it (base64).
   */
  | { type: 'handover'; slot: number; index: number; bytes: string };

export interface SerializedError {
  message: string;
  code?: string;
  errno?: number;
  syscall?: string;
  /** As on Node's own listen errors: the host and port that could not be listened on. */
  address?: string;
  port?: number;
}

export type PrimaryMessage =
  | { type: 'shutdown'; timeout: number }
  | { type: 'stats'; requestId: number }
  | { type: 'metrics'; requestId: number }
  /** The slot's socket for an address, sent with its fd (`socket.fd` is then the received fd's number). */
  | { type: 'socket'; requestId: number; socket: InheritedSocket }
  | { type: 'socket-error'; requestId: number; error: SerializedError }
  /** worker.send(message) or broadcast() in the primary: the worker's process 'message' event. */
  | AppMessageFrame
  /** Another worker's connection on address `index` for one of this worker's engine.io sessions, sent with its fd. */
  | { type: 'handover'; index: number; bytes: string };
