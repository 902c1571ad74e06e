// Sticky sessions for engine.io (socket.io) in a worker: a request for another worker's session is handed to it.
//
// Why: socket.io's default transports start with HTTP long-polling, and every polling request (and the websocket
// upgrade) must reach the process that holds its session. The kernel spreads connections by their 4-tuple and
// cannot read `?sid=`; balance 'client-ip' pins every client behind one proxy to one worker. So:
// - Owner in the id. When the app loads engine.io, its Server.prototype.generateId is wrapped to put the slot
//   first: "<slot>.<engine.io's id>" ('.' is not in engine.io's id alphabet). Any worker reads the owner from
//   `?sid=` with no shared table. Ids an app makes itself (its own generateId) carry no slot: never handed over.
// - Only engine.io's requests pay. Server.prototype.handleRequest and handleUpgrade, which engine.io calls only
//   for its own path (/socket.io/), are wrapped: they read the sid engine.io parses anyway (its prepare(), cached
//   on the request). No sid (a handshake) or our own slot: engine.io's own code runs, as without prefork. Apps
//   without engine.io pay nothing per request (a require() hook only looks at modules whose name says engine.io).
// - Handing over. Another slot's sid: this worker rebuilds the bytes it has read (the request head from
//   method/url/rawHeaders, the body read to its end with Content-Length, or the upgrade's head bytes), sends
//   the connection's fd with them to the primary ('handover'), and drops its own copy of the fd (no FIN, no RST:
//   the fd in flight keeps the connection open). The primary checks it and forwards it to the owner at once
//   (src/primary/handovers.ts). The owner makes it a net.Socket, emits it as a 'connection' of its server on that
//   address, and feeds the bytes first, as @socket.io/sticky does. The connection then stays there: the next
//   keep-alive requests go straight to the owner.
// - When it cannot (TLS in the app, an HTTP/2 request, a pipelined request, a body over MAX_HANDOVER_BYTES, the
//   primary gone, the owner gone), engine.io answers where the request landed, "Session ID unknown", and the client
//   reconnects with a new session, as after a server restart.
import { closeSync } from 'node:fs';
import Module from 'node:module';
import net from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { debug } from '../debug';
import { MAX_HANDOVER_BYTES } from '../limits';
import type { PrimaryMessage } from '../protocol/messages';
import type { WorkerContext } from './context';

/** What we call on engine.io's Server (v4 to v6 have them all). */
interface EngineServer {
  prepare(req: IncomingMessage): void;
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  handleUpgrade(req: IncomingMessage, socket: net.Socket, head: Buffer): void;
  generateId(req: IncomingMessage): unknown;
  close?(): unknown;
}
type EngineRequest = IncomingMessage & { _query?: Record<string, unknown> };
/** Node's own fields of a socket that a server accepted. */
type AcceptedSocket = net.Socket & { _handle?: { fd?: number } | null; _httpMessage?: unknown; encrypted?: boolean; _server?: net.Server | null; server?: net.Server | null };

const SEPARATOR = '.';
const PATCHED = Symbol.for('prefork.sticky');
/** The app's engine.io servers, as their requests show them: closed at shutdown (closeEngineSessions). */
const engines = new Set<EngineServer>();

/**
 * At shutdown, after the app's turn: ends every engine.io session still open, as io.close() would (a long-poll
 * answered with a close packet, a websocket closed). A pending long-poll otherwise holds the drain until SIGKILL,
 * and its client reconnects to another worker either way. Nothing for an app that closed them itself.
 */
export function closeEngineSessions(): void {
  for (const engine of engines) {
    try {
      engine.close?.();
    } catch (error) {
      debug('engine.io close failed: %s', (error as Error).message);
    }
  }
  engines.clear();
}

/** The slot a session id names ("<slot>.<id>"), or null for an id without one. */
export function ownerOf(sid: unknown): number | null {
  if (typeof sid !== 'string') return null;
  const end = sid.indexOf(SEPARATOR);
  if (end < 1 || end > 4) return null;
  let slot = 0;
  for (let i = 0; i < end; i++) {
    const digit = sid.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return null;
    slot = slot * 10 + digit;
  }
  return slot;
}

/** In a worker: wraps engine.io's Server when the app loads it (once per copy of engine.io). */
export function stickySessions(worker: WorkerContext): void {
  const loader = Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown; [PATCHED]?: boolean };
  if (loader[PATCHED]) return;
  loader[PATCHED] = true;
  // An app that loaded engine.io before prefork (supervise() or listen() required after socket.io).
  for (const [file, loaded] of Object.entries(require.cache)) {
    if (/[\\/]engine\.io[\\/]build[\\/]engine\.io\.js$/.test(file)) patchEngine(worker, loaded?.exports);
  }
  const load = loader._load;
  loader._load = function (this: unknown, request: string, ...rest: unknown[]) {
    const exports = load.call(this, request, ...rest);
    // 'engine.io' from socket.io or the app; an absolute path when an ES module imports it.
    if (typeof request === 'string' && request.includes('engine.io')) patchEngine(worker, exports);
    return exports;
  };
}

