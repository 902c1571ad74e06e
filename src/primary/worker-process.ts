// One worker process as the primary sees it: started with its fds and environment; its readiness, stop and stats.
import { closeSync, fstatSync } from 'node:fs';
import { ControlChannel, createChannelPair } from '../core/channel';
import { spawn, type ChildHandle } from '../core/spawn';
import { allowedCpus } from '../core/system';
import { debug } from '../debug';
import { preforkError } from '../errors';
import {
  CHANNEL_FD, ENV_CHANNEL_ID, ENV_GENERATION, ENV_LISTEN, ENV_SHUTDOWN_TIMEOUT, ENV_STORE, ENV_WAIT_READY, ENV_WORKER_ID,
  FIRST_LISTEN_FD, STORE_FD,
  type InheritedSocket, type PrimaryMessage, type WorkerMessage,
} from '../protocol/messages';
import type { SupervisorConfig } from './options';

export type WorkerState = 'starting' | 'online' | 'listening' | 'ready' | 'stopping' | 'exited';

/** A worker as the supervisor's events and `workers` show it. `state` and `restarts` change as it lives. */
export interface Worker {
  /** The slot, 0 … workers-1. A replacement takes its predecessor's slot (and sockets). */
  readonly id: number;
  readonly pid: number;
  /** 1 for a slot's first worker, +1 for each replacement (restart or reload). */
  readonly generation: number;
  state: WorkerState;
  readonly startedAt: Date;
  /** Restarts of this slot after crashes, before this worker. */
  readonly restarts: number;
}

export interface WorkerStats extends Worker {
  memory: NodeJS.MemoryUsage | null;
  connections: number | null;
}

/** How long stats() waits for a worker's answer before it reports nulls for it. */
const STATS_TIMEOUT_MS = 1000;

export interface WorkerLaunch {
  slot: number;
  generation: number;
  restarts: number;
  /** The slot's listen sockets (fds in the primary) and how each is described to the worker. */
  sockets: Array<{ fd: number; describe: (fdInWorker: number) => InheritedSocket }>;
  /** The counter store's region, or -1. */
  storeFd: number;
  /** Node options for this worker (inspector ports already made unique). */
  execArgv: string[];
  config: SupervisorConfig;
}

export type StatsReply = Extract<WorkerMessage, { type: 'stats' }>;

/** A running worker and the primary's handles on it. Emits nothing: the supervisor listens to `child` and `channel`. */
export class WorkerProcess {
  /** Indexes of the addresses this worker listens on. */
  readonly adopted = new Set<number>();
  readonly ready: Promise<void>;
  private resolveReady!: () => void;
  private rejectReady!: (error: Error) => void;
  private readyTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private killDeadline = Infinity;
  private readonly statsRequests = new Map<number, (reply?: StatsReply) => void>();
  private nextStatsRequest = 1;

  constructor(
    readonly record: Worker,
    readonly child: ChildHandle,
    readonly channel: ControlChannel,
    readyTimeout: number,
  ) {
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // failures are reported where ready is awaited
    if (readyTimeout > 0) {
      this.readyTimer = setTimeout(() => {
        this.rejectReady(preforkError('ERR_PREFORK_READY_TIMEOUT', `worker ${record.id} (pid ${child.pid}) was not ready within ${readyTimeout} ms`));
        this.requestStop(0);
      }, readyTimeout);
    }
  }

  /** Marks it ready; false when it was ready, stopping or gone already. */
  markReady(): boolean {
    if (this.record.state === 'ready' || this.record.state === 'stopping' || this.record.state === 'exited') return false;
    this.record.state = 'ready';
    clearTimeout(this.readyTimer);
    this.resolveReady();
    return true;
  }

