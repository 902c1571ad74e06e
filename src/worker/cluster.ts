// node:cluster in a prefork worker's main thread says what the process is: a cluster worker, as under PM2's cluster
// mode. An app written for node:cluster (by hand, or with throng) then takes its worker branch and serves here,
// instead of forking a cluster of its own inside every prefork worker. Worker threads and the processes the app
// starts load node:cluster afresh, as plain Node has it.
import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import type dgram from 'node:dgram';
import { syncBuiltinESMExports } from 'node:module';
import type net from 'node:net';
import { constants } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import type { WorkerContext } from './context';

/** What net and dgram hand node:cluster when a cluster worker binds (lib/net.js listenInCluster, lib/dgram.js). */
interface ServerQuery {
  address: string | null;
  port: number | null;
  addressType: number | string | null;
  fd: number | null | undefined;
  flags: number | null | undefined;
  backlog?: number;
}

type UdpHandle = { bind(address: string | null, port: number, flags: number | null | undefined): number; open(fd: number): number; close(): void };
type GetServer = (target: net.Server | dgram.Socket, query: ServerQuery, callback: (errno: number, handle?: UdpHandle) => void) => void;
/** node:cluster as a cluster primary's module has it: writable, with its Worker class (missing from @types/node). */
interface ClusterModule {
  isPrimary: boolean;
  isMaster: boolean;
  isWorker: boolean;
  worker?: ClusterWorker;
  fork: typeof cluster.fork;
  Worker: new (options: { id: number; state: string }) => ClusterWorker;
  _getServer?: GetServer;
}

/**
 * A cluster worker's listen() and bind() ask its cluster primary for the socket (cluster._getServer); net and dgram
 * decide that from cluster.isPrimary and cluster.isWorker. There is no cluster primary here: bind in this process,
 * as a cluster primary (and plain Node) does.
 */
const bindHere: GetServer = (target, query, callback) => {
  // net.Server: what listenInCluster does when cluster.isPrimary. The callback is not called, as there.
  const server = target as net.Server & { _listen2?: (...args: unknown[]) => void };
  if (typeof server._listen2 === 'function') return server._listen2(query.address, query.port, query.addressType, query.backlog, query.fd, query.flags);
  // dgram.Socket: a new handle of the socket's kind, bound as the socket's own would be (cluster's SharedHandle does
  // this for its workers with dgram._createSocketHandle, which is deprecated); dgram then swaps it in and listens.
  const state = Object.getOwnPropertySymbols(target).find((symbol) => symbol.description === 'state symbol');
  const own = state && (target as unknown as Record<symbol, { handle?: UdpHandle }>)[state].handle;
  if (!own) return callback(-constants.errno.EINVAL); // closed meanwhile: dgram drops the error, as Node does
  const handle = new (own.constructor as new () => UdpHandle)();
  const errno = typeof query.fd === 'number' && query.fd > 0 ? handle.open(query.fd) : own.bind.call(handle, query.address, query.port ?? 0, query.flags);
  if (errno) {
    handle.close();
    return callback(errno);
  }
  callback(0, handle);
};

/**
 * From now on node:cluster tells the app this process is a cluster worker: `isPrimary` and `isMaster` false,
 * `isWorker` true, and `cluster.worker` a cluster.Worker for this process (`id` is the slot + 1, kept by the slot's
 * replacements). `stop` is this worker's graceful stop, for the worker's disconnect() and kill().
 */
export function actAsClusterWorker(worker: WorkerContext, stop: () => void): void {
  const clusterModule = cluster as unknown as ClusterModule;
  // Once per process, even when two copies of prefork are loaded (an app's and the CLI's).
  if (!isMainThread || !clusterModule.isPrimary) return;
  clusterModule.isPrimary = false;
  clusterModule.isMaster = false;
  clusterModule.isWorker = true;
  clusterModule.worker = clusterWorker(clusterModule, worker, stop);
  clusterModule._getServer = bindHere;
  warnOnFork(clusterModule, worker);
  // Node syncs `import { isPrimary } from 'node:cluster'` at each import; this covers one made before now. (Not
  // `import { worker }`: a primary's module has no `worker`, and the names were fixed when node:cluster loaded.)
  syncBuiltinESMExports();
}

function clusterWorker(clusterModule: ClusterModule, worker: WorkerContext, stop: () => void): ClusterWorker {
  // Without `process` in the options: the constructor would listen to the process's 'message' at once, and that
  // listener keeps an IPC channel open (the worker could not exit by itself). It listens once the app does.
  const clusterWorker = new clusterModule.Worker({ id: worker.id + 1, state: 'online' });
  const forward = (message: unknown, handle: unknown) => clusterWorker.emit('message', message, handle);
  clusterWorker.on('newListener', (event: string | symbol) => {
    if (event === 'message' && clusterWorker.listenerCount('message') === 0) process.on('message', forward);
  });
  clusterWorker.on('removeListener', (event: string | symbol) => {
    if (event === 'message' && clusterWorker.listenerCount('message') === 0) process.off('message', forward);
  });
  const disconnect = () => {
    stop();
    return clusterWorker;
  };
  return Object.assign(clusterWorker, {
    process,
    // process.send as it is when called: the app's channel to the primary, if this worker has one.
    send(...args: unknown[]): boolean {
      if (typeof process.send !== 'function') throw new Error('cluster.worker.send(): this prefork worker has no process.send to send on');
      return (process.send as (...all: unknown[]) => boolean)(...args);
    },
    isConnected: () => !worker.channel.closed && !worker.shuttingDown,
    // A cluster worker's disconnect() closes its servers and its process ends; kill() ends it at once. Here both are
    // the worker's graceful stop (its requests finish), and the primary starts its replacement.
    disconnect,
    destroy: disconnect,
    kill: disconnect,
  });
}

/** cluster.fork() still forks, as plain Node would (the app keeps working), with one warning that says what to do instead. */
function warnOnFork(clusterModule: ClusterModule, worker: WorkerContext): void {
  const fork = clusterModule.fork;
  let warned = false;
  clusterModule.fork = function forkWithWarning(this: unknown, ...args: Parameters<typeof fork>) {
    if (!warned) {
      warned = true;
      process.stderr.write(
        `prefork: worker ${worker.id} (pid ${process.pid}): cluster.fork() starts a cluster of its own inside this prefork worker. ` +
        'prefork already runs one worker per core, and node:cluster tells the app it is a worker (cluster.isPrimary is false): ' +
        'remove the cluster.fork() calls and serve in this process, or run the app without prefork\n',
      );
    }
    return fork.apply(this, args);
  } as typeof fork;
}
