// The worker side, wired: what the primary's messages and the channel's end mean here. Loaded by every entry.
import { closeSync } from 'node:fs';
import type { PrimaryMessage } from '../protocol/messages';
import { failSocketRequests, onSocketReply } from './adopt';
import { context, openConnections, send } from './context';
import { beforeExitWhenDrained, drain } from './drain';
import { startHeartbeat } from './heartbeat';
import { sendMetrics } from './metrics';

export { adopt, serverErrors } from './adopt';
export { generation, inheritedStoreCapacity, isPrimary, isWorker, ready, waitReadyWanted, workerId } from './context';
export { onShutdown } from './drain';

/** How long an orphaned worker (its primary died) may drain before it exits (the watchdog kills at 950 ms). */
const ORPHAN_DRAIN_MS = 900;
/** A worker asked to drain by its primary exits by itself this long after the primary's SIGKILL was due. */
const SELF_EXIT_MARGIN_MS = 1000;

const onSignal = () => drain(context()?.shutdownTimeout ?? 0);

/**
 * The primary asks over the channel, not with a signal; an app written for plain Node stops on SIGTERM (closes
 * its pools, flushes its logs, ends its server with a library). Its own SIGTERM listeners run now too, and it
 * then exits when it is done, as under plain Node (the drain's deadline still holds). True if it has any.
 */
function tellTheApp(): boolean {
  const listeners = process.listeners('SIGTERM').filter((listener) => listener !== onSignal);
  for (const listener of listeners) (listener as (signal: NodeJS.Signals) => void)('SIGTERM');
  return listeners.length > 0;
}

function listenToPrimary(): void {
  const worker = context();
  if (!worker || worker.channel.listenerCount('message') > 0) return;
  worker.channel.on('message', (message: PrimaryMessage, fds: number[]) => {
    if (message.type === 'socket' || message.type === 'socket-error') return onSocketReply(worker, message, fds);
    for (const fd of fds) closeSync(fd);
    // The primary SIGKILLs at `timeout`; our own deadline is only the fallback if it cannot.
    if (message.type === 'shutdown') drain(message.timeout + SELF_EXIT_MARGIN_MS, { exitWhenDrained: !tellTheApp() });
    else if (message.type === 'metrics') void sendMetrics(message.requestId);
    else if (message.type === 'stats') send({ type: 'stats', requestId: message.requestId, memory: process.memoryUsage(), connections: openConnections(worker) });
  });
  worker.channel.on('close', () => {
    failSocketRequests();
    drain(ORPHAN_DRAIN_MS, { exitWhenDrained: !tellTheApp() }); // EOF: the primary is gone
  });
  worker.channel.on('error', (error: Error) => process.stderr.write(`prefork: worker ${worker.id}: ${error.message}\n`));
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, onSignal);
  startHeartbeat(worker);
  send({ type: 'online' });
}

// A draining worker's last counts reach the primary before it exits, so totals survive a reload.
beforeExitWhenDrained(async () => {
  const worker = context();
  if (!worker || worker.channel.closed) return;
  await sendMetrics(0);
  await worker.channel.flushed();
});

// At load, so a worker says 'online' and notices its primary's death even before it listens.
listenToPrimary();
