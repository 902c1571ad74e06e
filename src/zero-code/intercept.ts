// Register mode, in a worker: every TCP listen() of any net.Server (http, https, http2, net, frameworks)
// is served from the primary's per-slot socket for that address. Also PM2's process.send('ready').
import net from 'node:net';
import { debug } from '../debug';
import { formatAddress, listenConfig, type ListenConfig } from '../protocol/address';
import { adopt, ready, serverErrors, waitReadyWanted, workerId } from '../worker';
import { logPrefixWanted, prefixOutput } from './log-prefix';

const originalListen = net.Server.prototype.listen;

type Listen = { config: ListenConfig; backlog: number | undefined; callback: (() => void) | undefined; signal?: AbortSignal };

/**
 * The TCP port listens, parsed as net.Server.listen does; null for what passes through to Node unchanged:
 * Unix socket paths and Windows pipes (each worker binds its own), `{ fd }` and handles (the caller's own
 * socket), `exclusive: true` and `reusePort: true` (the worker binds its own, as under node:cluster), and
 * anything Node itself would reject (so its error is Node's).
 */
export function parseListenArguments(args: unknown[]): Listen | null {
  const callback = typeof args[args.length - 1] === 'function' ? (args[args.length - 1] as () => void) : undefined;
  const rest = callback ? args.slice(0, -1) : args;
  // Node's own rules: a value is a port when Number(value) >= 0 (' 3000', '0x0BB8' too); else a pipe name.
  const toNumber = (value: unknown): number | false => {
    const number = Number(value);
    return number >= 0 ? number : false;
  };
  const legalPort = (port: number | false): port is number => port !== false && Number.isInteger(port) && port <= 65535;
  const backlogFrom = (...candidates: unknown[]) => candidates.map(toNumber).find((value): value is number => value !== false && value > 0);
  const first = rest[0];
  if (typeof first === 'object' && first !== null) {
    const options = first as {
      port?: unknown; host?: unknown; backlog?: unknown; ipv6Only?: unknown; fd?: unknown; handle?: unknown; _handle?: unknown;
      exclusive?: unknown; reusePort?: unknown; signal?: AbortSignal;
    };
    if (options.handle || options._handle || (typeof options.fd === 'number' && options.fd >= 0)) return null;
    if (options.exclusive === true || options.reusePort === true) return null;
    if (options.port === undefined || options.port === null) return null; // a path, or an error Node reports
    const port = toNumber(options.port);
    if (!legalPort(port)) return null;
    const host = typeof options.host === 'string' && options.host !== '' ? options.host : undefined;
    const backlog = backlogFrom(options.backlog, rest[1], rest[2]);
    return { config: listenConfig(host, port, options.ipv6Only === true, backlog), backlog, callback, signal: options.signal };
  }
  if (typeof first === 'string' && toNumber(first) === false) return null; // a pipe path
  const port = first === undefined || first === null ? 0 : toNumber(first);
  if (!legalPort(port)) return null;
  const host = typeof rest[1] === 'string' && rest[1] !== '' ? rest[1] : undefined;
  const backlog = host === undefined ? backlogFrom(rest[1], rest[2]) : backlogFrom(rest[2]);
  return { config: listenConfig(host, port, false, backlog), backlog, callback };
}

function interceptedListen(this: net.Server, ...args: unknown[]): net.Server {
  const listen = parseListenArguments(args);
  // Pass-throughs, and a second listen(), which Node rejects with its own error.
  if (listen === null || this.listening) {
    debug('worker %d: listen() passed through to Node', workerId());
    return originalListen.apply(this, args as Parameters<typeof originalListen>);
  }
  if (listen.callback) this.once('listening', listen.callback);
  if (listen.signal) {
    // As Node: an aborted signal closes the server, even one aborted already or before the socket arrives.
    const close = () => (this.listening ? this.close() : this.once('listening', () => this.close()));
    if (listen.signal.aborted) process.nextTick(close);
    else listen.signal.addEventListener('abort', close, { once: true });
  }
  adopt(this, listen.config, listen.backlog).catch((error: NodeJS.ErrnoException & { address?: string; port?: number }) => {
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
 * PM2's habit: process.send('ready') means ready() where there is no IPC channel to send on. Only with
 * wait-ready: libraries take `typeof process.send === 'function'` for an IPC parent.
 */
function acceptPm2Ready(): void {
  if (typeof process.send === 'function' || !waitReadyWanted()) return;
  process.send = ((message: unknown, ...rest: unknown[]) => {
    if (message === 'ready') ready();
    const callback = rest.find((argument) => typeof argument === 'function') as (() => void) | undefined;
    if (callback) process.nextTick(callback);
    return true;
  }) as unknown as typeof process.send;
}

export function interceptListens(): void {
  if (net.Server.prototype.listen === interceptedListen) return;
  net.Server.prototype.listen = interceptedListen as typeof net.Server.prototype.listen;
  acceptPm2Ready();
  if (logPrefixWanted()) prefixOutput(workerId());
}
