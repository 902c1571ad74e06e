// The zero-code primary runs no app code, so no setupPrimary() of @socket.io/cluster-adapter: it relays the adapter's
// messages itself, the way setupPrimary() does (node_modules/@socket.io/cluster-adapter/dist/index.js), and loads
// neither node:cluster nor socket.io. Other messages are dropped, as node:cluster drops what nobody listens to.
import type { Supervisor, Worker } from '../primary/supervisor';

const SOURCE = '_sio_adapter';
/** socket.io-adapter's MessageType.FETCH_SOCKETS_RESPONSE and SERVER_SIDE_EMIT_RESPONSE: answers for one requester. */
const RESPONSES = new Set([8, 10]);

type AdapterMessage = { source: string; uid?: unknown; type?: unknown; requesterUid?: unknown };

export function relaySocketIoAdapter(supervisor: Supervisor): void {
  /** Every live worker (a reload's incoming and draining ones too), with the adapter uids (one per namespace) it sent from. */
  const workers = new Map<Worker, Set<unknown>>();
  supervisor.on('fork', (worker) => workers.set(worker, new Set()));
  supervisor.on('exit', (worker) => workers.delete(worker));
  supervisor.on('message', (sender, message) => {
    if (typeof message !== 'object' || message === null || (message as AdapterMessage).source !== SOURCE) return;
    const { uid, type, requesterUid } = message as AdapterMessage;
    workers.get(sender)?.add(uid);
    let targets = [...workers.keys()].filter((worker) => worker !== sender); // a broadcast: everyone else
    if (RESPONSES.has(type as number)) targets = targets.filter((worker) => workers.get(worker)?.has(requesterUid)).slice(0, 1);
    for (const target of targets) {
      try {
        target.send(message, null, () => {}); // a worker that exited meanwhile is no error
      } catch (error) {
        process.stderr.write(`prefork: a socket.io adapter message from worker ${sender.id} (pid ${sender.pid}) was not relayed: ${(error as Error).message}\n`);
      }
    }
  });
}