  /** After the child is reaped: timers and channel go; a worker that was never ready fails its `ready`. */
  exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.record.state = 'exited';
    clearTimeout(this.readyTimer);
    clearTimeout(this.killTimer);
    this.channel.close();
    for (const answer of this.statsRequests.values()) answer();
    const { id, pid } = this.record;
    const early = preforkError('ERR_PREFORK_WORKER_EXIT', `worker ${id} (pid ${pid}) exited with ${describeExit(code, signal)} before it was ready`);
    this.rejectReady(Object.assign(early, { exitCode: code, signal })); // no effect once it was ready
  }

  /** Asks it to drain and exit; SIGKILL after `timeout` ms (0: at once). */
  requestStop(timeout: number): void {
    if (this.record.state === 'exited') return;
    clearTimeout(this.readyTimer);
    const wasOnline = this.record.state !== 'starting';
    this.record.state = 'stopping';
    debug('primary: stopping worker %d (pid %d), SIGKILL in %d ms', this.record.id, this.record.pid, timeout);
    if (timeout === 0) {
      this.child.kill('SIGKILL');
      return;
    }
    if (wasOnline && !this.channel.closed) this.channel.send({ type: 'shutdown', timeout } satisfies PrimaryMessage);
    else this.child.kill('SIGTERM'); // prefork is not loaded there yet: the default action ends it
    // A shutdown({ timeout }) during a reload's drain shortens it; a later, longer one does not lengthen it.
    if (Date.now() + timeout < this.killDeadline) {
      this.killDeadline = Date.now() + timeout;
      clearTimeout(this.killTimer);
      this.killTimer = setTimeout(() => this.child.kill('SIGKILL'), timeout);
    }
  }

  /** Its record plus memory and open connections, asked over the channel (nulls if it does not answer in time). */
  askStats(): Promise<WorkerStats> {
    const requestId = this.nextStatsRequest++;
    return new Promise((resolve) => {
      const answer = (reply?: StatsReply) => {
        clearTimeout(timer);
        this.statsRequests.delete(requestId);
        resolve({ ...this.record, memory: reply?.memory ?? null, connections: reply?.connections ?? null });
      };
      const timer = setTimeout(answer, STATS_TIMEOUT_MS);
      this.statsRequests.set(requestId, answer);
      if (this.channel.closed) answer();
      else this.channel.send({ type: 'stats', requestId } satisfies PrimaryMessage);
    });
  }

  onStatsReply(reply: StatsReply): void {
    this.statsRequests.get(reply.requestId)?.(reply);
  }
}

export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `signal ${signal}`;
  return code === null ? 'no exit (not ready in time)' : `code ${code}`;
}

/** Fork+execs a worker: its channel at CHANNEL_FD, the store at STORE_FD, its listen sockets from FIRST_LISTEN_FD. */
export function startWorkerProcess(launch: WorkerLaunch): WorkerProcess {
  const { config, slot } = launch;
  const fds: Record<number, number> = {};
  const inherited = launch.sockets.map((socket, i) => {
    fds[FIRST_LISTEN_FD + i] = socket.fd;
    return socket.describe(FIRST_LISTEN_FD + i);
  });
  const [primaryEnd, workerEnd] = createChannelPair();
  fds[CHANNEL_FD] = workerEnd;
  if (launch.storeFd >= 0) fds[STORE_FD] = launch.storeFd;
  let child: ChildHandle;
  try {
    const cpus = config.cpuAffinity ? allowedCpus() : [];
    child = spawn({
      file: process.execPath,
      args: [process.execPath, ...launch.execArgv, config.script, ...config.args],
      env: {
        ...config.env,
        [ENV_WORKER_ID]: String(slot),
        [ENV_GENERATION]: String(launch.generation),
        [ENV_LISTEN]: JSON.stringify(inherited),
        [ENV_SHUTDOWN_TIMEOUT]: String(config.shutdownTimeout),
        [ENV_WAIT_READY]: config.waitReady ? '1' : '0',
        [ENV_CHANNEL_ID]: String(fstatSync(workerEnd).ino),
        ...(launch.storeFd >= 0 ? { [ENV_STORE]: String(config.storeCapacity) } : {}),
        NODE_APP_INSTANCE: String(slot), // PM2's name for the same thing
      },
      cwd: config.cwd,
      fds,
      uid: config.uid,
      gid: config.gid,
      cpus: cpus.length > 0 ? [cpus[slot % cpus.length]] : undefined,
      // Catchable, so an orphaned worker drains like on a shutdown request (the channel's EOF says the same).
      deathSignal: 'SIGTERM',
    });
  } catch (error) {
    closeSync(primaryEnd);
    throw error;
  } finally {
    closeSync(workerEnd);
  }
  const record: Worker = { id: slot, pid: child.pid, generation: launch.generation, state: 'starting', startedAt: new Date(), restarts: launch.restarts };
  return new WorkerProcess(record, child, new ControlChannel(primaryEnd), config.readyTimeout);
}

/**
 * As node:cluster does: with an inspector in execArgv, the n-th worker started (n from 1) gets its own port,
 * counting up from the primary's.
 */
export function inspectorExecArgv(execArgv: string[], n: number): string[] {
  if (!execArgv.some((arg) => /^--inspect(-brk|-wait)?(=|$)/.test(arg))) return execArgv;
  let host = '';
  for (const arg of execArgv) {
    const value = /^--inspect(?:-brk|-wait|-port)?=(.+)$/.exec(arg)?.[1];
    if (value?.includes(':')) host = `${value.slice(0, value.lastIndexOf(':'))}:`;
    else if (value !== undefined && !/^\d+$/.test(value)) host = `${value}:`;
  }
  const base = process.debugPort;
  const port = base === 0 ? 0 : ((base + n - 1024) % (65536 - 1024)) + 1024;
  return [...execArgv, `--inspect-port=${host}${port}`];
}
