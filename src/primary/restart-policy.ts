// When a crashed worker's slot restarts, and when the primary gives up on it: pure, no processes or timers.
import type { RestartOptions } from './options';

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
