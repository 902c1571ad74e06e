// The worker's heartbeat: its event loop writes the time and its lag into its liveness record, which the
// primary reads on its own. A stuck loop (an endless loop, a blocking native call, SIGSTOP) stops the beat,
// and the primary sees it without the worker's help. Requests are counted there too, and each beat writes the open
// connections (Node's own count per server: nothing runs per connection for it).
import { closeSync } from 'node:fs';
import type net from 'node:net';
import { native } from '../core/binding';
import { LIVENESS_BYTES, LivenessRecord, monotonicMs } from '../protocol/liveness-record';
import { LIVENESS_FD } from '../protocol/messages';
import { openConnections, type WorkerContext } from './context';

const counted = new WeakSet<net.Server>();

/** Maps the record the primary gave this worker and beats every interval (the timer does not keep it alive). */
export function startHeartbeat(worker: WorkerContext): void {
  const record = new LivenessRecord(native.mapSharedRegion(LIVENESS_FD, LIVENESS_BYTES));
  closeSync(LIVENESS_FD); // the mapping stays
  worker.liveness = record;
  const interval = worker.heartbeatInterval;
  let last = monotonicMs();
  record.beat(last, 0, 0);
  setInterval(() => {
    const now = monotonicMs();
    record.beat(now, Math.max(0, now - last - interval), openConnections(worker));
    last = now;
  }, interval).unref();
}

/**
 * Counts what `server` serves, for recycling after maxRequests, stats and metrics (requests of http, https and
 * http2 servers, connections of a plain net.Server): one atomic add each, in a listener of an event Node emits
 * anyway. Its open connections are read at each beat.
 */
export function countServed(worker: WorkerContext, server: net.Server): void {
  const record = worker.liveness;
  if (!record || counted.has(server)) return;
  counted.add(server);
  const methods = server as unknown as Record<string, unknown>;
  const event = typeof methods.updateSettings === 'function' ? 'stream' // http2
    : typeof methods.closeIdleConnections === 'function' ? 'request' // http, https
      : 'connection';
  server.on(event, () => record.countServed());
}
