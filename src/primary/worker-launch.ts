// Starting a worker: fork+exec of Node with the worker's fds at fixed numbers and its environment, the way
// node:cluster starts one (inspector ports made unique), minus what was meant for the primary alone.
import { closeSync, fstatSync } from 'node:fs';
import { native } from '../core/binding';
import { ControlChannel, createChannelPair } from '../core/channel';
import { spawn, type ChildHandle } from '../core/spawn';
import { allowedCpus } from '../core/system';
import { MAX_UNREAD_BYTES, MAX_UNREAD_FDS, MAX_WORKER_FRAMES_PER_SECOND } from '../limits';
import {
  CHANNEL_FD, ENV_CHANNEL_ID, ENV_GENERATION, ENV_HEARTBEAT_INTERVAL, ENV_LISTEN, ENV_SERIALIZATION, ENV_SHUTDOWN_TIMEOUT, ENV_STORE, ENV_WAIT_READY, ENV_WORKER_ID,
  FIRST_LISTEN_FD, LIVENESS_FD, STORE_FD,
  type InheritedSocket,
} from '../protocol/messages';
import { LIVENESS_BYTES, LivenessRecord } from '../protocol/liveness-record';
import type { SupervisorConfig } from './options';
import { SYSTEMD_VARIABLES } from './systemd-notify';
import { ENV_HANDOVER } from './upgrade';
import { STUCK_CHECK_INTERVAL_MS } from './steering';
import { withSend, WorkerProcess, type ExitReason, type Worker } from './worker-process';

export interface WorkerLaunch {
  slot: number;
  generation: number;
  restarts: number;
  /** The slot's listen sockets (fds in the primary) and how each is described to the worker. */
  sockets: Array<{ fd: number; describe: (fdInWorker: number) => InheritedSocket }>;
  /** The counter store's region, or -1. */
  storeFd: number;
  /** Why the slot's previous worker was replaced; null for its first. */
  replaced: ExitReason | null;
  /** Node options for this worker (inspector ports already made unique). */
  execArgv: string[];
  config: SupervisorConfig;
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
  let liveness: LivenessRecord;
  let livenessFd = -1;
  try {
    livenessFd = native.createSharedRegion(LIVENESS_BYTES);
    liveness = new LivenessRecord(native.mapSharedRegion(livenessFd, LIVENESS_BYTES));
    fds[LIVENESS_FD] = livenessFd;
    const cpus = config.cpuAffinity ? allowedCpus() : [];
    child = spawn({
      file: process.execPath,
      args: [process.execPath, ...launch.execArgv, config.script, ...config.args],
      env: {
        ...withoutPrimaryVariables(config.env),
        [ENV_WORKER_ID]: String(slot),
        [ENV_GENERATION]: String(launch.generation),
        [ENV_LISTEN]: JSON.stringify(inherited),
        [ENV_SHUTDOWN_TIMEOUT]: String(config.shutdownTimeout),
        [ENV_WAIT_READY]: config.waitReady ? '1' : '0',
        [ENV_SERIALIZATION]: config.serialization,
        [ENV_CHANNEL_ID]: String(fstatSync(workerEnd).ino),
        // Steered sockets: the steering looks at each worker's beat to find one stuck.
        [ENV_HEARTBEAT_INTERVAL]: String(config.sockets === 'reuseport' ? Math.min(STUCK_CHECK_INTERVAL_MS, heartbeatInterval(config.heartbeatTimeout)) : heartbeatInterval(config.heartbeatTimeout)),
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
    if (livenessFd >= 0) closeSync(livenessFd); // the worker has its copy; ours stays mapped
  }
  let worker: WorkerProcess | null = null;
  const record: Worker = withSend({
    id: slot, pid: child.pid, generation: launch.generation, state: 'starting', startedAt: new Date(), restarts: launch.restarts,
    replaced: launch.replaced, exitReason: null,
  }, (message, ...args) => (worker as WorkerProcess).sendAppMessage(message, args));
  // A worker sends the primary at most one fd per frame, and only with a handover (see handovers.ts): more never
  // enter our fd table, and end it as a protocol breach. A flood of frames, or answers it leaves unread (1,024 fds,
  // or 16 MiB), ends it too.
  const channel = new ControlChannel(primaryEnd, { fds: 1, maxFramesPerSecond: MAX_WORKER_FRAMES_PER_SECOND, maxQueued: { fds: MAX_UNREAD_FDS, bytes: MAX_UNREAD_BYTES } });
  worker = new WorkerProcess(record, child, channel, liveness, config);
  return worker;
}

/** How often a worker beats: a tenth of the timeout, so a stuck loop is seen within 10% of it; at most every second. */
export function heartbeatInterval(heartbeatTimeout: number): number {
  return heartbeatTimeout === 0 ? 1000 : Math.min(1000, Math.max(10, Math.floor(heartbeatTimeout / 10)));
}

/**
 * The environment without what was meant for the primary alone: systemd's variables (a worker is not the service's
 * main process) and an upgrade's handover (fd numbers of the primary's; a worker's child running prefork would
 * take its fd 3 for an old primary). Also when the caller's `env` option copied them.
 */
function withoutPrimaryVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const copy = { ...env };
  for (const name of [...SYSTEMD_VARIABLES, ENV_HANDOVER]) delete copy[name];
  return copy;
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
