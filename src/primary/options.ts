// supervise()'s options: their types, defaults and validation, turned into one settled configuration.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { lookupAccount, usableCpuCount } from '../core/system';
import { invalidType, invalidValue, preforkError } from '../errors';
import {
  DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_MAX_REQUESTED_ADDRESSES, DEFAULT_READY_TIMEOUT_MS, DEFAULT_SHUTDOWN_TIMEOUT_MS, DEFAULT_STORE_CAPACITY, MAX_REQUESTED_ADDRESSES, MAX_STORE_CAPACITY,
  MAX_TIMEOUT_MS, MAX_WORKERS, MIN_HEARTBEAT_TIMEOUT_MS,
} from '../limits';
import { parseListenAddress, type ListenAddress, type ListenConfig } from '../protocol/address';
import { SERIALIZATIONS, type Serialization } from '../protocol/app-messages';
import { settleRecycle, type RecycleOptions } from './recycle';
import { settleRestart, type RestartOptions } from './restart-policy';
import { BALANCE_MODES, type BalanceMode } from './steering';
import { checkBoolean, checkInteger, checkLimit, checkOptionNames, checkOptionsObject, checkString } from '../validate';

export type { ListenAddress, ListenConfig } from '../protocol/address';

/** The primary's Prometheus endpoint. */
export interface MetricsOptions {
  /** Default: all interfaces, as server.listen(port). Say 127.0.0.1 to keep it local. */
  host?: string;
  port: number;
  /** Default '/metrics'. */
  path?: string;
  /** Label every app metric with worker="<slot>" instead of summing over workers. Default false. */
  workerLabel?: boolean;
}

export interface MetricsConfig {
  host: string | undefined;
  port: number;
  path: string;
  workerLabel: boolean;
  label: string;
}

export interface SupervisorOptions {
  /** Number of workers. Default: the CPUs this process may use (affinity and cgroup quota). */
  workers?: number;
  /** Addresses the primary opens, one socket per worker slot each. Default: none (workers listen on nothing). */
  listen?: ListenAddress | ListenAddress[];
  /** The worker script. Default: the main script of this process. */
  script?: string;
  /** Arguments after the script. Default: this process's (process.argv.slice(2)). */
  args?: string[];
  /** Node options for workers. Default: this process's (process.execArgv), with inspector ports made unique. */
  execArgv?: string[];
  /** Extra environment for workers, merged over process.env. */
  env?: NodeJS.ProcessEnv;
  /** Working directory of workers. Default: this process's. */
  cwd?: string;
  restart?: RestartOptions;
  /** Time (ms) a worker has to finish in-flight work after a shutdown request, then SIGKILL. 0: SIGKILL at once. Default 10000. */
  shutdownTimeout?: number;
  /** Time (ms) a new worker has to become ready, else it is killed and counted as a failure. 0: no limit. Default 30000. */
  readyTimeout?: number;
  /** true: a worker is ready only when it calls ready(). false: when it listens on every address. Default false. */
  waitReady?: boolean;
  /**
   * How messages between primary and workers (process.send, worker.send, broadcast) are serialised, as node:cluster's
   * setupPrimary({ serialization }): 'json', or 'advanced' (v8.serialize: Map, Set, Date, BigInt, Buffer, typed
   * arrays, cycles). Default 'json'.
   */
  serialization?: Serialization;
  /** Run workers as this user (name or uid); needs a root primary. Its primary group unless `group` is given. */
  user?: string | number;
  /** Run workers with this group (name or gid); needs a root primary. */
  group?: string | number;
  /** Pin worker slot k to the k-th usable CPU (Linux). Default false. */
  cpuAffinity?: boolean;
  /**
   * 'shared': one socket, one accept queue, that every worker takes connections from when it is ready: the best
   * tail latency (docs/performance.md). 'reuseport': one socket per worker slot (Linux), each connection given to a
   * worker by the kernel on its SYN (see `balance`). Default 'shared', or 'reuseport' on Linux when `balance` is given.
   */
  sockets?: 'reuseport' | 'shared';
  /**
   * How the kernel picks a worker for each new connection (reuseport sockets, Linux): 'client-ip' (the same client
   * address always to the same worker), 'hash' (the kernel's own). In every mode a slot without a ready, responsive
   * worker gets no new connections. Default 'hash'. 'least-loaded' (deprecated) is accepted and means the default
   * (shared sockets), with one line on stderr.
   */
  balance?: BalanceMode | 'least-loaded';
  /** Keys the shared counter store (CounterStore, RateLimitStore) holds; 0: no shared store. Default 65536. */
  storeCapacity?: number;
  /**
   * Handle SIGTERM, SIGINT, SIGHUP, SIGTTIN, SIGTTOU in the primary. Default false for supervise() (a library
   * embedding it keeps its signals, as with node:cluster); true for listen(), register mode and the command.
   */
  signals?: boolean;
  /**
   * Exit the primary process when the supervisor ends: 0 after a requested shutdown, 1 after a failure.
   * Default false for supervise(); true for listen(), register mode and the command.
   */
  exitProcess?: boolean;
  /**
   * How many addresses workers may have the primary open on request, beyond `listen` (a worker's listen() on
   * an address nobody configured). 0: none. Workers that run as another `user`/`group` may never. Default 64.
   */
  maxRequestedAddresses?: number;
  /**
   * A worker whose event loop has not turned for this many ms is unresponsive: killed and replaced on its
   * slot's socket. 0: off. Default 30000 (off when workers run with an inspector, which pauses them).
   */
  heartbeatTimeout?: number;
  recycle?: RecycleOptions;
  /** Serve Prometheus metrics from the primary: a port, "host:port", or { host, port, path, workerLabel }. Default: none. */
  metrics?: number | string | MetricsOptions;
  /** Write the primary's pid here at start (atomically) and remove it at exit. Default: none. */
  pidFile?: string;
  /**
   * As PID 1 (a container without --init), also reap orphaned processes that end up as our children. Only for a
   * primary that runs no code of its own that starts children. Default false; true for register mode and the command.
   */
  reapOrphans?: boolean;
}

