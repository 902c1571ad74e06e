// Error constructors: Node-style argument errors and prefork's own ERR_PREFORK_* errors.
import { inspect } from 'node:util';

export type ErrorWithCode = Error & { code: string };

function withCode<E extends Error>(error: E, code: string): E & { code: string } {
  return Object.assign(error, { code });
}

/** How a received value is shown in a message, as Node does ("Received type string ('x')"). */
export function describeReceived(value: unknown): string {
  if (value === null || value === undefined) return `Received ${value}`;
  if (typeof value === 'function') return `Received function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') return `Received ${inspect(value, { depth: 0, breakLength: Infinity })}`;
  let shown = inspect(value);
  if (shown.length > 40) shown = `${shown.slice(0, 37)}...`;
  return `Received type ${typeof value} (${shown})`;
}

export function invalidType(name: string, expected: string, value: unknown): TypeError & { code: string } {
  return withCode(new TypeError(`The "${name}" option must be ${expected}. ${describeReceived(value)}`), 'ERR_INVALID_ARG_TYPE');
}

export function outOfRange(name: string, allowed: string, value: unknown): RangeError & { code: string } {
  return withCode(new RangeError(`The "${name}" option must be ${allowed}. Received ${inspect(value)}`), 'ERR_OUT_OF_RANGE');
}

export function invalidValue(name: string, reason: string, value: unknown): TypeError & { code: string } {
  return withCode(new TypeError(`The "${name}" option ${reason}. Received ${inspect(value)}`), 'ERR_INVALID_ARG_VALUE');
}

/** prefork's own failures, with stable ERR_PREFORK_* codes. */
export function preforkError(code: string, message: string): ErrorWithCode {
  return withCode(new Error(message), code);
}
