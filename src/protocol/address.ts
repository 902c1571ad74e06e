// Listen addresses, as both sides see them: parsed from what a user wrote, matched, and printed.
import { isIP } from 'node:net';
import { invalidType, invalidValue } from '../errors';
import { DEFAULT_BACKLOG, MAX_INT } from '../limits';
import { checkBoolean, checkInteger, checkOptionNames, checkString } from '../validate';
import type { SocketAddress } from './messages';

/** A port, "host:port" ("[::1]:3000", ":3000"), or an object. */
export type ListenAddress = number | string | { host?: string; port: number; ipv6Only?: boolean; backlog?: number };

/** A listen address, settled: what the primary opens, or what a worker's listen() asks for. */
export interface ListenConfig {
  host: string | undefined;
  port: number;
  ipv6Only: boolean;
  backlog: number;
  /** How it is shown in messages ("127.0.0.1:3000", "[::1]:3000", ":3000"). */
  label: string;
}

/** An address the primary has opened: the numeric host bound, and what the operator or a worker asked for. */
export interface KnownAddress {
  host: string;
  port: number;
  configuredHost: string | null;
  configuredPort: number;
  /** For port 0: which of a worker's listen(0) calls on that host it serves (the n-th gets the n-th port). */
  zeroPortCall: number;
}

/** An address the primary has opened, with what its sockets were opened with (what an upgrade hands over too). */
export interface ResolvedAddress extends SocketAddress, KnownAddress {
  ipv6Only: boolean;
  backlog: number;
}

/** "host:port", with IPv6 hosts in brackets; ":port" when no host was named. */
export function formatAddress(host: string | null | undefined, port: number): string {
  if (host === undefined || host === null) return `:${port}`;
  return `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}

/**
 * Whether a listen() call for `host:port` means `known`: by the port as asked or as bound, the host likewise.
 * listen(0) asks for a new port each time: the worker's n-th listen(0) on a host means the n-th such address.
 */
export function addressMatches(known: KnownAddress, host: string | null | undefined, port: number, zeroPortCall = 0): boolean {
  if (port === 0 ? known.configuredPort !== 0 || known.zeroPortCall !== zeroPortCall : port !== known.configuredPort && port !== known.port) return false;
  return host === undefined || host === null || host === known.configuredHost || host === known.host;
}

/** A configured address not opened yet, as a KnownAddress (it matches by what was configured only). */
export function configuredAddress(config: ListenConfig): KnownAddress {
  return { host: config.host ?? '', port: config.port, configuredHost: config.host ?? null, configuredPort: config.port, zeroPortCall: 0 };
}

export function listenConfig(host: string | undefined, port: number, ipv6Only = false, backlog = DEFAULT_BACKLOG): ListenConfig {
  return { host, port, ipv6Only, backlog, label: formatAddress(host, port) };
}

/** Parses one listen address: 3000, '3000', ':3000', 'localhost:3000', '[::1]:3000', { host, port, … }. */
export function parseListenAddress(address: unknown, name = 'listen'): ListenConfig {
  if (typeof address === 'number') return { ...listenConfig(undefined, checkPort(name, address)), label: String(address) };
  if (typeof address === 'string') {
    const match = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^(?:([^:[\]]*):)?(\d+)$/.exec(address);
    if (!match) throw invalidValue(name, 'must be a port, "host:port" or "[ipv6]:port"', address);
    return { ...listenConfig(match[1] || undefined, checkPort(name, Number(match[2]))), label: address };
  }
  if (typeof address === 'object' && address !== null && !Array.isArray(address)) {
    checkOptionNames(`a "${name}" address`, address, ['host', 'port', 'ipv6Only', 'backlog']);
    const entry = address as { host?: unknown; port?: unknown; ipv6Only?: unknown; backlog?: unknown };
    return listenConfig(
      entry.host === undefined ? undefined : checkString(`${name}.host`, entry.host),
      checkPort(`${name}.port`, entry.port),
      entry.ipv6Only === undefined ? false : checkBoolean(`${name}.ipv6Only`, entry.ipv6Only),
      entry.backlog === undefined ? DEFAULT_BACKLOG : checkInteger(`${name}.backlog`, entry.backlog, 0, MAX_INT),
    );
  }
  throw invalidType(name, 'a port number, a "host:port" string or an object { host, port }', address);
}

function checkPort(name: string, value: unknown): number {
  if (typeof value === 'string' && /^\d+$/.test(value)) value = Number(value);
  return checkInteger(name, value, 0, 65535);
}