export interface SupervisorConfig {
  workers: number;
  listen: ListenConfig[];
  script: string;
  args: string[];
  execArgv: string[];
  env: NodeJS.ProcessEnv;
  cwd: string | undefined;
  restart: Required<RestartOptions>;
  shutdownTimeout: number;
  readyTimeout: number;
  waitReady: boolean;
  serialization: Serialization;
  uid: number | undefined;
  gid: number | undefined;
  cpuAffinity: boolean;
  sockets: 'reuseport' | 'shared';
  balance: BalanceMode;
  storeCapacity: number;
  signals: boolean;
  exitProcess: boolean;
  maxRequestedAddresses: number;
  heartbeatTimeout: number;
  recycle: Required<RecycleOptions>;
  metrics: MetricsConfig | null;
  pidFile: string | null;
  reapOrphans: boolean;
}

const OPTION_NAMES = [
  'workers', 'listen', 'script', 'args', 'execArgv', 'env', 'cwd', 'restart', 'shutdownTimeout', 'readyTimeout',
  'waitReady', 'serialization', 'user', 'group', 'cpuAffinity', 'sockets', 'balance', 'storeCapacity', 'signals', 'exitProcess', 'maxRequestedAddresses',
  'heartbeatTimeout', 'recycle', 'metrics', 'pidFile', 'reapOrphans',
] as const;
export function settleOptions(options: SupervisorOptions = {}): SupervisorConfig {
  checkOptionsObject('supervise()', options);
  checkOptionNames('supervise()', options, OPTION_NAMES);
  const workers = options.workers === undefined ? usableCpuCount() : checkInteger('workers', options.workers, 1, MAX_WORKERS);
  const script = settleScript(options.script);
  const args = stringList('args', options.args ?? process.argv.slice(2));
  const execArgv = stringList('execArgv', options.execArgv ?? process.execArgv);
  if (options.env !== undefined && (typeof options.env !== 'object' || options.env === null)) throw invalidType('env', 'an object', options.env);
  const cwd = options.cwd === undefined ? undefined : checkString('cwd', options.cwd);
  const ms = (name: string, value: unknown, fallback: number) => (value === undefined ? fallback : checkInteger(name, value, 0, MAX_TIMEOUT_MS));
  const balance = settleBalance(options.balance, options.sockets);
  // One queue is the best tail (docs/performance.md); asking for a balance mode asks for per-worker sockets.
  const sockets = options.sockets ?? (balance.given && process.platform === 'linux' ? 'reuseport' : 'shared');
  if (sockets !== 'reuseport' && sockets !== 'shared') throw invalidValue('sockets', `must be 'reuseport' or 'shared'`, sockets);
  const { uid, gid } = settleAccount(options.user, options.group);
  const cpuAffinity = options.cpuAffinity === undefined ? false : checkBoolean('cpuAffinity', options.cpuAffinity);
  if (cpuAffinity && process.platform !== 'linux') throw invalidValue('cpuAffinity', `is not supported on ${process.platform}`, true);
  return {
    workers,
    listen: settleListen(options.listen),
    script,
    args,
    execArgv,
    env: { ...process.env, ...(options.env ?? {}) },
    cwd,
    restart: settleRestart(options.restart),
    shutdownTimeout: ms('shutdownTimeout', options.shutdownTimeout, DEFAULT_SHUTDOWN_TIMEOUT_MS),
    readyTimeout: ms('readyTimeout', options.readyTimeout, DEFAULT_READY_TIMEOUT_MS),
    waitReady: options.waitReady === undefined ? false : checkBoolean('waitReady', options.waitReady),
    serialization: settleSerialization(options.serialization),
    uid,
    gid,
    cpuAffinity,
    sockets,
    balance: balance.mode,
    storeCapacity:
      options.storeCapacity === undefined ? DEFAULT_STORE_CAPACITY : checkInteger('storeCapacity', options.storeCapacity, 0, MAX_STORE_CAPACITY),
    signals: options.signals === undefined ? false : checkBoolean('signals', options.signals),
    exitProcess: options.exitProcess === undefined ? false : checkBoolean('exitProcess', options.exitProcess),
    maxRequestedAddresses:
      options.maxRequestedAddresses === undefined ? DEFAULT_MAX_REQUESTED_ADDRESSES : checkInteger('maxRequestedAddresses', options.maxRequestedAddresses, 0, MAX_REQUESTED_ADDRESSES),
    heartbeatTimeout: settleHeartbeatTimeout(options.heartbeatTimeout, execArgv),
    recycle: settleRecycle(options.recycle),
    metrics: settleMetrics(options.metrics),
    pidFile: options.pidFile === undefined ? null : resolve(checkString('pidFile', options.pidFile)),
    reapOrphans: options.reapOrphans === undefined ? false : checkBoolean('reapOrphans', options.reapOrphans),
  };
}

