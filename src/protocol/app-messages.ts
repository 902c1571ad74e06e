// The app's own messages between primary and workers (process.send, worker.send, as node:cluster has them): how
// each rides in a control-channel frame, and the send() arguments Node's process.send takes.
import { deserialize, serialize } from 'node:v8';
import { invalidValue, preforkError } from '../errors';
import { MAX_MESSAGE_BYTES } from '../limits';

/** node:cluster's serialization modes: JSON, or the structured clone of v8.serialize (Map, Date, BigInt, Buffer…). */
export type Serialization = 'json' | 'advanced';
export const SERIALIZATIONS: readonly Serialization[] = ['json', 'advanced'];

/** A message in a frame: a JSON value as it is, or v8.serialize's bytes in base64. */
export type AppMessageFrame = { type: 'message'; data: unknown } | { type: 'message'; v8: string };

/** Characters of base64 that MAX_MESSAGE_BYTES bytes take. */
export const MAX_MESSAGE_BASE64 = Math.ceil(MAX_MESSAGE_BYTES / 3) * 4;

function tooLarge(bytes: number): Error {
  return Object.assign(
    new RangeError(`The message serialises to ${bytes} bytes; a prefork message may be at most ${MAX_MESSAGE_BYTES} bytes (it travels in one control-channel frame)`),
    { code: 'ERR_PREFORK_MESSAGE_TOO_LARGE' },
  );
}

/** The frame for `message`; throws as Node's send would (a value JSON or v8 cannot take), or when it is too large. */
export function encodeAppMessage(message: unknown, serialization: Serialization): AppMessageFrame {
  if (message === undefined) {
    throw Object.assign(new TypeError('The "message" argument must be specified'), { code: 'ERR_MISSING_ARGS' });
  }
  if (serialization === 'advanced') {
    const bytes = serialize(message);
    if (bytes.length > MAX_MESSAGE_BYTES) throw tooLarge(bytes.length);
    return { type: 'message', v8: bytes.toString('base64') };
  }
  const text = JSON.stringify(message);
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_MESSAGE_BYTES) throw tooLarge(bytes);
  return { type: 'message', data: message }; // the channel writes it as the same JSON text
}

/**
 * The value a frame carries. v8 data from a worker is untrusted: the deserializer refuses lengths past its bytes,
 * the bytes are capped, and a failure (garbage, nesting too deep) comes back as a problem, not a throw.
 */
export function decodeAppMessage(frame: AppMessageFrame): { value: unknown } | { problem: string } {
  if ('data' in frame) return { value: frame.data };
  try {
    return { value: deserialize(Buffer.from(frame.v8, 'base64')) };
  } catch (error) {
    return { problem: `a message v8 cannot deserialise (${(error as Error).message})` };
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A worker's message frame as the protocol allows it, or null. */
export function checkAppMessage(fields: Record<string, unknown>): AppMessageFrame | null {
  const keys = Object.keys(fields);
  if (keys.length !== 2) return null;
  if ('data' in fields) return { type: 'message', data: fields.data };
  const { v8 } = fields;
  if (typeof v8 !== 'string' || v8.length > MAX_MESSAGE_BASE64 || v8.length % 4 !== 0 || !BASE64.test(v8)) return null;
  return { type: 'message', v8 };
}

export type SendCallback = (error: Error | null) => void;

/**
 * Node's send(message[, sendHandle[, options]][, callback]), read as Node reads it. Messages carry no handles
 * here: a sendHandle other than undefined or null throws.
 */
export function sendCallback(method: string, args: unknown[]): SendCallback | undefined {
  let [sendHandle, options, callback] = args;
  if (typeof sendHandle === 'function') {
    callback = sendHandle;
    sendHandle = undefined;
  } else if (typeof options === 'function') {
    callback = options;
    options = undefined;
  }
  if (sendHandle !== undefined && sendHandle !== null) {
    throw invalidValue('sendHandle', `of ${method} must be undefined or null: prefork messages carry no handles (sockets, servers)`, sendHandle);
  }
  if (callback !== undefined && typeof callback !== 'function') {
    throw Object.assign(new TypeError(`The "callback" argument of ${method} must be of type function`), { code: 'ERR_INVALID_ARG_TYPE' });
  }
  return callback as SendCallback | undefined;
}

/** Node's ERR_IPC_CHANNEL_CLOSED: sent on a channel that is gone. */
export function channelClosed(): Error {
  return preforkError('ERR_IPC_CHANNEL_CLOSED', 'Channel closed');
}
