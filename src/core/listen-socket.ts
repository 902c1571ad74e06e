// createListenSocket(): validate, resolve the host name, and have the core open an SO_REUSEPORT socket.
import { closeSync } from 'node:fs';
import { isIP } from 'node:net';
import { native } from './binding';
import { invalidValue } from '../errors';
import { checkBoolean, checkInteger, checkOptionNames, checkOptionsObject, checkString } from '../validate';
import { DEFAULT_BACKLOG, MAX_INT } from '../limits';

export interface ListenSocketOptions {
  /** Address or host name to bind. Default '::' (all addresses, IPv4 too unless ipv6Only), or '0.0.0.0' without IPv6. */
  host?: string;
  /** TCP port, 0 to 65535. 0 picks a free port (see the result's `port`). Required. */
  port: number;
  /** Length of the accept queue passed to listen(2). Default 511, as Node. Only with `listen: true`. */
  backlog?: number;
  /** For an IPv6 host: accept IPv6 only. Default false (dual-stack on '::'). */
  ipv6Only?: boolean;
  /** true (default): listen now. false: bind only; the worker's `server.listen({ fd })` starts listening. */
  listen?: boolean;
}

export interface ListenSocket {
  /** The socket's file descriptor (CLOEXEC). The caller owns it: close it with fs.closeSync(fd). */
  fd: number;
  /** The numeric address bound. */
  host: string;
  /** The bound port: the one asked for, or the one the kernel picked for port 0. */
  port: number;
  family: 'IPv4' | 'IPv6';
}

const OPTION_NAMES = ['host', 'port', 'backlog', 'ipv6Only', 'listen'] as const;

/**
 * Creates a TCP socket with SO_REUSEADDR and SO_REUSEPORT, bound to host:port, listening unless
 * `listen: false`. Several sockets can bind the same port this way; the kernel balances between them.
 */
export async function createListenSocket(options: ListenSocketOptions): Promise<ListenSocket> {
  checkOptionsObject('createListenSocket()', options);
  checkOptionNames('createListenSocket()', options, OPTION_NAMES);
  const port = checkInteger('port', options.port, 0, 65535);
  const listen = options.listen === undefined ? true : checkBoolean('listen', options.listen);
  const ipv6Only = options.ipv6Only === undefined ? false : checkBoolean('ipv6Only', options.ipv6Only);
  let backlog = DEFAULT_BACKLOG;
  if (options.backlog !== undefined) {
    if (!listen) throw invalidValue('backlog', 'has no effect with listen: false; pass it to server.listen()', options.backlog);
    backlog = checkInteger('backlog', options.backlog, 0, MAX_INT);
  }
  const nativeBacklog = listen ? backlog : -1;

  if (options.host === undefined) {
    try {
      return open('::', 6, port, ipv6Only, nativeBacklog);
    } catch (error) {
      // No IPv6 on this machine: fall back to IPv4 as Node's server.listen() does.
      const code = (error as { code?: string }).code;
      if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw error;
      return open('0.0.0.0', 4, port, ipv6Only, nativeBacklog);
    }
  }
  const host = checkString('host', options.host);
  const version = isIP(host);
  if (version !== 0) return open(host, version as 4 | 6, port, ipv6Only, nativeBacklog);
  const [address, family] = await resolved(host);
  return open(address, family, port, ipv6Only, nativeBacklog);
}

/**
 * Fails EADDRINUSE (`bind EADDRINUSE 127.0.0.1:3000`) when any other socket is bound to the address: a
 * probe without SO_REUSEPORT joins no group, listens on nothing, and is closed at once. The primary checks
 * this before it opens an address, so it never silently joins another process's reuseport group.
 */
export async function checkAddressFree(host: string | undefined, port: number, ipv6Only: boolean): Promise<void> {
  if (port === 0) return; // the kernel picks a free one
  const [address, family] = host === undefined ? ['::', 6 as const] : isIP(host) ? [host, isIP(host) as 4 | 6] : await resolved(host);
  let fd: number;
  try {
    [fd] = native.createListenSocket(address, family, port, ipv6Only, -1, false);
  } catch (error) {
    if (host === undefined && ((error as { code?: string }).code === 'EAFNOSUPPORT' || (error as { code?: string }).code === 'EADDRNOTAVAIL')) {
      [fd] = native.createListenSocket('0.0.0.0', 4, port, ipv6Only, -1, false);
    } else throw error;
  }
  closeSync(fd);
}

/** A host name's address. node:dns is required here: most primaries are given addresses, never names. */
async function resolved(host: string): Promise<[string, 4 | 6]> {
  const { lookup } = require('node:dns/promises') as typeof import('node:dns/promises');
  const { address, family } = await lookup(host);
  return [address, family as 4 | 6];
}

function open(host: string, family: 4 | 6, port: number, ipv6Only: boolean, backlog: number): ListenSocket {
  const [fd, boundPort] = native.createListenSocket(host, family, port, ipv6Only, backlog);
  return { fd, host, port: boundPort, family: family === 6 ? 'IPv6' : 'IPv4' };
}
