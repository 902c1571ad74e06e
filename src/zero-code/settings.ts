// The settings of an unchanged app's run, one row each: the prefork command's flag and the PREFORK_* variable of
// both the command and register mode. The argv parser, the environment reader, `prefork --help` and the table of
// docs/configuration.md are all made from SETTINGS.
import { usableCpuCount } from '../core/system';
import {
  DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_MAX_REQUESTED_ADDRESSES, DEFAULT_READY_TIMEOUT_MS, DEFAULT_SHUTDOWN_TIMEOUT_MS, DEFAULT_STORE_CAPACITY, MAX_INT, MAX_REQUESTED_ADDRESSES, MAX_RESTARTS,
  MAX_STORE_CAPACITY, MAX_TIMEOUT_MS, MAX_WORKERS, MIN_HEARTBEAT_TIMEOUT_MS, MIN_MAX_AGE_MS, MIN_MAX_MEMORY,
} from '../limits';
import { DEFAULT_BALANCE, type SupervisorOptions } from '../primary/options';
import { RESTART_DEFAULTS } from '../primary/restart-policy';
import { BALANCE_MODES } from '../primary/steering';
import { parseListenAddress } from '../protocol/address';
import { SERIALIZATIONS } from '../protocol/app-messages';
import { ENV_LOG_PREFIX } from './log-prefix';
import { parseDurationText, parseIntegerText, parseSizeText, parseSwitchText } from '../validate';

/** Called with what a value may be (and whether the text was a number at all, for a RangeError); throws. */
export type Fail = (allowed: string, isNumber?: boolean) => never;

/** How the text of a flag or variable is read, and how it is shown in --help and the docs. */
export interface ValueKind {
  /** The value's placeholder in --help (N, DURATION…); none for a switch, a flag that takes no value. */
  placeholder?: string;
  /** What the text may be (the docs' unit/values column). */
  values: string;
  parse(text: string, fail: Fail): unknown;
  /** How the variable is read, where that differs from one flag (a list a repeated flag gives item by item). */
  parseVariable?(text: string, fail: Fail): unknown;
}

export interface Setting {
  /** The long flag, without `--`. */
  flag: string;
  short?: string;
  variable: string;
  /** The supervise() option it sets ('recycle.maxAge': a key of a group); none for the command's own settings. */
  option?: string;
  kind: ValueKind;
  /** The flag may be given more than once; its values add up. */
  repeatable?: boolean;
  default: string;
  description: string;
}

const SWITCH: ValueKind = {
  values: 'switch (the variable: 1, true, yes, on or 0, false, no, off)',
  parse: parseSwitchText,
};

const count = (min: number, max: number): ValueKind => ({
  placeholder: 'N',
  values: `an integer, ${min} to ${max}`,
  parse: (text, fail) => parseIntegerText(text, min, max, fail),
});

/** A duration: bare digits are ms, as they always were; with a unit ms, s, m, h or d. */
const duration = (min: number): ValueKind => ({
  placeholder: 'DURATION',
  values: `duration: ms, or 500ms, 30s, 5m, 6h, 1d${min > 0 ? `; ${min} ms at least, or 0` : ''}`,
  parse: (text, fail) => parseDurationText(text, min, MAX_TIMEOUT_MS, fail),
});

const freeText = (placeholder: string, values: string): ValueKind => ({
  placeholder,
  values,
  parse: (text, fail) => (text.trim() === '' ? fail('non-empty') : text.trim()),
});

/** One of `choices`; a `deprecated` value is still accepted (the option handles it) but not offered. */
const choice = (choices: readonly string[], deprecated: readonly string[] = []): ValueKind => ({
  placeholder: 'MODE',
  values: choices.join(', '),
  parse: (text, fail) => ([...choices, ...deprecated].includes(text.trim()) ? text.trim() : fail(`one of ${choices.join(', ')}`)),
});

