// Supervisor options from PREFORK_* environment variables (register mode and the prefork command).
import {
  MAX_INT, MAX_REQUESTED_ADDRESSES, MAX_RESTARTS, MAX_STORE_CAPACITY, MAX_TIMEOUT_MS, MAX_WORKERS, MIN_HEARTBEAT_TIMEOUT_MS, MIN_MAX_AGE_MS, MIN_MAX_MEMORY,
} from '../limits';
import type { SupervisorOptions } from '../primary/options';
import { BALANCE_MODES } from '../primary/steering';
import { parseListenAddress } from '../protocol/address';
import { parseDurationText, parseIntegerText, parseSizeText } from '../validate';

type Parse = (text: string, name: string) => unknown;

function fail(name: string, allowed: string, text: string, type: typeof TypeError | typeof RangeError = TypeError): never {
  const error = new type(`The ${name} environment variable must be ${allowed}. Received '${text}'`);
  throw Object.assign(error, { code: 'ERR_INVALID_ARG_VALUE' });
}

const integer = (min: number, max: number): Parse => (text, name) =>
  parseIntegerText(text, min, max, (allowed, isNumber) => fail(name, allowed, text, isNumber ? RangeError : TypeError));

const boolean: Parse = (text, name) => {
  const value = text.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(value)) return false;
  return fail(name, '1, true, yes, on, 0, false, no or off', text);
};

export const TEXT: Parse = (value, name) => (value.trim() === '' ? fail(name, 'non-empty', value) : value.trim());

const MS = integer(0, MAX_TIMEOUT_MS);
const duration = (min: number): Parse => (text, name) => parseDurationText(text, min, MAX_TIMEOUT_MS, (allowed) => fail(name, allowed, text));
const size = (min: number): Parse => (text, name) => parseSizeText(text, min, Number.MAX_SAFE_INTEGER, (allowed) => fail(name, allowed, text));

/** Parsers shared with the command's flags (--heartbeat-timeout, --max-memory, --max-age). */
export const HEARTBEAT_TIMEOUT = duration(MIN_HEARTBEAT_TIMEOUT_MS);
export const MAX_MEMORY = size(MIN_MAX_MEMORY);
export const MAX_AGE = duration(MIN_MAX_AGE_MS);
export const REQUEST_COUNT = integer(0, MAX_INT);
/** The metrics endpoint's address: a port or host:port (the path is /metrics). */
export const METRICS_ADDRESS: Parse = (text, name) => {
  try {
    const value = text.trim();
    parseListenAddress(value, name);
    return value;
  } catch {
    return fail(name, 'a port or host:port for the metrics endpoint (e.g. 9100 or 127.0.0.1:9100)', text);
  }
};

/** "3000,127.0.0.1:8080,[::1]:9000": the addresses the primary opens, and the only ones for dropped privileges. */
export function parseAddressList(text: string, fail: (allowed: string) => never): string[] {
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

/** The `balance` option: one of BALANCE_MODES. */
export const BALANCE: Parse = (value, name) =>
  (BALANCE_MODES as readonly string[]).includes(value.trim()) ? value.trim() : fail(name, `one of ${BALANCE_MODES.join(', ')}`, value);

/** Variable → [option path, parser]. Documented in the README's table. */
export const ENVIRONMENT_OPTIONS: Record<string, [string, Parse]> = {
  PREFORK_WORKERS: ['workers', integer(1, MAX_WORKERS)],
  PREFORK_LISTEN: ['listen', (value, name) => parseAddressList(value, (allowed) => fail(name, allowed, value))],
  PREFORK_MAX_REQUESTED_ADDRESSES: ['maxRequestedAddresses', integer(0, MAX_REQUESTED_ADDRESSES)],
  PREFORK_SHUTDOWN_TIMEOUT: ['shutdownTimeout', MS],
  PREFORK_READY_TIMEOUT: ['readyTimeout', MS],
  PREFORK_WAIT_READY: ['waitReady', boolean],
  PREFORK_USER: ['user', TEXT],
  PREFORK_GROUP: ['group', TEXT],
  PREFORK_CPU_AFFINITY: ['cpuAffinity', boolean],
  PREFORK_STORE_CAPACITY: ['storeCapacity', integer(0, MAX_STORE_CAPACITY)],
  PREFORK_SOCKETS: ['sockets', (value, name) => (['reuseport', 'shared'].includes(value.trim()) ? value.trim() : fail(name, "'reuseport' or 'shared'", value))],
  PREFORK_BALANCE: ['balance', BALANCE],
  PREFORK_RESTART_DELAY: ['restart.delay', MS],
  PREFORK_RESTART_MAX_DELAY: ['restart.maxDelay', MS],
  PREFORK_RESTART_RESET_AFTER: ['restart.resetAfter', MS],
  PREFORK_MAX_RESTARTS: ['restart.maxRestarts', integer(0, MAX_RESTARTS)],
  PREFORK_RESTART_WINDOW: ['restart.window', MS],
  PREFORK_HEARTBEAT_TIMEOUT: ['heartbeatTimeout', HEARTBEAT_TIMEOUT],
  PREFORK_MAX_REQUESTS: ['recycle.maxRequests', REQUEST_COUNT],
  PREFORK_MAX_REQUESTS_JITTER: ['recycle.maxRequestsJitter', REQUEST_COUNT],
  PREFORK_MAX_MEMORY: ['recycle.maxMemory', MAX_MEMORY],
  PREFORK_MAX_AGE: ['recycle.maxAge', MAX_AGE],
  PREFORK_METRICS: ['metrics', METRICS_ADDRESS],
  PREFORK_PID_FILE: ['pidFile', TEXT],
};

/** Options from two sources, `over` winning, nested groups (restart, recycle) merged key by key. */
export function mergeOptions(under: SupervisorOptions, over: SupervisorOptions): SupervisorOptions {
  const merged: SupervisorOptions = { ...under, ...over };
  if (under.restart || over.restart) merged.restart = { ...under.restart, ...over.restart };
  if (under.recycle || over.recycle) merged.recycle = { ...under.recycle, ...over.recycle };
  return merged;
}

/** PREFORK_LOG_PREFIX: workers prefix their output lines with "[worker N] ". Read in the worker. */
export const ENV_LOG_PREFIX = 'PREFORK_LOG_PREFIX';

/** The supervisor options the environment sets; a bad value throws an error that names the variable. */
export function optionsFromEnvironment(env: NodeJS.ProcessEnv = process.env): SupervisorOptions {
  const options: Record<string, unknown> = {};
  for (const [name, [path, parse]] of Object.entries(ENVIRONMENT_OPTIONS)) {
    const raw = env[name];
    if (raw === undefined) continue;
    const value = parse(raw, name);
    const [head, tail] = path.split('.');
    if (tail === undefined) options[head] = value;
    else options[head] = { ...(options[head] as object | undefined), [tail]: value };
  }
  if (env[ENV_LOG_PREFIX] !== undefined) boolean(env[ENV_LOG_PREFIX], ENV_LOG_PREFIX);
  return options as SupervisorOptions;
}

export function logPrefixWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[ENV_LOG_PREFIX] !== undefined && boolean(env[ENV_LOG_PREFIX], ENV_LOG_PREFIX) === true;
}
