// The `restart` option, and when a crashed worker's slot restarts or the primary gives up on it: pure, no
// processes or timers.
import { invalidType, outOfRange } from '../errors';
import { MAX_RESTARTS, MAX_TIMEOUT_MS } from '../limits';
import { checkInteger, checkOptionNames, checkOptionsObject } from '../validate';

export interface RestartOptions {
  /** Delay before the second restart in a row, in ms; later ones grow by `factor`. The first is immediate. Default 100. */
  delay?: number;
  /** Growth of the delay per consecutive crash. Default 1.5. */
  factor?: number;
  /** Cap of the delay, in ms. Default 15000. */
  maxDelay?: number;
  /** A worker up this long (ms) resets its slot's backoff. Default 30000. */
  resetAfter?: number;
  /** Give up on a slot after this many restarts within `window`. 0: give up at the first crash. Default 10. */
  maxRestarts?: number;
  /** The window for maxRestarts, in ms. Default 60000. */
  window?: number;
}

const RESTART_NAMES = ['delay', 'factor', 'maxDelay', 'resetAfter', 'maxRestarts', 'window'] as const;
export const RESTART_DEFAULTS: Required<RestartOptions> = {
  delay: 100, factor: 1.5, maxDelay: 15000, resetAfter: 30000, maxRestarts: 10, window: 60000,
};

export function settleRestart(restart: unknown): Required<RestartOptions> {
  if (restart === undefined) return { ...RESTART_DEFAULTS };
  checkOptionsObject('the "restart" option', restart);
  checkOptionNames('the "restart" option', restart, RESTART_NAMES);
  const settled = { ...RESTART_DEFAULTS };
  for (const name of RESTART_NAMES) {
    const value = restart[name];
    if (value === undefined) continue;
    if (name === 'factor') {
      if (typeof value !== 'number') throw invalidType('restart.factor', 'of type number', value);
      if (!(value >= 1 && value <= 100)) throw outOfRange('restart.factor', 'a number from 1 to 100', value);
      settled.factor = value;
    } else {
      settled[name] = checkInteger(`restart.${name}`, value, 0, name === 'maxRestarts' ? MAX_RESTARTS : MAX_TIMEOUT_MS);
    }
  }
  return settled;
}

/** What a slot remembers of its crashes. */
export interface CrashHistory {
  /** Crashes in a row, none after a run of at least `resetAfter` ms. */
  readonly consecutive: number;
  /** When the slot's recent restarts happened (ms since the epoch), the ones still inside `window`. */
  readonly restartTimes: readonly number[];
}

export const NO_CRASHES: CrashHistory = { consecutive: 0, restartTimes: [] };

export type RestartDecision =
  | { action: 'restart'; delay: number; history: CrashHistory }
  /** `exits`: how many times the slot exited within the window, this exit included. */
  | { action: 'give-up'; exits: number };

/**
 * The first crash after a stable run restarts at once (the slot's queued connections get served); the next
 * ones wait `delay`, growing by `factor` up to `maxDelay`. More than `maxRestarts` within `window`: give up.
 */
export function decideRestart(policy: Required<RestartOptions>, history: CrashHistory, ranForMs: number, now: number): RestartDecision {
  const consecutive = ranForMs >= policy.resetAfter ? 0 : history.consecutive;
  const restartTimes = history.restartTimes.filter((time) => now - time < policy.window);
  if (restartTimes.length >= policy.maxRestarts) return { action: 'give-up', exits: restartTimes.length + 1 };
  const crashes = consecutive + 1;
  const delay = crashes === 1 ? 0 : Math.min(policy.maxDelay, policy.delay * policy.factor ** (crashes - 2));
  return { action: 'restart', delay, history: { consecutive: crashes, restartTimes: [...restartTimes, now] } };
}