/** A default in ms as the docs show it: 100ms, 30s, 1m. */
const shown = (ms: number): string => (ms % 60000 === 0 ? `${ms / 60000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);

const CPUS = 'max (the CPUs this process may use)';

const WORKERS: ValueKind = {
  placeholder: 'N|max',
  values: `1 to ${MAX_WORKERS}, or max`,
  parse(text, fail) {
    if (text.trim() === 'max') return usableCpuCount();
    return parseIntegerText(text, 1, MAX_WORKERS, (allowed, isNumber) => fail(`${allowed}, or ${CPUS}`, isNumber));
  },
};

/** PM2's `-i`: N, `max` or 0 for every CPU, -N for all of them but N (at least 1). */
export const PM2_INSTANCES = {
  flag: 'instances',
  short: 'i',
  of: 'workers',
  kind: {
    placeholder: 'N|max|0|-N',
    values: 'N, max or 0 (every CPU), -N (all CPUs but N, at least 1)',
    parse(text, fail) {
      const value = text.trim();
      if (value === 'max' || value === '0') return usableCpuCount();
      if (/^-\d+$/.test(value)) return Math.max(1, usableCpuCount() - Number(value.slice(1)));
      return parseIntegerText(text, 1, MAX_WORKERS, (allowed, isNumber) =>
        fail(`${allowed}, or max or 0 (the CPUs this process may use), or -N (all of them but N)`, isNumber));
    },
  } satisfies ValueKind,
  description: "PM2's form of --workers: 0 or max: every CPU this process may use; -N: all of them but N (at least 1)",
};

/** "3000,127.0.0.1:8080,[::1]:9000": the addresses the primary opens, and the only ones for dropped privileges. */
function parseAddressList(text: string, fail: (allowed: string) => never): string[] {
  const allowed = 'a comma-separated list of ports or host:port (e.g. 3000,127.0.0.1:8080,[::1]:9000)';
  const entries = text.split(',').map((entry) => entry.trim());
  if (entries.some((entry) => entry === '')) fail(allowed);
  for (const entry of entries) {
    try {
      parseListenAddress(entry);
    } catch {
      fail(allowed);
    }
  }
  return entries;
}

const ADDRESSES: ValueKind = { placeholder: 'LIST', values: 'ports or host:port, comma-separated: 3000, 127.0.0.1:8080,[::1]:9000', parse: parseAddressList };

/** The metrics endpoint's address: a port or host:port (the path is /metrics). */
const METRICS_ADDRESS: ValueKind = {
  placeholder: '[HOST:]PORT',
  values: 'a port or host:port: 9100, 127.0.0.1:9100',
  parse(text, fail) {
    try {
      const value = text.trim();
      parseListenAddress(value, 'metrics');
      return value;
    } catch {
      return fail('a port or host:port for the metrics endpoint (e.g. 9100 or 127.0.0.1:9100)');
    }
  },
};

const NODE_ARGS: ValueKind = {
  placeholder: 'ARG',
  values: 'one Node.js option per flag; the variable: several, space-separated',
  parse: (text, fail) => (text === '' ? fail('a Node.js option, e.g. --max-old-space-size=512') : [text]),
  parseVariable: (text) => text.split(/\s+/).filter(Boolean),
};

export const SETTINGS: readonly Setting[] = [
  { flag: 'workers', short: 'w', variable: 'PREFORK_WORKERS', option: 'workers', kind: WORKERS, default: 'max', description: 'number of workers; max: the CPUs this process may use (affinity and cgroup CPU quota)' },
  {
    flag: 'listen', variable: 'PREFORK_LISTEN', option: 'listen', kind: ADDRESSES, repeatable: true, default: 'none',
    description: 'addresses the primary opens at start; with --user/--group the only ones workers may listen on',
  },
  {
    flag: 'max-requested-addresses', variable: 'PREFORK_MAX_REQUESTED_ADDRESSES', option: 'maxRequestedAddresses', kind: count(0, MAX_REQUESTED_ADDRESSES),
    default: String(DEFAULT_MAX_REQUESTED_ADDRESSES), description: 'addresses beyond --listen workers may have the primary open on request; 0: none',
  },
  {
    flag: 'shutdown-timeout', variable: 'PREFORK_SHUTDOWN_TIMEOUT', option: 'shutdownTimeout', kind: duration(0), default: shown(DEFAULT_SHUTDOWN_TIMEOUT_MS),
    description: 'time a worker gets to finish in-flight requests before SIGKILL; 0: SIGKILL at once',
  },
  { flag: 'ready-timeout', variable: 'PREFORK_READY_TIMEOUT', option: 'readyTimeout', kind: duration(0), default: shown(DEFAULT_READY_TIMEOUT_MS), description: 'time a new worker gets to become ready; 0: no limit' },
  {
    flag: 'wait-ready', variable: 'PREFORK_WAIT_READY', option: 'waitReady', kind: SWITCH, default: 'off',
    description: "a worker is ready only once it calls process.send('ready') or prefork's ready()",
  },
  {
    flag: 'serialization', variable: 'PREFORK_SERIALIZATION', option: 'serialization', kind: choice(SERIALIZATIONS), default: 'json',
    description: "how process.send() messages are serialised, as node:cluster's: json, or advanced (v8.serialize: Map, Date, BigInt, Buffer…)",
  },
  { flag: 'user', variable: 'PREFORK_USER', option: 'user', kind: freeText('USER', 'a user name or uid'), default: 'unchanged', description: 'run workers as this user (a root primary); its group unless --group' },
  { flag: 'group', variable: 'PREFORK_GROUP', option: 'group', kind: freeText('GROUP', 'a group name or gid'), default: 'unchanged', description: 'run workers with this group (a root primary)' },
  { flag: 'cpu-affinity', variable: 'PREFORK_CPU_AFFINITY', option: 'cpuAffinity', kind: SWITCH, default: 'off', description: 'pin worker k to the k-th usable CPU (Linux)' },
  {
    flag: 'sockets', variable: 'PREFORK_SOCKETS', option: 'sockets', kind: choice(['reuseport', 'shared']), default: 'shared; reuseport on Linux when --balance is given',
    description: 'shared: one accept queue every worker takes from when ready (the best tail); reuseport: a socket per worker, the kernel picks one per connection',
  },
  {
    flag: 'balance', variable: 'PREFORK_BALANCE', option: 'balance', kind: choice(BALANCE_MODES, ['least-loaded']), default: DEFAULT_BALANCE,
    description: "how the kernel picks a worker's socket (reuseport sockets): hash, or client-ip (the same client to the same worker); least-loaded is deprecated and ignored",
  },
  {
    flag: 'store-capacity', variable: 'PREFORK_STORE_CAPACITY', option: 'storeCapacity', kind: count(0, MAX_STORE_CAPACITY), default: String(DEFAULT_STORE_CAPACITY),
    description: 'keys of the shared counter store; 0: no store',
  },
  {
    flag: 'restart-delay', variable: 'PREFORK_RESTART_DELAY', option: 'restart.delay', kind: duration(0), default: shown(RESTART_DEFAULTS.delay),
    description: 'delay before the second restart of a crashing slot in a row, ×1.5 for each next one',
  },
  { flag: 'restart-max-delay', variable: 'PREFORK_RESTART_MAX_DELAY', option: 'restart.maxDelay', kind: duration(0), default: shown(RESTART_DEFAULTS.maxDelay), description: 'the longest restart delay' },
  {
    flag: 'restart-reset-after', variable: 'PREFORK_RESTART_RESET_AFTER', option: 'restart.resetAfter', kind: duration(0), default: shown(RESTART_DEFAULTS.resetAfter),
    description: "a worker up this long resets its slot's restart delay",
  },
  {
    flag: 'max-restarts', variable: 'PREFORK_MAX_RESTARTS', option: 'restart.maxRestarts', kind: count(0, MAX_RESTARTS), default: String(RESTART_DEFAULTS.maxRestarts),
    description: 'give up (and stop) after this many restarts of a slot within --restart-window; 0: at the first crash',
  },
  { flag: 'restart-window', variable: 'PREFORK_RESTART_WINDOW', option: 'restart.window', kind: duration(0), default: shown(RESTART_DEFAULTS.window), description: 'the window of --max-restarts' },
  {
    flag: 'heartbeat-timeout', variable: 'PREFORK_HEARTBEAT_TIMEOUT', option: 'heartbeatTimeout', kind: duration(MIN_HEARTBEAT_TIMEOUT_MS),
    default: `${shown(DEFAULT_HEARTBEAT_TIMEOUT_MS)} (off under --inspect)`, description: 'a worker whose event loop is stuck this long is killed and replaced; 0: off',
  },
  {
    flag: 'max-requests', variable: 'PREFORK_MAX_REQUESTS', option: 'recycle.maxRequests', kind: count(0, MAX_INT), default: '0 (off)',
    description: 'recycle a worker (gracefully, one at a time) after N requests',
  },
  {
    flag: 'max-requests-jitter', variable: 'PREFORK_MAX_REQUESTS_JITTER', option: 'recycle.maxRequestsJitter', kind: count(0, MAX_INT), default: '0',
    description: "add a random 0 to N to each worker's --max-requests",
  },
  {
    flag: 'max-memory', variable: 'PREFORK_MAX_MEMORY', option: 'recycle.maxMemory',
    kind: {
      placeholder: 'SIZE',
      values: `bytes, or with a unit K, M, G, T (1024-based; Ki, KB, KiB… read the same): 512M, 1.5G; ${MIN_MAX_MEMORY / 1024 / 1024} MiB at least, or 0`,
      parse: (text, fail) => parseSizeText(text, MIN_MAX_MEMORY, Number.MAX_SAFE_INTEGER, fail),
    },
    default: '0 (off)', description: 'recycle a worker whose resident memory (RSS) reaches this size',
  },
  { flag: 'max-age', variable: 'PREFORK_MAX_AGE', option: 'recycle.maxAge', kind: duration(MIN_MAX_AGE_MS), default: '0 (off)', description: 'recycle a worker after it ran this long' },
  { flag: 'metrics', variable: 'PREFORK_METRICS', option: 'metrics', kind: METRICS_ADDRESS, default: 'none', description: 'serve Prometheus metrics from the primary at http://ADDRESS/metrics' },
  { flag: 'pid-file', variable: 'PREFORK_PID_FILE', option: 'pidFile', kind: freeText('PATH', 'a file path'), default: 'none', description: "write the primary's pid to PATH (atomically); removed at exit" },
  { flag: 'node-arg', variable: 'PREFORK_NODE_ARGS', kind: NODE_ARGS, repeatable: true, default: 'none', description: 'a Node.js option for the workers, e.g. --max-old-space-size=512' },
  { flag: 'log-prefix', variable: ENV_LOG_PREFIX, kind: SWITCH, default: 'off', description: 'prefix each line workers print with "[worker N] "' },
  {
    flag: 'watch', variable: 'PREFORK_WATCH', kind: SWITCH, default: 'off',
    description: "development: a rolling reload (as SIGHUP) when a file in the app's directory changes",
  },
];

export const isSwitch = (setting: { kind: ValueKind }): boolean => setting.kind === SWITCH;

/** Values by flag name, from flags, variables or both (a flag's value replaces its variable's). */
export type SettingValues = Record<string, unknown>;

/** What a run needs from its settings: supervise()'s options and the command's own. */
export interface RunSettings {
  options: SupervisorOptions;
  nodeArgs: string[];
  logPrefix: boolean;
  watch: boolean;
}

export function runSettings(values: SettingValues): RunSettings {
  const options: Record<string, unknown> = {};
  for (const { flag, option } of SETTINGS) {
    if (option === undefined || values[flag] === undefined) continue;
    const [head, key] = option.split('.');
    options[head] = key === undefined ? values[flag] : { ...(options[head] as object | undefined), [key]: values[flag] };
  }
  return {
    options: options as SupervisorOptions,
    nodeArgs: (values['node-arg'] as string[] | undefined) ?? [],
    logPrefix: values['log-prefix'] === true,
    watch: values.watch === true,
  };
}
