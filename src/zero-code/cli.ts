#!/usr/bin/env node
// The prefork command: `prefork [options] [--] app.js [app args]` runs an unchanged app on every core.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { platformSupported } from '../core/binding';
import { nearestName } from '../validate';
import { settingsFromEnvironment } from './env-options';
import { ENV_LOG_PREFIX } from './log-prefix';
import { usage } from './help';
import { resolveApp, runApp } from './run';
import { isSwitch, PM2_INSTANCES, runSettings, SETTINGS, type Setting, type SettingValues } from './settings';

class UsageError extends Error {}

interface Command {
  /** The settings the flags give, by flag name (-i's under workers). */
  values: SettingValues;
  app: string;
  /** The directory --watch looks at. */
  appDirectory: string;
  appArgs: string[];
}

const FLAGS: ReadonlyArray<Pick<Setting, 'flag' | 'short' | 'kind' | 'repeatable'> & { of?: string }> = [...SETTINGS, PM2_INSTANCES];
const PARSE_OPTIONS = Object.fromEntries([
  ...FLAGS.map(({ flag, short, kind }) => [flag, { type: isSwitch({ kind }) ? 'boolean' : 'string', ...(short ? { short } : {}) }] as const),
  ['help', { type: 'boolean', short: 'h' }],
  ['version', { type: 'boolean', short: 'v' }],
]);

/**
 * The flags before the app, its path and its arguments. util.parseArgs reads argv, non-strict so that it stops at
 * nothing: the app's own flags follow it, and a value may start with a dash (`-i -1`, `--node-arg --no-warnings`).
 * Its tokens are then checked here, in order, so that each error names the flag as it was typed.
 */
export function parseCommandLine(argv: string[]): Command | 'help' | 'version' {
  const { tokens } = parseArgs({ args: argv, options: PARSE_OPTIONS, strict: false, allowPositionals: true, tokens: true });
  const values: SettingValues = {};
  let appIndex = argv.length;
  for (const token of tokens) {
    if (token.kind !== 'option') {
      appIndex = token.kind === 'positional' ? token.index : token.index + 1; // the app, or what follows `--`
      break;
    }
    const { name, rawName, value } = token;
    if (name === 'help') return 'help';
    if (name === 'version') return 'version';
    const setting = FLAGS.find((candidate) => candidate.flag === name);
    if (setting === undefined) {
      const hint = nearestName(name, [...FLAGS.map((candidate) => candidate.flag), 'help', 'version']);
      throw new UsageError(`unknown option ${rawName}${hint ? `: did you mean --${hint}?` : ''}`);
    }
    if (isSwitch(setting)) {
      if (value !== undefined) throw new UsageError(`${rawName} takes no value`);
      values[setting.flag] = true;
      continue;
    }
    if (value === undefined) throw new UsageError(`${rawName} needs a value`);
    const parsed = setting.kind.parse(value, (allowed) => {
      throw new UsageError(`${rawName} must be ${allowed}. Received '${value}'`);
    });
    const flag = setting.of ?? setting.flag;
    values[flag] = setting.repeatable ? [...((values[flag] as unknown[] | undefined) ?? []), ...(parsed as unknown[])] : parsed;
  }
  const app = argv[appIndex];
  if (app === undefined) throw new UsageError('no app to run');
  const entry = resolveApp(app);
  if (entry === null) throw new UsageError(existsSync(app) ? `${app}: a directory with neither a package.json "main" nor an index.js` : `${app}: no such file`);
  return { values, app: entry.script, appDirectory: entry.directory, appArgs: argv.slice(appIndex + 1) };
}

function main(argv: string[]): void {
  let command: ReturnType<typeof parseCommandLine>;
  let environment: SettingValues;
  try {
    command = parseCommandLine(argv);
    environment = settingsFromEnvironment();
  } catch (error) {
    // A bad flag: exit 2, as a usage error. A bad variable: 1, as in register mode.
    const usageError = error instanceof UsageError;
    process.stderr.write(`prefork: ${(error as Error).message}${usageError ? ' (see prefork --help)' : ''}\n`);
    process.exit(usageError ? 2 : 1);
  }
  if (command === 'help') {
    process.stdout.write(usage());
    return;
  }
  if (command === 'version') {
    const manifest = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    process.stdout.write(`${manifest.version}\n`);
    return;
  }
  // A flag wins over its variable: the command's values are laid over the environment's, setting by setting.
  const settings = runSettings({ ...environment, ...command.values });
  if (!platformSupported()) {
    process.stderr.write(`prefork: ${process.platform} is not supported (prefork needs Linux or macOS); running the app as one process\n`);
    const app = spawn(process.execPath, [...settings.nodeArgs, command.app, ...command.appArgs], { stdio: 'inherit' });
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => app.kill(signal));
    app.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
    return;
  }
  try {
    runApp(
      {
        ...settings.options,
        script: command.app,
        args: command.appArgs,
        // Workers preload the register module, which turns their listen() calls into the primary's sockets.
        execArgv: [...settings.nodeArgs, '--require', join(__dirname, 'register.js')],
        env: settings.logPrefix ? { [ENV_LOG_PREFIX]: '1' } : {},
      },
      { watch: settings.watch ? command.appDirectory : undefined },
    );
  } catch (error) {
    process.stderr.write(`prefork: ${(error as Error).message}\n`);
    process.exit(1);
  }
}

main(process.argv.slice(2));
