#!/usr/bin/env node
// The prefork command: `prefork [options] [--] app.js [app args]` runs an unchanged app on every core.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { platformSupported } from '../core/binding';
import { join, resolve } from 'node:path';
import { MAX_TIMEOUT_MS, MAX_WORKERS } from '../limits';
import type { SupervisorOptions } from '../primary/options';
import { parseIntegerText } from '../validate';
import { BALANCE, HEARTBEAT_TIMEOUT, MAX_AGE, MAX_MEMORY, METRICS_ADDRESS, mergeOptions, optionsFromEnvironment, parseAddressList, REQUEST_COUNT, TEXT } from './env-options';
import { runApp } from './run';

const USAGE = `Usage: prefork [options] [--] app.js [app arguments]

Runs app.js (.js, .cjs or .mjs) once per CPU core, every worker serving the same ports from
SO_REUSEPORT sockets the prefork primary owns. The app needs no change.

Options:
  --workers N            number of workers (default: the CPUs this process may use)
  --listen LIST          addresses the primary opens at start, e.g. 3000 or 127.0.0.1:8080,[::1]:9000
                         (repeatable); with PREFORK_USER/PREFORK_GROUP, the only ones workers may use
  --shutdown-timeout MS  time a worker gets to finish in-flight requests before SIGKILL (default 10000)
  --ready-timeout MS     time a new worker gets to become ready (default 30000; 0: no limit)
  --wait-ready           a worker is ready only once it calls process.send('ready') or prefork's ready()
  --heartbeat-timeout MS a worker whose event loop is stuck this long is killed and replaced
                         (default 30000; 0: off; units allowed: 30s)
  --max-requests N       recycle a worker (gracefully, one at a time) after N requests
  --max-requests-jitter N  add a random 0..N to each worker's --max-requests
  --max-memory SIZE      recycle a worker whose resident memory reaches SIZE (bytes, or 512M, 1G)
  --max-age MS           recycle a worker after it ran this long (ms, or 30m, 6h)
  --balance MODE         how new connections reach workers: least-loaded, client-ip or hash (default hash)
  --metrics ADDRESS      serve Prometheus metrics from the primary at http://ADDRESS/metrics
                         (a port or host:port, e.g. 127.0.0.1:9100)
  --pid-file PATH        write the primary's pid to PATH (atomically), removed at exit
  --node-arg ARG         a Node.js option for the workers, e.g. --node-arg=--max-old-space-size=512
                         (repeatable)
  --log-prefix           prefix each line workers print with "[worker N] "
  -h, --help             print this help
  -v, --version          print prefork's version

Environment: PREFORK_WORKERS, PREFORK_SHUTDOWN_TIMEOUT, PREFORK_READY_TIMEOUT, PREFORK_WAIT_READY,
PREFORK_HEARTBEAT_TIMEOUT, PREFORK_MAX_REQUESTS, PREFORK_MAX_MEMORY, PREFORK_MAX_AGE and the other PREFORK_*
variables of the README set the same options; a flag wins over its variable.

Signals to the primary: TERM/INT stop gracefully, HUP reloads worker by worker, TTIN/TTOU add/remove one.
`;

class UsageError extends Error {}

interface Command {
  options: SupervisorOptions;
  nodeArgs: string[];
  logPrefix: boolean;
  app: string;
  appArgs: string[];
}

/** A flag's value through the parser of its environment variable; the error names the flag. */
function parsedFlag<T>(flag: string, text: string | undefined, parse: (text: string, name: string) => unknown): T {
  if (text === undefined) throw new UsageError(`${flag} needs a value`);
  try {
    return parse(text, flag) as T;
  } catch (error) {
    throw new UsageError((error as Error).message.replace(`The ${flag} environment variable`, flag));
  }
}

function integerFlag(flag: string, text: string | undefined, min: number, max: number): number {
  if (text === undefined) throw new UsageError(`${flag} needs a value`);
  return parseIntegerText(text, min, max, (allowed) => {
    throw new UsageError(`${flag} must be ${allowed}. Received '${text}'`);
  });
}

