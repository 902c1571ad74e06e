// Compiled by `tsc -p tsconfig.json` (npm test), never run: a misspelt Supervisor event, or a listener whose
// arguments do not match the event's, must not compile. An unused @ts-expect-error is itself an error, so each
// one below proves that tsc refuses the line after it.
import type { Supervisor, SupervisorEvents, Worker } from '../src';

export function typedEvents(supervisor: Supervisor): void {
  // @ts-expect-error 'exitt' is no event of a Supervisor
  supervisor.on('exitt', () => {});
  // @ts-expect-error 'ready' is not 'readdy'
  supervisor.once('readdy', () => {});
  // @ts-expect-error 'exit' gives the exit code as a number or null, not a string
  supervisor.on('exit', (worker: Worker, code: string) => void [worker, code]);
  // @ts-expect-error 'scale' gives two numbers
  supervisor.addListener('scale', (from: string) => void from);
  // @ts-expect-error 'giveup' gives the slot number first, then the error
  supervisor.prependListener('giveup', (error: Error) => void error);
  // @ts-expect-error 'restart' gives the delay as a number
  supervisor.emit('restart', {} as Worker, {} as Worker, '100 ms', 'crash');
  // @ts-expect-error 'reload' has no listener arguments
  supervisor.emit('reload', 1);
  // @ts-expect-error 'reloadfailed' gives an Error, not a code
  supervisor.on('reloadfailed', (code: string) => void code);
  // @ts-expect-error an unknown event cannot be removed either
  supervisor.off('shutdwn', () => {});
  // @ts-expect-error nor through removeListener
  supervisor.removeListener('exitt', () => {});

  // Every event, with its arguments inferred from the one events interface.
  supervisor.on('fork', (worker) => void worker.pid.toFixed());
  supervisor.on('online', (worker) => void worker.state);
  supervisor.on('listening', (worker, address) => void [worker.id, address.host, address.port, address.family]);
  supervisor.on('ready', (worker) => void worker.generation);
  supervisor.on('exit', (worker, code, signal, reason) => void [worker.id, code?.toFixed(), signal?.startsWith('SIG'), reason?.length]);
  supervisor.on('restart', (old, next, delay, reason) => void [old.pid, next.pid, delay.toFixed(), reason.length]);
  supervisor.on('spawnfailed', (slot, error) => void [slot.toFixed(), error.message]);
  supervisor.on('unresponsive', (worker, since) => void [worker.pid, since.toFixed()]);
  supervisor.on('recycle', (old, next, limit) => void [old.pid, next.pid, limit === 'memory']);
  supervisor.on('giveup', (slot, error) => void [slot.toFixed(), error.message]);
  supervisor.on('message', (worker, message) => void [worker.send(message, null, (error: Error | null) => error?.message), message]);
  supervisor.on('reloading', () => {});
  supervisor.on('reload', () => {});
  supervisor.on('reloadfailed', (error) => void error.message);
  supervisor.on('scale', (from, to) => void [from.toFixed(), to.toFixed()]);
  supervisor.on('upgrade', (upgrade) => void (upgrade.outcome === 'rolled-back' ? upgrade.error.message : upgrade.pid));
  supervisor.on('shutdown', () => {});
  // A listener may take fewer arguments; the methods chain as an EventEmitter's do.
  const onExit = (worker: Worker) => void worker.pid;
  supervisor.once('exit', onExit).off('exit', onExit).removeListener('exit', onExit).prependOnceListener('exit', onExit);
  supervisor.emit('scale', 2, 3);
  // The interface names each listener's arguments, for code that forwards events.
  const forward = (...args: SupervisorEvents['exit']) => void args[0].id;
  supervisor.on('exit', forward);
}