function settleSerialization(serialization: unknown): Serialization {
  if (serialization === undefined) return 'json';
  if (!SERIALIZATIONS.includes(serialization as Serialization)) {
    throw invalidValue('serialization', `must be one of ${SERIALIZATIONS.map((mode) => `'${mode}'`).join(', ')}`, serialization);
  }
  return serialization as Serialization;
}

/** The kernel's hash, when per-worker sockets are asked for without a mode. */
export const DEFAULT_BALANCE: BalanceMode = 'hash';

/**
 * The balance mode, and whether it was asked for (then sockets default to 'reuseport'). 'least-loaded' re-attached a
 * program every 25 ms and measured no better than the kernel's hash, and worse than one shared queue: it now means
 * "not given", with one line on stderr (CHANGELOG).
 */
function settleBalance(balance: unknown, sockets: unknown): { mode: BalanceMode; given: boolean } {
  if (balance === 'least-loaded') {
    process.stderr.write(`prefork: balance 'least-loaded' is deprecated and ignored: ${sockets === 'reuseport' ? "the kernel's hash decides" : "every worker takes connections from one shared queue (sockets: 'shared')"}, which measured a better tail\n`);
    return { mode: DEFAULT_BALANCE, given: false };
  }
  if (balance === undefined) return { mode: DEFAULT_BALANCE, given: false };
  if (!BALANCE_MODES.includes(balance as BalanceMode)) {
    throw invalidValue('balance', `must be one of ${BALANCE_MODES.map((mode) => `'${mode}'`).join(', ')}`, balance);
  }
  if (sockets === 'shared' && balance !== 'hash') {
    throw invalidValue('balance', `steers between reuseport sockets; with sockets: 'shared' every worker accepts from one queue already`, balance);
  }
  return { mode: balance as BalanceMode, given: true };
}