export function parseCommandLine(argv: string[]): Command | 'help' | 'version' {
  const options: SupervisorOptions = {};
  const nodeArgs: string[] = [];
  let logPrefix = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      i += 1;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break; // the app
    const equals = arg.indexOf('=');
    const flag = equals > 0 ? arg.slice(0, equals) : arg;
    const inline = equals > 0 ? arg.slice(equals + 1) : undefined;
    const value = () => inline ?? argv[++i];
    const noValue = () => {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
    };
    switch (flag) {
      case '-h':
      case '--help':
        return 'help';
      case '-v':
      case '--version':
        return 'version';
      case '--workers':
        options.workers = integerFlag(flag, value(), 1, MAX_WORKERS);
        break;
      case '--listen': {
        const list = value();
        if (list === undefined) throw new UsageError('--listen needs a value');
        const addresses = parseAddressList(list, (allowed) => {
          throw new UsageError(`--listen must be ${allowed}. Received '${list}'`);
        });
        options.listen = [...((options.listen as string[] | undefined) ?? []), ...addresses];
        break;
      }
      case '--shutdown-timeout':
        options.shutdownTimeout = integerFlag(flag, value(), 0, MAX_TIMEOUT_MS);
        break;
      case '--ready-timeout':
        options.readyTimeout = integerFlag(flag, value(), 0, MAX_TIMEOUT_MS);
        break;
      case '--wait-ready':
        noValue();
        options.waitReady = true;
        break;
      case '--heartbeat-timeout':
        options.heartbeatTimeout = parsedFlag(flag, value(), HEARTBEAT_TIMEOUT);
        break;
      case '--max-requests':
        options.recycle = { ...options.recycle, maxRequests: parsedFlag(flag, value(), REQUEST_COUNT) };
        break;
      case '--max-requests-jitter':
        options.recycle = { ...options.recycle, maxRequestsJitter: parsedFlag(flag, value(), REQUEST_COUNT) };
        break;
      case '--max-memory':
        options.recycle = { ...options.recycle, maxMemory: parsedFlag(flag, value(), MAX_MEMORY) };
        break;
      case '--max-age':
        options.recycle = { ...options.recycle, maxAge: parsedFlag(flag, value(), MAX_AGE) };
        break;
      case '--balance':
        options.balance = parsedFlag(flag, value(), BALANCE) as SupervisorOptions['balance'];
        break;
      case '--metrics':
        options.metrics = parsedFlag(flag, value(), METRICS_ADDRESS);
        break;
      case '--pid-file':
        options.pidFile = parsedFlag(flag, value(), TEXT);
        break;
      case '--node-arg': {
        const nodeArg = value();
        if (nodeArg === undefined || nodeArg === '') throw new UsageError('--node-arg needs a value');
        nodeArgs.push(nodeArg);
        break;
      }
      case '--log-prefix':
        noValue();
        logPrefix = true;
        break;
      default:
        throw new UsageError(`unknown option ${flag}`);
    }
  }
  const app = argv[i];
  if (app === undefined) throw new UsageError('no app to run');
  const path = resolve(app);
  if (!existsSync(path) || !statSync(path).isFile()) throw new UsageError(`${app}: no such file`);
  return { options, nodeArgs, logPrefix, app: path, appArgs: argv.slice(i + 1) };
}

function main(argv: string[]): void {
  let command: ReturnType<typeof parseCommandLine>;
  let environment: SupervisorOptions;
  try {
    command = parseCommandLine(argv);
    environment = optionsFromEnvironment();
  } catch (error) {
    const usage = error instanceof UsageError ? ' (see prefork --help)' : '';
    process.stderr.write(`prefork: ${(error as Error).message}${usage}\n`);
    process.exit(2);
  }
  if (command === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (command === 'version') {
    const manifest = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    process.stdout.write(`${manifest.version}\n`);
    return;
  }
  if (!platformSupported()) {
    process.stderr.write(`prefork: ${process.platform} is not supported (prefork needs Linux or macOS); running the app as one process\n`);
    const app = spawn(process.execPath, [...command.nodeArgs, command.app, ...command.appArgs], { stdio: 'inherit' });
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => app.kill(signal));
    app.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
    return;
  }
  try {
    runApp({
      ...mergeOptions(environment, command.options),
      script: command.app,
      args: command.appArgs,
      // Workers preload the register module, which turns their listen() calls into the primary's sockets.
      execArgv: [...command.nodeArgs, '--require', join(__dirname, 'register.js')],
      env: command.logPrefix ? { PREFORK_LOG_PREFIX: '1' } : {},
    });
  } catch (error) {
    process.stderr.write(`prefork: ${(error as Error).message}\n`);
    process.exit(1);
  }
}

main(process.argv.slice(2));
