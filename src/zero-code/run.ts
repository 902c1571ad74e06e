// Running an unchanged app (register mode, the prefork command): supervise it and log its lifecycle on stderr.
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { SupervisorOptions } from '../primary/options';
import { describeExit, startSupervisor, type Supervisor } from '../primary/supervisor';
import { ENV_HANDOVER } from '../primary/upgrade';
import { formatAddress } from '../protocol/address';
import { ENV_DESCENDANT_OF } from '../protocol/messages';
import { unknownVariableWarnings } from './env-options';
import { relaySocketIoAdapter } from './socket-io-relay';
import { reloadOnChange, WATCHED_EXTENSIONS } from './watch';

/**
 * The file an app path names, resolved as `node <path>` does: a file (`app` finds app.js), or a directory's
 * package.json "main", else its index.js. Null when there is none. `directory`: the one watch mode looks at,
 * the directory named, else the file's.
 */
export function resolveApp(path: string): { script: string; directory: string } | null {
  const absolute = resolve(path);
  let script: string;
  try {
    script = require.resolve(absolute);
  } catch {
    return null;
  }
  return { script, directory: statSync(absolute, { throwIfNoEntry: false })?.isDirectory() ? absolute : dirname(script) };
}

const log = (line: string) => process.stderr.write(`prefork: ${line}\n`);

/** PREFORK_* variables that are no setting: what prefork sets for its workers, their children and a new primary, and the test suite's. */
const isInternalVariable = (name: string): boolean =>
  name.startsWith('PREFORK_WORKER_') || name.startsWith('PREFORK_TEST_') || [ENV_DESCENDANT_OF, ENV_HANDOVER, 'PREFORK_RACE_SEED', 'PREFORK_PREBUILDS_REQUIRED'].includes(name);

/**
 * Starts the supervisor (bad options throw) and reports starts, exits, restarts, reloads and scaling. `watch`: the
 * directory whose changes reload the workers (development mode).
 */
export function runApp(options: SupervisorOptions, { watch }: { watch?: string } = {}): Supervisor {
  for (const line of unknownVariableWarnings(process.env, isInternalVariable)) log(line);
  const supervisor = startSupervisor({ signals: true, exitProcess: true, reapOrphans: true, ...options });
  relaySocketIoAdapter(supervisor); // as setupPrimary() would: no app code runs here to call it
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
  if (watch !== undefined) {
    // From the first ready: a reload needs running workers, and a change while they start is in their code already.
    supervisor.ready().then(
      () => {
        // A reload that a stop cuts short is no failure to report.
        const reload = () => (supervisor.shuttingDown ? Promise.resolve() : supervisor.reload().catch((error) => {
          if (!supervisor.shuttingDown) throw error;
        }));
        supervisor.once('shutdown', reloadOnChange(watch, reload, (line) => log(`watch: ${line}`)));
        log(`watch: a change under ${watch} to a file ${WATCHED_EXTENSIONS.join(' ')} reloads the workers (node_modules and dot-files aside)`);
      },
      () => {},
    );
  }
  return supervisor;
}
