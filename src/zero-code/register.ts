// `node -r prefork/register app.js` and `node --import prefork/register app.mjs`: the process becomes the
// primary of app.js and runs none of its code; each worker runs the app with every listen() intercepted.
// Worker threads and processes the app starts inherit the preload; there it does nothing (see role.ts).
import Module from 'node:module';
import { debug } from '../debug';
import { registerRole } from './role';

/** True in the primary: register.mjs then holds the ES-module main back. */
export let runsPrimary = false;

function startPrimary(): void {
  if (!process.argv[1]) {
    process.stderr.write('prefork/register: no app to run. Usage: node -r prefork/register app.js\n');
    process.exit(1);
  }
  try {
    // Workers are started as this process was: same Node options (so they preload prefork/register too).
    // Required here, not above: a worker's preload (every start, every reload) need not load the supervisor.
    const { resolveApp, runApp } = require('./run') as typeof import('./run');
    const { settingsFromEnvironment } = require('./env-options') as typeof import('./env-options');
    const { runSettings } = require('./settings') as typeof import('./settings');
    const { options, nodeArgs, watch } = runSettings(settingsFromEnvironment());
    // `node -r prefork/register .` runs the directory's main file: so do the workers.
    const app = resolveApp(process.argv[1]);
    runApp(
      { ...options, script: app?.script ?? process.argv[1], args: process.argv.slice(2), execArgv: [...process.execArgv, ...nodeArgs] },
      { watch: watch && app ? app.directory : undefined },
    );
  } catch (error) {
    process.stderr.write(`prefork: ${(error as Error).message}\n`);
    process.exit(1);
  }
  // The primary runs no app code: Node calls Module.runMain for the main module after the preloads
  // (a documented hook for -r preloads); under --import, register.mjs holds the main back instead.
  (Module as unknown as { runMain: (...args: unknown[]) => void }).runMain = () => {};
  runsPrimary = true;
}

const role = registerRole();
debug('register: %s (pid %d)', role, process.pid);
// The worker side is required only in a worker: the primary, idle for the app's life, never loads it.
if (role === 'worker') (require('./intercept') as typeof import('./intercept')).interceptListens();
else if (role === 'primary') startPrimary();
else if (role === 'unsupported') {
  process.stderr.write(`prefork: ${process.platform} is not supported (prefork needs Linux or macOS); running the app as one process\n`);
}
