// A worker's one shutdown sequence, whoever asks for it (its primary, the primary's loss, a signal sent to the
// worker itself): stop accepting, finish in-flight requests, give the app's own signal listeners their turn,
// close WebSockets with "going away", exit with the app's code.
import { closeSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { debug } from '../debug';
import { appListensFor, deliverToApp, type ShutdownSignal } from './app-signals';
import { context, type WorkerContext } from './context';
import { closeEngineSessions } from './sticky';

/** Keep-alive connections still idle this often after a shutdown began are closed. */
const IDLE_SWEEP_MS = 1000;
/** How often the shutdown looks whether in-flight requests are done. */
const IN_FLIGHT_POLL_MS = 25;
/** How long a WebSocket told "going away" (or another upgraded connection, ended) may take to close before it is destroyed. */
const GOING_AWAY_MS = 1000;
/** RFC 6455: an endpoint going away, as a server going down. */
const WS_GOING_AWAY = 1001;

/** prefork's own last steps once requests are done (the final metrics), before the app's code can exit. */
const lastSteps: Array<() => Promise<void>> = [];
let started = false;
/** The app's listeners have been called: a signal from now on reaches them (or ends the process) as under plain Node. */
let appHadItsTurn = false;
/** SIGTERMs and SIGINTs this worker got itself. */
let signalsReceived = 0;
let exitTimer: NodeJS.Timeout | undefined;
let exitDeadline = Infinity;

/**
 * Drains `server` at shutdown and counts its open connections at each beat, until it closes. An http server's
 * upgraded connections (WebSockets) leave Node's list of its connections: they are watched from the 'upgrade'
 * event on, once the app listens to it (a listener of ours alone would change what Node does with an upgrade).
 */
export function track(worker: WorkerContext, server: net.Server): void {
  if (worker.servers.has(server)) return;
  worker.servers.add(server);
  // 'close' comes once the server stopped listening and its last connection ended: nothing left to drain or count.
  server.once('close', () => worker.servers.delete(server));
  if (!isHttp(server)) return;
  const watch = () => server.prependListener('upgrade', (request: IncomingMessage, socket: net.Socket) => {
    worker.upgraded.set(socket, request.headers.upgrade?.toLowerCase() === 'websocket');
    socket.once('close', () => worker.upgraded.delete(socket));
  });
  if (server.listenerCount('upgrade') > 0) return void watch();
  server.on('newListener', function watchOnce(event: string | symbol) {
    if (event !== 'upgrade') return;
    server.off('newListener', watchOnce);
    watch();
  });
}

const isHttp = (server: net.Server): boolean => typeof (server as { closeIdleConnections?: unknown }).closeIdleConnections === 'function';

/** An http(s) server's open connections that are not upgraded, from Node's own list of them (Node ≥ 18.2); [] for another server. */
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
  context()?.shutdownHandlers.push(handler);
}

export function beforeAppsTurn(step: () => Promise<void>): void {
  lastSteps.push(step);
}

/** http(s) servers: answer with `Connection: close` once a shutdown began, so keep-alive clients move on unharmed. */
function markConnectionClose(server: net.Server): void {
  for (const socket of httpSockets(server)) {
    const response = (socket as net.Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (response && !response.headersSent) response.setHeader('connection', 'close');
  }
  server.prependListener('request', (_request: unknown, response: ServerResponse) => response.setHeader('connection', 'close'));
}

/**
 * Stops accepting with net.Server's close, not http's (http's also drops idle keep-alive connections at once,
 * which resets a client whose request is already on the way). The app's own close() later (its SIGTERM listener,
 * Fastify's or Nest's close) then gets what Node gives had it closed the server itself now, not
 * ERR_SERVER_NOT_RUNNING. Resolves once the server's last connection ended.
 */
function stopAccepting(server: net.Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  const appClose = server.close;
  let closed = false;
  const done = new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => {
    closed = true;
    resolve();
  }));
  server.close = function close(this: net.Server, callback?: (error?: Error) => void) {
    if (this.listening) return appClose.call(this, callback);
    if (callback) {
      if (closed) process.nextTick(callback);
      else this.once('close', () => callback());
    }
    return this;
  };
  return done;
}

/** Every WebSocket still open gets a close frame, 1001 "going away" (its client reconnects to another worker); other upgraded connections are ended. */
function sendGoingAway(worker: WorkerContext): void {
  for (const [socket, isWebSocket] of worker.upgraded) {
    // The `ws` library (socket.io's engine too) keeps its WebSocket on the socket: its close() makes the handshake.
    const key = Object.getOwnPropertySymbols(socket).find((symbol) => symbol.description === 'websocket');
    const webSocket = key && (socket as unknown as Record<symbol, { close?: (code: number, reason: string) => void }>)[key];
    if (webSocket && typeof webSocket.close === 'function') {
      webSocket.close(WS_GOING_AWAY, 'server going away');
    } else {
      const reason = Buffer.from('server going away');
      if (isWebSocket) socket.write(Buffer.concat([Buffer.from([0x88, 2 + reason.length, WS_GOING_AWAY >> 8, WS_GOING_AWAY & 0xff]), reason]));
      socket.end();
    }
    setTimeout(() => socket.destroy(), GOING_AWAY_MS).unref();
  }
}

