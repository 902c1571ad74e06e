// Register mode, in a worker: every TCP listen() of any net.Server (http, https, http2, net, frameworks)
// is served from the primary's per-slot socket for that address. (process.send, PM2's 'ready' too: worker/app-messages.ts.)
import net from 'node:net';
import { debug } from '../debug';
import { formatAddress, listenConfig, type ListenConfig } from '../protocol/address';
import { adopt, serverErrors, workerId } from '../worker';
import { logPrefixWanted, prefixOutput } from './log-prefix';

const originalListen = net.Server.prototype.listen;
const originalClose = net.Server.prototype.close;

type Listen = { config: ListenConfig; backlog: number | undefined; callback: (() => void) | undefined; signal?: AbortSignal };

/**
 * Listens waiting for their socket, by server (the app's view of net.Server's `_handle` and `_listeningId`).
 * `bound`: plain Node would have bound already. A listen without a host binds in the call, so a second
 * listen() throws and close() stops it for good; one with a host binds only after dns.lookup, so meanwhile a
 * second listen() replaces it and close() finds nothing running. A replaced or closed listen is abandoned:
 * when its socket comes, the server is left alone.
 */
const pendingListens = new WeakMap<net.Server, { bound: boolean }>();

/** Node's rule for a port (validatePort): a number, or a non-blank string, that is an integer from 0 to 65535. */
function isValidPort(port: unknown): port is number | string {
  if (typeof port === 'string' && port.trim() === '') return false;
  return (typeof port === 'number' || typeof port === 'string') && Number(port) === Number(port) >>> 0 && Number(port) <= 0xffff;
}

/** Node's toNumber: a number >= 0, else false (' 3000' and '0x0BB8' are numbers). */
function toNumber(value: unknown): number | false {
  const number = Number(value);
  return number >= 0 ? number : false;
}

/**
 * The TCP port listens, read as net.Server.prototype.listen reads its arguments (normalizeArgs, then its
 * checks in order); null for everything else, which goes to Node's own listen unchanged: Unix socket paths and
 * Windows pipes (each worker binds its own), `{ fd }` and handles (the caller's own socket), `exclusive` and
 * `reusePort: true` (the worker binds its own, as under node:cluster), and every argument Node rejects, so the
 * app gets Node's own error, thrown where Node throws it. Nothing here decides what is valid by itself.
 */
export function parseListenArguments(args: unknown[]): Listen | null {
  const callback = typeof args[args.length - 1] === 'function' ? (args[args.length - 1] as () => void) : undefined;
  const first = args[0];
  let options: {
    port?: unknown; host?: unknown; backlog?: unknown; ipv6Only?: unknown; fd?: unknown; handle?: unknown; _handle?: unknown;
    exclusive?: unknown; reusePort?: unknown; signal?: unknown;
  };
  if (typeof first === 'object' && first !== null) options = first;
  else if (typeof first === 'string' && toNumber(first) === false) return null; // a pipe path
  else options = { port: first, ...(typeof args[1] === 'string' && { host: args[1] }) };
  if (options.handle || options._handle || (typeof options.fd === 'number' && options.fd >= 0)) return null;
  if (options.exclusive || options.reusePort === true) return null;
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) return null; // Node's ERR_INVALID_ARG_TYPE
  // listen(), listen(cb), listen(undefined | null) and { port: undefined | null } mean port 0.
  const port = args.length === 0 || typeof first === 'function' || ('port' in options && options.port === undefined) || options.port === null ? 0 : options.port;
  // Not a number or string: a path, or Node's ERR_INVALID_ARG_VALUE. Out of range: Node's ERR_SOCKET_BAD_PORT.
  if (!isValidPort(port)) return null;
  // Node hands any truthy host to dns.lookup, which throws for a non-string.
  if (options.host && typeof options.host !== 'string') return null;
  const host = options.host ? (options.host as string) : undefined;
  // Node: options.backlog, else the first positive number among the second and third arguments.
  const backlog = [options.backlog, args[1], args[2]].map(toNumber).find((value): value is number => value !== false && value > 0);
  return { config: listenConfig(host, Number(port), options.ipv6Only === true, backlog), backlog, callback, signal: options.signal };
}

/**
 * Node's own ERR_SERVER_ALREADY_LISTEN (its error class, message, code and printed form): listen() throws it
 * before it reads anything else when the server has a handle, so asking on a bare object with one binds nothing.
 */
function alreadyListening(): Error {
  try {
    Reflect.apply(originalListen, Object.create(net.Server.prototype, { _handle: { value: {} } }), []);
  } catch (error) {
    return error as Error;
  }
  throw new Error('net.Server.prototype.listen did not refuse a server with a handle');
}

function interceptedListen(this: net.Server, ...args: unknown[]): net.Server {
  const pending = pendingListens.get(this);
  if (pending?.bound) throw alreadyListening(); // as Node: checked before the arguments
  pendingListens.delete(this); // any other listen() replaces one still waiting for its host
  const listen = parseListenArguments(args);
  // Pass-throughs, and a second listen(), which Node rejects with its own error.
  if (listen === null || this.listening) {
    debug('worker %d: listen() passed through to Node', workerId());
    return originalListen.apply(this, args as Parameters<typeof originalListen>);
  }
  if (listen.callback) this.once('listening', listen.callback);
  const mine = { bound: listen.config.host === undefined };
  pendingListens.set(this, mine);
  const stillWanted = () => pendingListens.get(this) === mine && pendingListens.delete(this);
  const { signal } = listen;
  if (signal) {
    // As Node: an aborted signal closes the server (on the next tick if aborted already), which abandons a
    // listen still waiting for its socket.
    const close = () => this.close();
    if (signal.aborted) process.nextTick(close);
    else {
      signal.addEventListener('abort', close, { once: true });
      this.once('close', () => signal.removeEventListener('abort', close));
    }
  }
  adopt(this, listen.config, listen.backlog, stillWanted).catch((error: NodeJS.ErrnoException & { address?: string; port?: number }) => {
    // The app closed or replaced this listen: its outcome is dropped, as Node drops a replaced lookup's. (A refusal
    // after close() is lost where Node, binding at once, would still emit it; the primary prints it anyway.)
    if (!stillWanted()) return;
    if (serverErrors.has(error)) return; // the server emitted it already
    // The primary's refusal (EADDRINUSE, ERR_PREFORK_…) reaches the app as Node's own listen errors do: an
    // 'error' event on the next tick, with the address and port.
    error.address ??= listen.config.host ?? '::';
    error.port ??= listen.config.port;
    debug('worker %d: listen %s failed: %s', workerId(), formatAddress(listen.config.host, listen.config.port), error.message);
    process.nextTick(() => this.emit('error', error));
  });
  return this;
}

/**
 * close() of a server whose listen is still waiting for its socket abandons that listen. If plain Node would
 * have bound already, close() ends a running server as far as the app can tell: no 'listening', and the
 * callback gets no error (Node's close() would pass ERR_SERVER_NOT_RUNNING, as the server has no handle).
 */
function interceptedClose(this: net.Server, callback?: (error?: Error) => void): net.Server {
  const pending = pendingListens.get(this);
  pendingListens.delete(this);
  if (!pending?.bound) return originalClose.call(this, callback);
  if (typeof callback === 'function') this.once('close', callback);
  return originalClose.call(this);
}

export function interceptListens(): void {
  if (net.Server.prototype.listen === interceptedListen) return;
  net.Server.prototype.listen = interceptedListen as typeof net.Server.prototype.listen;
  net.Server.prototype.close = interceptedClose;
  if (logPrefixWanted()) prefixOutput(workerId());
}
