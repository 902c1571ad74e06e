// process.send() and process.on('message') in a worker, over the control channel, as a node:cluster worker has them:
// every prefork worker has process.send (libraries that test `typeof process.send` behave as under node:cluster).
// With wait-ready, process.send('ready') is PM2's habit and means ready() (it is not delivered as a message).
import { channelClosed, decodeAppMessage, encodeAppMessage, sendCallback, type AppMessageFrame } from '../protocol/app-messages';
import { debug } from '../debug';
import { holdChannel, ready, type WorkerContext } from './context';
import { beforeAppsTurn } from './shutdown';

/** False once the app called process.disconnect() or the channel closed: nothing is sent or delivered then. */
let connected = true;

export function installProcessSend(worker: WorkerContext): void {
  if (typeof process.send === 'function') return; // an IPC channel of its own (not ours to replace)
  process.send = ((message: unknown, ...args: unknown[]) => {
    const callback = sendCallback('process.send()', args);
    if (message === 'ready' && worker.waitReady) {
      ready();
      if (callback) process.nextTick(callback, null);
      return true;
    }
    const frame = encodeAppMessage(message, worker.serialization);
    if (!connected || worker.channel.closed) {
      if (callback) process.nextTick(callback, channelClosed());
      return false;
    }
    worker.channel.send(frame);
    if (callback) void worker.channel.flushed().then(() => callback(worker.channel.closed ? channelClosed() : null));
    return true;
  }) as NonNullable<typeof process.send>;
  Object.defineProperty(process, 'connected', { configurable: true, enumerable: true, get: () => connected && !worker.channel.closed });
  process.disconnect = () => disconnect(worker);
  worker.channel.on('close', () => disconnect(worker));
  // As Node: a 'message' or 'disconnect' listener keeps the worker alive; once its shutdown reaches the app's turn,
  // the app's own handles alone decide when it exits (node:cluster's worker disconnects then).
  const listening = () => process.listenerCount('message') + process.listenerCount('disconnect') > 0;
  const hold = (held: boolean) => holdChannel(worker, 'app messages', held && connected && !worker.shuttingDown);
  process.on('newListener', (event) => {
    if (event === 'message' || event === 'disconnect') hold(true);
  });
  process.on('removeListener', (event) => {
    if (event === 'message' || event === 'disconnect') hold(listening());
  });
  hold(listening());
  beforeAppsTurn(async () => hold(false));
}

/** process.disconnect(): no more messages either way ('disconnect' is emitted once). prefork's own channel stays. */
function disconnect(worker: WorkerContext): void {
  if (!connected) return;
  connected = false;
  holdChannel(worker, 'app messages', false);
  process.nextTick(() => process.emit('disconnect'));
}

/** The primary's worker.send() or broadcast(): the app's process 'message' event. */
export function deliverAppMessage(frame: AppMessageFrame): void {
  if (!connected) return;
  const decoded = decodeAppMessage(frame);
  if ('problem' in decoded) {
    debug('worker: dropped %s', decoded.problem);
    return;
  }
  process.emit('message', decoded.value, undefined);
}
