// Running an unchanged app (register mode, the prefork command): supervise it and log its lifecycle on stderr.
import type { SupervisorOptions } from '../primary/options';
import { describeExit, supervise, type Supervisor } from '../primary/supervisor';
import { formatAddress } from '../protocol/address';

const log = (line: string) => process.stderr.write(`prefork: ${line}\n`);

/** Starts the supervisor (bad options throw) and reports starts, exits, restarts, reloads and scaling. */
export function runApp(options: SupervisorOptions): Supervisor {
  const supervisor = supervise({ signals: true, exitProcess: true, reapOrphans: true, ...options });
  const pids = () => supervisor.workers.map((worker) => worker.pid).join(', ');
  const addresses = () => supervisor.addresses.map(({ host, port }) => formatAddress(host, port)).join(', ');
  supervisor.ready().then(
    () => {
      log(`${supervisor.workers.length} worker${supervisor.workers.length === 1 ? '' : 's'} ready (pids ${pids()}) on ${addresses() || 'no address'}; primary pid ${process.pid}`);
      if (supervisor.metricsAddress) log(`metrics at ${supervisor.metricsAddress.url}`);
    },
    () => {}, // the supervisor prints why and exits
  );
  supervisor.on('exit', (worker, code, signal, reason) => {
    log(`worker ${worker.id} (pid ${worker.pid}) exited with ${describeExit(code, signal)} (${reason})`);
  });
  supervisor.on('restart', (old, next, delay, reason) => log(`worker ${old.id} restarted as pid ${next.pid} after ${delay} ms (${reason})`));
  supervisor.on('spawnfailed', (slot, error) => log(`worker ${slot} could not be started (${(error as Error).message}); retrying with backoff`));
  supervisor.on('reload', () => log(`reload done: pids ${pids()}`));
  supervisor.on('scale', (from, to) => log(`scaled from ${from} to ${to} workers`));
  return supervisor;
}
