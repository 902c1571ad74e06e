// A worker's graceful drain: stop accepting, finish in-flight requests with `Connection: close`, run onShutdown.
import { closeSync } from 'node:fs';
import net from 'node:net';
import type { ServerResponse } from 'node:http';
import { debug } from '../debug';
import { context, type WorkerContext } from './context';

/** Keep-alive connections still idle this long after a shutdown began are closed. */
const IDLE_SWEEP_MS = 1000;

/**
 * Nothing is tracked per connection: at shutdown, an http server's open connections come from Node's own list (the
 * one closeIdleConnections() uses); each one's current response (Node keeps it as `socket._httpMessage`) gets
 * `Connection: close`, and a 'request' listener gives it to every later one. The servers are the worker's own list.
 */
const shutdownHandlers: Array<() => unknown> = [];
/** prefork's own last steps once drained (the final metrics), before the exit. */
const lastSteps: Array<() => Promise<void>> = [];
let shutdownStarted = false;
let exitTimer: NodeJS.Timeout | undefined;
let exitDeadline = Infinity;

/** The worker's servers, whichever copy of prefork adopted them; none outside a worker. */
function servers(): Set<net.Server> {
  return context()?.servers ?? new Set();
}

/** Drains `server` at shutdown and counts its open connections at each beat, until it closes. */
export function track(worker: WorkerContext, server: net.Server): void {
  if (worker.servers.has(server)) return;
  worker.servers.add(server);
  // 'close' comes once the server stopped listening and its last connection ended: nothing left to drain or count.
  server.once('close', () => worker.servers.delete(server));
}

/** An http(s) server's open connections, from Node's own list of them (Node ≥ 18.2); [] for another server. */
function httpSockets(server: net.Server): net.Socket[] {
  const key = Object.getOwnPropertySymbols(server).find((symbol) => symbol.description === 'http.server.connections');
  const list = key && (server as unknown as Record<symbol, { all?: () => Array<{ socket?: net.Socket | null }> }>)[key];
  if (!list || typeof list.all !== 'function') return [];
  return list.all().flatMap((parser) => (parser.socket ? [parser.socket] : []));
}

/**
 * Runs `handler` when this worker shuts down, after it stopped accepting and while in-flight requests
 * finish; the worker exits when every handler has settled and every connection has ended.
 */
export function onShutdown(handler: () => unknown): void {
  if (typeof handler !== 'function') throw new TypeError('onShutdown() expects a function');
  shutdownHandlers.push(handler);
}

export function beforeExitWhenDrained(step: () => Promise<void>): void {
  lastSteps.push(step);
}

/** http(s) servers: answer with `Connection: close` once a shutdown began, so keep-alive clients move on unharmed. */
function markConnectionClose(server: net.Server): void {
  if (typeof (server as { closeIdleConnections?: unknown }).closeIdleConnections !== 'function') return; // not http
  for (const socket of httpSockets(server)) {
    const response = (socket as net.Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (response && !response.headersSent) response.setHeader('connection', 'close');
  }
  server.prependListener('request', (_request: unknown, response: ServerResponse) => response.setHeader('connection', 'close'));
}

/**
 * Closes a server the app did not close. The app's own close() later (its SIGTERM handler, a graceful-shutdown
 * library) then gets what Node gives had it closed the server itself now, not ERR_SERVER_NOT_RUNNING.
 */
function closeBehindTheApp(server: net.Server, done: () => void): void {
  const appClose = server.close;
  let closed = false;
  net.Server.prototype.close.call(server, () => {
    closed = true;
    done();
  });
  server.close = function close(this: net.Server, callback?: (error?: Error) => void) {
    if (this.listening) return appClose.call(this, callback);
    if (callback) {
      if (closed) process.nextTick(callback);
      else this.once('close', () => callback());
    }
    return this;
  };
}

/**
 * Graceful shutdown: stop accepting (the primary's socket stays open, so connections queued there go to
 * the slot's next worker), let in-flight requests finish with `Connection: close`, close keep-alive
 * connections that stay idle, run the onShutdown handlers, exit 0 (or, `exitWhenDrained: false`, leave the
 * exit to an app that handles SIGTERM itself). Exits 1 anyway after `timeout` ms; a later call can only bring
 * that deadline forward.
 */
export function drain(timeout: number, { exitWhenDrained = true } = {}): void {
  const deadline = Date.now() + timeout;
  if (deadline < exitDeadline) {
    exitDeadline = deadline;
    clearTimeout(exitTimer);
    exitTimer = setTimeout(() => process.exit(1), timeout);
  }
  if (shutdownStarted) return;
  shutdownStarted = true;
  const draining = [...servers()];
  debug('worker: draining %d server(s), exit by %d ms at the latest', draining.length, timeout);
  const drained = draining.map((server) => {
    markConnectionClose(server);
    return new Promise<void>((resolve) => {
      // net.Server's close, not http's: http's also drops idle keep-alive connections at once, which resets
      // a client whose request is already on the way.
      if (server.listening) closeBehindTheApp(server, resolve);
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
    for (const server of servers()) (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
  }, IDLE_SWEEP_MS);
  const handlers = shutdownHandlers.map(async (handler) => {
    try {
      await handler();
    } catch (error) {
      process.stderr.write(`prefork: an onShutdown handler failed: ${(error as Error)?.stack ?? error}\n`);
    }
  });
  void Promise.all([...drained, ...handlers]).then(async () => {
    clearInterval(sweep);
    for (const step of lastSteps) await step().catch(() => {});
    debug(exitWhenDrained ? 'worker: drained; exiting' : "worker: drained; the app's SIGTERM handler decides when to exit");
    if (exitWhenDrained) process.exit(0);
    else exitTimer?.unref(); // the deadline stays, but no longer keeps a finished app alive
  });
}
