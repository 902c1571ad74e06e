// Every numeric limit and default that more than one module knows, named once.

/** The largest delay setTimeout accepts (ms); every timeout option is capped here. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** The largest value of a C int: fds, pids, backlogs. */
export const MAX_INT = 2 ** 31 - 1;

/** listen(2)'s queue length when none is given, as Node's server.listen(). */
export const DEFAULT_BACKLOG = 511;

/** supervise()'s `workers`, scale() and PREFORK_WORKERS. */
export const MAX_WORKERS = 1024;
/** Addresses workers may have the primary open on request (maxRequestedAddresses): each costs one fd per slot. */
export const DEFAULT_MAX_REQUESTED_ADDRESSES = 64;
export const MAX_REQUESTED_ADDRESSES = 4096;

/** The largest control-channel frame body: the protocol's messages are a few hundred bytes. */
export const MAX_FRAME_BYTES = 64 * 1024;
/**
 * Frames a worker may send the primary in one second. Its busiest honest second is a 16 MiB metrics answer (2,048
 * parts) or 1,024 listen(0) calls; a flood of well-formed frames would keep the primary busy for nothing.
 */
export const MAX_WORKER_FRAMES_PER_SECOND = 20_000;
/**
 * What the primary keeps queued for a worker that does not read its channel (past what the socket buffer holds):
 * fds (each answer to a socket request holds one: a worker asking for sockets it never read filled the primary's fd
 * table), and bytes (app messages: a worker stuck for a while under a stream of broadcasts must not be killed for
 * it, so the byte bound is generous; its heartbeat ends a stuck worker first).
 */
export const MAX_UNREAD_FDS = 1024;
export const MAX_UNREAD_BYTES = 16 * 1024 * 1024;
/** The largest app message (process.send, worker.send): JSON text or v8 bytes; in base64 it still fits one frame. */
export const MAX_MESSAGE_BYTES = 47 * 1024;

/**
 * A connection handed to another worker (engine.io sticky sessions) carries at most this many bytes already read:
 * base64 of it fits a frame. A longer request is answered by engine.io where it landed ("Session ID unknown").
 */
export const MAX_HANDOVER_BYTES = 45 * 1024;
/** Connections one worker may hand over per second; the primary closes the rest (their clients reconnect). */
export const MAX_HANDOVERS_PER_SECOND = 2000;

/** A worker that shut down on a signal of its own is replaced this late at the soonest (ms): the primary may get the same signal. */
export const SIGNAL_RESTART_DELAY_MS = 250;

/** restart.maxRestarts: a sanity bound. */
export const MAX_RESTARTS = 1_000_000;

/** Default number of distinct keys the shared counter table holds (supervise()'s `storeCapacity`). */
export const DEFAULT_STORE_CAPACITY = 65536;
export const MAX_STORE_CAPACITY = 16 * 1024 * 1024;
/** Counter keys longer than this are refused (longer than the table stores are kept as a SHA-256 digest). */
export const MAX_KEY_LENGTH = 4096;

/** shutdownTimeout and readyTimeout when not given (ms). */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10000;
export const DEFAULT_READY_TIMEOUT_MS = 30000;

/** heartbeatTimeout: gunicorn's default timeout; below the minimum a busy loop would be taken for a stuck one. */
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 30000;
export const MIN_HEARTBEAT_TIMEOUT_MS = 100;
/** recycle.maxMemory below this is less than a bare Node process uses. */
export const MIN_MAX_MEMORY = 16 * 1024 * 1024;
/** recycle.maxAge below this would recycle faster than a worker starts. */
export const MIN_MAX_AGE_MS = 1000;

/** The largest app-metrics answer a worker may send (JSON), and how long a scrape waits for each worker. */
export const MAX_METRICS_BYTES = 16 * 1024 * 1024;
export const WORKER_ANSWER_TIMEOUT_MS = 1000;
/** Warnings about metrics the primary drops stop after this many names (per worker, and in the merge): garbage cannot flood the log. */
export const MAX_WARNED_METRIC_NAMES = 100;
/**
 * Samples of exited workers' counters and histograms the primary keeps for series no live worker reports (a label
 * value per worker lifetime, say). Series a live worker reports are always kept, so their totals never go down.
 */
export const MAX_RETIRED_SAMPLES = 10_000;