/**
 * Resolves once no server has a connection that is not upgraded (a request in flight, or a keep-alive one not yet
 * closed), or at `until` (ms since the epoch) if some never end (server-sent events, long polls).
 */
async function requestsDone(servers: net.Server[], until: number): Promise<void> {
  while (Date.now() < until && servers.some((server) => httpSockets(server).length > 0)) {
    await new Promise((resolve) => setTimeout(resolve, IN_FLIGHT_POLL_MS));
  }
}

/** The deadline: exit 1 after `timeout` ms whatever is still running. A later call can only bring it forward. */
function exitBy(timeout: number): void {
  const deadline = Date.now() + timeout;
  if (deadline >= exitDeadline) return;
  exitDeadline = deadline;
  const wasRefed = exitTimer?.hasRef() ?? true;
  clearTimeout(exitTimer);
  exitTimer = setTimeout(() => {
    process.stderr.write(`prefork: worker ${context()?.id} (pid ${process.pid}) had not finished its shutdown after ${timeout} ms; exiting\n`);
    process.exit(1);
  }, timeout);
  if (!wasRefed) exitTimer.unref();
}

/**
 * The shutdown, once; a later call can only bring its deadline (`timeout` ms) forward. `signal` is what the app's
 * listeners are given. True if this call started it.
 */
export function shutdown(signal: ShutdownSignal, timeout: number): boolean {
  exitBy(timeout);
  if (started) return false;
  started = true;
  void runShutdown(signal);
  return true;
}

/**
 * A SIGTERM or SIGINT sent to this worker. The first is the shutdown, whenever it comes: a group's signal (Ctrl-C,
 * systemd) also reaches the primary, whose request may start the shutdown first, and the app's turn stands for
 * both. A later one, once the app had its turn, gets what Node would do with it (the app's listeners, or the end
 * of the process). True if it started the shutdown.
 */
export function onShutdownSignal(signal: ShutdownSignal, timeout: number): boolean {
  signalsReceived += 1;
  if (signalsReceived === 1) return shutdown(signal, timeout);
  if (appHadItsTurn) deliverToApp(signal);
  return false;
}

async function runShutdown(signal: ShutdownSignal): Promise<void> {
  const worker = context();
  if (!worker) return;
  worker.shuttingDown = true;
  // 1. Stop accepting. The primary's socket stays open, so connections queued there go to the slot's next worker.
  const servers = [...worker.servers];
  debug('worker %d: shutting down (%s): %d server(s), exit by %d ms at the latest', worker.id, signal, servers.length, exitDeadline - Date.now());
  const closed = servers.map((server) => {
    if (isHttp(server)) markConnectionClose(server);
    return stopAccepting(server);
  });
  // Our inherited copies too: once the primary has closed its own (shutdown, scale down), the socket leaves
  // the kernel's balancing now rather than queueing connections until this worker exits.
  for (const socket of worker.sockets) {
    try {
      closeSync(socket.fd);
    } catch {
      // closed already
    }
  }
  const sweep = setInterval(() => {
    for (const server of worker.servers) (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
  }, IDLE_SWEEP_MS);
  const handlers = worker.shutdownHandlers.map(async (handler) => {
    try {
      await handler();
    } catch (error) {
      process.stderr.write(`prefork: an onShutdown handler failed: ${(error as Error)?.stack ?? error}\n`);
    }
  });
  // 2. In-flight requests finish; each answers with `Connection: close`, idle keep-alive connections are closed.
  // A response that never ends (server-sent events) is the app's to end: its turn comes at half the drain time.
  await requestsDone(servers, Date.now() + (exitDeadline - Date.now()) / 2);
  for (const step of lastSteps) await step().catch(() => {});
  // 3. The app's turn: its own listeners (its server.close(), its pool's end()), and what they return is waited for.
  const appExits = appListensFor(signal);
  debug('worker %d: requests done; %s', worker.id, appExits ? `the app's ${signal} listeners run` : 'the app has no listener');
  appHadItsTurn = true;
  const returned = appExits ? deliverToApp(signal) : [];
  // 4. Then WebSockets still open are told to go away, engine.io sessions (socket.io's long-polls) are closed, and
  // what is left is waited for.
  await new Promise((resolve) => setImmediate(resolve));
  sendGoingAway(worker);
  closeEngineSessions();
  await Promise.all([...closed, ...handlers, ...returned]);
  clearInterval(sweep);
  if (!appExits) {
    debug('worker: drained; exiting');
    process.exit();
  }
  // The app's own exit comes when it calls process.exit or its event loop empties; the deadline stays, but no
  // longer keeps a finished app alive.
  debug("worker: drained; the app's listeners decide when to exit");
  exitTimer?.unref();
}