function patchEngine(worker: WorkerContext, exports: unknown): void {
  const Server = (exports as { Server?: { prototype?: EngineServer & { [PATCHED]?: boolean } } } | null)?.Server;
  const proto = Server?.prototype;
  if (!proto || proto[PATCHED] || typeof proto.handleRequest !== 'function' || typeof proto.handleUpgrade !== 'function' ||
    typeof proto.generateId !== 'function' || typeof proto.prepare !== 'function') return;
  proto[PATCHED] = true;
  debug('worker %d: engine.io loaded: its session ids name this slot', worker.id);
  const { generateId, handleRequest, handleUpgrade } = proto;
  const named = (id: unknown) => (typeof id === 'string' ? `${worker.id}${SEPARATOR}${id}` : id);
  proto.generateId = function (this: EngineServer, req: IncomingMessage) {
    const id = generateId.call(this, req);
    return id instanceof Promise ? id.then(named) : named(id);
  };
  proto.handleRequest = function (this: EngineServer, req: EngineRequest, res: ServerResponse) {
    engines.add(this);
    this.prepare(req);
    const owner = ownerOf(req._query?.sid);
    if (owner === null || owner === worker.id || !handOverRequest(worker, owner, req, res, () => handleRequest.call(this, req, res))) {
      handleRequest.call(this, req, res);
    }
  };
  proto.handleUpgrade = function (this: EngineServer, req: EngineRequest, socket: net.Socket, head: Buffer) {
    engines.add(this);
    this.prepare(req);
    const owner = ownerOf(req._query?.sid);
    if (owner === null || owner === worker.id || !handOver(worker, owner, socket, [requestHead(req, null), head])) {
      handleUpgrade.call(this, req, socket, head);
    }
  };
}

/** The request line and headers as the client sent them; with a body length, a Content-Length for it instead of its framing. */
function requestHead(req: IncomingMessage, bodyLength: number | null): Buffer {
  let head = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (bodyLength !== null && (name === 'content-length' || name === 'transfer-encoding')) continue;
    head += `${raw[i]}: ${raw[i + 1]}\r\n`;
  }
  if (bodyLength !== null) head += `Content-Length: ${bodyLength}\r\n`;
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/**
 * Hands over the connection of an HTTP request (its body read first, if any); false when it cannot (engine.io then
 * answers here). With a body, true means it is ours: `fallback` answers if the handover fails after all.
 */
function handOverRequest(worker: WorkerContext, owner: number, req: IncomingMessage, res: ServerResponse, fallback: () => void): boolean {
  const socket = req.socket as AcceptedSocket;
  if (socket._httpMessage !== res || !canHandOver(worker, socket)) return false; // a pipelined request waits on an earlier answer
  if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) {
    return handOver(worker, owner, socket, [requestHead(req, null)]);
  }
  const body: Buffer[] = [];
  let length = 0;
  req.on('data', (chunk: Buffer) => {
    length += chunk.length;
    if (length <= MAX_HANDOVER_BYTES) body.push(chunk);
  });
  req.once('end', () => {
    if (length > MAX_HANDOVER_BYTES || !handOver(worker, owner, socket, [requestHead(req, length), ...body])) fallback();
  });
  return true;
}

function canHandOver(worker: WorkerContext, socket: AcceptedSocket): boolean {
  return !worker.shuttingDown && !worker.channel.closed && !socket.encrypted && typeof socket._handle?.fd === 'number' && socket._handle.fd >= 0;
}

/** Sends the connection's fd and the bytes read from it to the primary, then drops this worker's copy. */
function handOver(worker: WorkerContext, owner: number, socket: AcceptedSocket, read: Buffer[]): boolean {
  if (!canHandOver(worker, socket)) return false;
  const address = worker.sockets.find((inherited) => inherited.port === socket.localPort);
  const bytes = Buffer.concat(read);
  if (!address || bytes.length > MAX_HANDOVER_BYTES) return false;
  try {
    // The channel sends its own dup of the fd: closing ours below cannot end the connection.
    worker.channel.send({ type: 'handover', slot: owner, index: address.index, bytes: bytes.toString('base64') }, [socket._handle!.fd!]);
  } catch (error) {
    debug('worker %d: handover to slot %d failed: %s', worker.id, owner, (error as Error).message);
    return false;
  }
  debug('worker %d: handed a connection over to slot %d', worker.id, owner);
  socket.destroy(); // close(2) of our fd only: no FIN, no RST while another fd holds the connection
  return true;
}

/** The primary forwarded another worker's connection for one of our sessions: serve it as if we had accepted it. */
export function onHandover(worker: WorkerContext, message: Extract<PrimaryMessage, { type: 'handover' }>, fds: number[]): void {
  const [fd, ...extra] = fds;
  for (const other of extra) closeSync(other);
  if (fd === undefined) return;
  const address = worker.sockets.find((inherited) => inherited.index === message.index);
  const server = address && !worker.shuttingDown
    ? [...worker.servers].find((candidate) => candidate.listening && (candidate.address() as net.AddressInfo | null)?.port === address.port)
    : undefined;
  if (!server) {
    closeSync(fd); // its client reconnects
    return;
  }
  const socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: (server as net.Server & { allowHalfOpen?: boolean }).allowHalfOpen }) as AcceptedSocket;
  // As net.Server's own accept does, so getConnections(), close() and the heartbeat's count include it.
  const counted = server as net.Server & { _connections: number };
  counted._connections += 1;
  socket.server = server;
  socket._server = server;
  server.emit('connection', socket);
  socket.emit('data', Buffer.from(message.bytes, 'base64')); // before anything read from the fd: that comes on a later turn
}
