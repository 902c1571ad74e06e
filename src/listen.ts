// Fiber's one line: listen(server, address) serves from the primary's socket in a worker, and makes any
// other process the primary of its own script.
import net from 'node:net';
import { invalidType, invalidValue } from './errors';
import { MAX_INT } from './limits';
import type { SupervisorOptions } from './primary/options';
import { supervise, type Supervisor } from './primary/supervisor';
import { addressMatches, configuredAddress, parseListenAddress, type ListenAddress } from './protocol/address';
import { checkInteger } from './validate';
import { adopt, isWorker } from './worker';

let primary: Supervisor | null = null;

/**
 * In a worker: adopts the primary's socket for `address` into `server` and resolves with the server once it
 * listens (`backlog` may be passed third, as with server.listen).
 * Anywhere else: starts a supervisor running this same script on every core, listening on `address` (or on
 * `options.listen`), and resolves when all workers are ready. The server is not used in the primary.
 */
export async function listen(server: net.Server, address: ListenAddress, options?: SupervisorOptions | number): Promise<net.Server> {
  if (!(server instanceof net.Server)) throw invalidType('server', 'a net.Server (http, https or net)', server);
  const parsed = parseListenAddress(address, 'address');
  if (isWorker()) {
    const backlog = typeof options === 'number' ? checkInteger('backlog', options, 0, MAX_INT) : undefined;
    return adopt(server, parsed, backlog);
  }
  if (primary === null) {
    const settings: SupervisorOptions = typeof options === 'object' && options !== null ? options : {};
    const listenOption = settings.listen ?? (typeof options === 'number' ? { host: parsed.host, port: parsed.port, backlog: options } : address);
    primary = supervise({ signals: true, exitProcess: true, ...settings, listen: listenOption });
  } else if (!primary.config.listen.some((config) => addressMatches(configuredAddress(config), parsed.host, parsed.port))) {
    throw invalidValue('address', `is not among the supervisor's addresses (${primary.config.listen.map((config) => config.label).join(', ')}); pass every address in options.listen on the first call`, address);
  }
  await primary.ready();
  return server;
}

/** The supervisor that listen() started in this process, or null. */
export function currentSupervisor(): Supervisor | null {
  return primary;
}
