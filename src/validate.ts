// Option validators: each throws a TypeError/RangeError naming the option, what was given and what is allowed.
import { constants } from 'node:os';
import { invalidType, invalidValue, outOfRange } from './errors';

/** Rejects options the function does not know, suggesting the nearest valid name. */
export function checkOptionNames(where: string, options: object, valid: readonly string[]): void {
  for (const name of Object.keys(options)) {
    if (valid.includes(name)) continue;
    const hint = nearestName(name, valid);
    const error = new TypeError(
      `Unknown option "${name}" for ${where}.${hint ? ` Did you mean "${hint}"?` : ''} Valid options: ${valid.join(', ')}`,
    );
    throw Object.assign(error, { code: 'ERR_INVALID_ARG_VALUE' });
  }
}

export function checkOptionsObject(where: string, options: unknown): asserts options is Record<string, unknown> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidType(`options of ${where}`, 'an object', options);
  }
}

export function checkInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw outOfRange(name, `an integer from ${min} to ${max}`, value);
  }
  return value;
}

/** A limit that 0 turns off: 0, or an integer from `min` to `max`. */
export function checkLimit(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value);
  if (value !== 0 && (!Number.isInteger(value) || value < min || value > max)) {
    throw outOfRange(name, `0 (off) or an integer from ${min} to ${max}`, value);
  }
  return value;
}

export function checkBoolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalidType(name, 'of type boolean', value);
  return value;
}

/**
 * A whole number written as text (an environment variable, a command-line flag): decimal digits only, from
 * `min` to `max`. Otherwise `fail` is called with what is allowed and whether the text was a number at all.
 */
export function parseIntegerText(text: string, min: number, max: number, fail: (allowed: string, isNumber: boolean) => never): number {
  const allowed = `an integer from ${min} to ${max}`;
  if (!/^\d+$/.test(text.trim())) fail(allowed, false);
  const value = Number(text);
  if (value < min || value > max) fail(allowed, true);
  return value;
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const DURATION_UNITS: Record<string, number> = { '': 1, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A size written as text: bytes, or a number with a binary unit (`512M`, `512Mi`, `512MB`, `512MiB`, `1.5G`: K, M,
 * G, T are 1024-based with or without `i` and `B`, as they always were here, so `512MB` keeps its meaning).
 * Whole bytes from `min` to `max`, or 0; otherwise `fail` with what is allowed.
 */
export function parseSizeText(text: string, min: number, max: number, fail: (allowed: string) => never): number {
  const allowed = `0 (off), or bytes from ${min} to ${max}, or a number with a unit K, M, G or T (1024-based; Ki, MB, MiB… read the same; e.g. 512M)`;
  const match = /^(\d+(?:\.\d+)?)\s*(?:([kmgt])i?)?b?$/i.exec(text.trim());
  if (!match || (match[2] === undefined && match[1].includes('.'))) fail(allowed);
  const value = Math.round(Number(match[1]) * SIZE_UNITS[(match[2] ?? '').toLowerCase()]);
  if (value !== 0 && (value < min || value > max)) fail(allowed);
  return value;
}

/**
 * A duration written as text: ms, or a number with a unit (`500ms`, `30s`, `15m`, `6h`, `1d`). 0, or `min` to
 * `max` ms. With a `min` above 0, 0 turns the limit off.
 */
export function parseDurationText(text: string, min: number, max: number, fail: (allowed: string) => never): number {
  const units = 'a number with a unit ms, s, m, h or d (e.g. 6h)';
  const allowed = min > 0 ? `0 (off), or ms from ${min} to ${max}, or ${units}` : `ms from 0 to ${max}, or ${units}`;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i.exec(text.trim());
  if (!match || (match[2] === undefined && match[1].includes('.'))) fail(allowed);
  const value = Math.round(Number(match[1]) * DURATION_UNITS[(match[2] ?? '').toLowerCase()]);
  if (value !== 0 && (value < min || value > max)) fail(allowed);
  return value;
}

/** A string usable in argv, env or a path: non-empty and without NUL bytes. */
export function checkString(name: string, value: unknown, { allowEmpty = false } = {}): string {
  if (typeof value !== 'string') throw invalidType(name, 'of type string', value);
  if (!allowEmpty && value.length === 0) throw invalidValue(name, 'must be a non-empty string', value);
  if (value.includes('\0')) throw invalidValue(name, 'must not contain null bytes', value);
  return value;
}

/** A signal name such as 'SIGTERM'; returns its number on this platform. */
export function checkSignal(name: string, value: unknown): number {
  if (typeof value !== 'string') throw invalidType(name, 'a signal name such as "SIGTERM"', value);
  const signals = constants.signals as Record<string, number>;
  const number = signals[value];
  if (number === undefined) {
    throw invalidValue(name, `must be a signal name (${Object.keys(signals).slice(0, 4).join(', ')}, …)`, value);
  }
  return number;
}

/** The name in `valid` nearest to `name` (case-insensitive), if it is near enough to be a slip (2 edits at most). */
export function nearestName(name: string, valid: readonly string[]): string | undefined {
  const distances = valid.map((candidate) => editDistance(candidate.toLowerCase(), name.toLowerCase()));
  const nearest = Math.min(...distances);
  return nearest <= 2 ? valid[distances.indexOf(nearest)] : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

/** A switch's text (an environment variable's): 1, true, yes, on, or 0, false, no, off, empty. */
export function parseSwitchText(text: string, fail: (allowed: string) => never): boolean {
  const value = text.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(value)) return false;
  return fail('1, true, yes, on, 0, false, no or off');
}
