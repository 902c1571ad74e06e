// node:cluster's primary-side view of a supervisor's workers, for code written for node:cluster's primary (socket.io's
// setupPrimary(), which relays its adapter's messages): `cluster.workers` holds an entry per live prefork worker, with
// `id`, `process.pid` and send(), and cluster emits 'message' (worker, message) for each one's process.send(), as the
// entry does. Nothing else of node:cluster is emulated. Only supervise() sets it up: only in a prefork primary.
import cluster from 'node:cluster';
import { EventEmitter } from 'node:events';
import type { Supervisor } from './supervisor';
import type { Worker } from './worker-process';

/** cluster.workers' ids: counted from 1 per process, as node:cluster counts its own. */
let lastId = 0;

/** A prefork worker as node:cluster's primary shows a worker. `prefork`: its supervisor record. */
export class ClusterWorker extends EventEmitter {
  readonly id = ++lastId;

  constructor(readonly prefork: Worker) {
    super();
  }

  get process(): { pid: number } {
    return { pid: this.prefork.pid };
  }

  send(message: unknown, ...args: unknown[]): boolean {
    return this.prefork.send(message, ...args);
  }

  isConnected(): boolean {
    return this.prefork.state !== 'exited';
  }

  isDead(): boolean {
    return this.prefork.state === 'exited';
  }
}

/**
 * Reflects the supervisor's workers in node:cluster. Messages are relayed (and so decoded) only once something
 * listens for them on cluster or on an entry: until then the supervisor alone decides.
 */
export function reflectInCluster(supervisor: Supervisor): void {
  if (!cluster.isPrimary) return;
  const workers = cluster.workers as Record<string, unknown>;
  const entries = new Map<Worker, ClusterWorker>();
  let relaying = false;
  const relay = () => {
    if (relaying) return;
    relaying = true;
    cluster.off('newListener', onNewListener);
    for (const entry of entries.values()) entry.off('newListener', onNewListener);
    supervisor.on('message', (record, message) => {
      const entry = entries.get(record);
      if (!entry) return;
      entry.emit('message', message, undefined);
      cluster.emit('message', entry, message, undefined);
    });
  };
  const onNewListener = (event: string | symbol) => {
    if (event === 'message') relay();
  };
  if (cluster.listenerCount('message') > 0) relay();
  else cluster.on('newListener', onNewListener);
  supervisor.on('fork', (record) => {
    const entry = new ClusterWorker(record);
    if (!relaying) entry.on('newListener', onNewListener);
    entries.set(record, entry);
    workers[entry.id] = entry;
  });
  supervisor.on('exit', (record) => {
    const entry = entries.get(record);
    if (!entry) return;
    entries.delete(record);
    delete workers[entry.id];
  });
  supervisor.once('shutdown', () => cluster.off('newListener', onNewListener)); // no listener left behind per supervisor
}
