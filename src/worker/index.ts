// The worker side, wired: what the primary's messages, the channel's end and a signal to the worker mean here.
// Loaded by every entry.
import { closeSync } from 'node:fs';
import type { PrimaryMessage } from '../protocol/messages';
import { failSocketRequests, onSocketReply } from './adopt';
import { takeShutdownSignals } from './app-signals';
import { actAsClusterWorker } from './cluster';
import { context, openConnections, send } from './context';
import { beforeAppsTurn, onShutdownSignal, shutdown } from './shutdown';
import { startHeartbeat } from './heartbeat';
import { sendMetrics } from './metrics';
import { deliverAppMessage, installProcessSend } from './app-messages';
import { onHandover, stickySessions } from './sticky';

export { adopt, serverErrors } from './adopt';
export { generation, inheritedStoreCapacity, isPrimary, isWorker, ready, waitReadyWanted, workerId } from './context';
export { onShutdown } from './shutdown';

/** How long an orphaned worker (its primary died) may drain before it exits (the watchdog kills at 950 ms). */
const ORPHAN_DRAIN_MS = 900;
/** A worker asked to drain by its primary exits by itself this long after the primary's SIGKILL was due. */
const SELF_EXIT_MARGIN_MS = 1000;

function listenToPrimary(): void {
  const worker = context();
  if (!worker || worker.channel.listenerCount('message') > 0) return;
  worker.channel.on('message', (message: PrimaryMessage, fds: number[]) => {
    if (message.type === 'socket' || message.type === 'socket-error') return onSocketReply(worker, message, fds);
    if (message.type === 'handover') return onHandover(worker, message, fds);
    for (const fd of fds) closeSync(fd);
    if (message.type === 'message') return deliverAppMessage(message);
    // The primary SIGKILLs at `timeout`; our own deadline is only the fallback if it cannot. The app's listeners
    // get SIGTERM, as a stop under plain Node would give them.
    if (message.type === 'shutdown') shutdown('SIGTERM', message.timeout + SELF_EXIT_MARGIN_MS);
    else if (message.type === 'metrics') void sendMetrics(message.requestId);
    else if (message.type === 'stats') send({ type: 'stats', requestId: message.requestId, memory: process.memoryUsage(), connections: openConnections(worker) });
  });
  worker.channel.on('close', () => {
    failSocketRequests();
    shutdown('SIGTERM', ORPHAN_DRAIN_MS); // EOF: the primary is gone
  });
  worker.channel.on('error', (error: Error) => process.stderr.write(`prefork: worker ${worker.id}: ${error.message}\n`));
  // Ctrl-C (a group SIGINT), a group SIGTERM (systemd, tini -g) or a kill of this worker: the same shutdown. The
  // primary hears why, so it does not take the exit for a crash.
  takeShutdownSignals((signal) => {
    if (onShutdownSignal(signal, worker.shutdownTimeout + SELF_EXIT_MARGIN_MS)) send({ type: 'stopping', signal });
  });
  // cluster.worker.disconnect() or kill(): the same stop as a SIGTERM sent to this worker.
  actAsClusterWorker(worker, () => {
    if (shutdown('SIGTERM', worker.shutdownTimeout + SELF_EXIT_MARGIN_MS)) send({ type: 'stopping', signal: 'SIGTERM' });
  });
  startHeartbeat(worker);
  installProcessSend(worker);
  stickySessions(worker);
  send({ type: 'online' });
}

// A draining worker's last counts reach the primary before the app's own code can exit, so totals survive a reload.
beforeAppsTurn(async () => {
  const worker = context();
  if (!worker || worker.channel.closed) return;
  await sendMetrics(0);
  await worker.channel.flushed();
});

// At load, so a worker says 'online' and notices its primary's death even before it listens.
listenToPrimary();