function settleMetrics(metrics: unknown): MetricsConfig | null {
  if (metrics === undefined) return null;
  if (typeof metrics !== 'object' || metrics === null || Array.isArray(metrics)) {
    const { host, port, label } = parseListenAddress(metrics, 'metrics');
    return { host, port, path: '/metrics', workerLabel: false, label };
  }
  checkOptionNames('the "metrics" option', metrics, ['host', 'port', 'path', 'workerLabel']);
  const { host, port, path, workerLabel } = metrics as Record<string, unknown>;
  const address = parseListenAddress({ host, port }, 'metrics');
  const settledPath = path === undefined ? '/metrics' : checkString('metrics.path', path);
  if (!settledPath.startsWith('/')) throw invalidValue('metrics.path', 'must start with "/"', path);
  return {
    host: address.host, port: address.port, path: settledPath, label: address.label,
    workerLabel: workerLabel === undefined ? false : checkBoolean('metrics.workerLabel', workerLabel),
  };
}

/** Default 30000, but off when workers run under an inspector: a worker paused at a breakpoint is not stuck. */
function settleHeartbeatTimeout(value: unknown, execArgv: string[]): number {
  if (value !== undefined) return checkLimit('heartbeatTimeout', value, MIN_HEARTBEAT_TIMEOUT_MS, MAX_TIMEOUT_MS);
  return execArgv.some((arg) => /^--inspect(-brk|-wait)?(=|$)/.test(arg)) ? 0 : DEFAULT_HEARTBEAT_TIMEOUT_MS;
}

function settleListen(listen: unknown): ListenConfig[] {
  if (listen === undefined) return [];
  const list = Array.isArray(listen) ? listen : [listen];
  const configs = list.map((address, i) => parseListenAddress(address, Array.isArray(listen) ? `listen[${i}]` : 'listen'));
  const seen = new Set<string>();
  for (const config of configs) {
    const key = `${config.host ?? '*'}|${config.port}`;
    if (config.port !== 0 && seen.has(key)) throw invalidValue('listen', `names ${config.label} twice`, listen);
    seen.add(key);
  }
  return configs;
}

function settleScript(script: unknown): string {
  const main = script === undefined ? require.main?.filename ?? process.argv[1] : checkString('script', script);
  if (main === undefined) throw invalidValue('script', 'is required when this process has no main script', script);
  const path = resolve(main);
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw Object.assign(invalidValue('script', 'must name an existing file', main), { path });
  }
  return path;
}

function stringList(name: string, value: unknown): string[] {
  if (!Array.isArray(value)) throw invalidType(name, 'an array of strings', value);
  return value.map((item, i) => checkString(`${name}[${i}]`, item, { allowEmpty: true }));
}

function settleAccount(user: unknown, group: unknown): { uid: number | undefined; gid: number | undefined } {
  if (user === undefined && group === undefined) return { uid: undefined, gid: undefined };
  if (process.getuid?.() !== 0) {
    throw preforkError('ERR_PREFORK_NOT_ROOT', `The "${user !== undefined ? 'user' : 'group'}" option needs a primary running as root`);
  }
  let uid: number | undefined;
  let gid: number | undefined;
  if (user !== undefined) {
    if (typeof user !== 'string' && typeof user !== 'number') throw invalidType('user', 'a user name or uid', user);
    const account = lookupAccount('passwd', user);
    if (account === null) throw invalidValue('user', 'names no user on this system', user);
    uid = account.id;
    gid = account.groupId;
  }
  if (group !== undefined) {
    if (typeof group !== 'string' && typeof group !== 'number') throw invalidType('group', 'a group name or gid', group);
    const account = lookupAccount('group', group);
    if (account === null) throw invalidValue('group', 'names no group on this system', group);
    gid = account.id;
  }
  return { uid, gid };
}
