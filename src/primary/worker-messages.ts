// What the primary accepts from a worker: every message checked field by field before anything acts on it.
// Workers may run someone else's code: a message that is not exactly one of these ends that worker.
import { MAX_HANDOVER_BYTES, MAX_INT, MAX_WORKERS } from '../limits';
import { METRICS_PART_CHARS, type WorkerMessage } from '../protocol/messages';
import { checkAppMessage } from '../protocol/app-messages';

/** How many listen(0) calls of one worker on one host are told apart (each gets a port of its own). */
export const MAX_ZERO_PORT_CALLS = 1024;

const isInteger = (value: unknown, min: number, max: number): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
const isHost = (value: unknown): value is string | null => value === null || (typeof value === 'string' && value.length > 0 && value.length <= 255 && !value.includes('\0'));

/** The message as the protocol defines it, or a reason why it is not one. */
export function checkWorkerMessage(message: unknown): { message: WorkerMessage } | { problem: string } {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) return { problem: 'not an object' };
  const fields = message as Record<string, unknown>;
  switch (fields.type) {
    case 'online':
    case 'ready':
      return { message: { type: fields.type } };
    case 'stopping':
      if (fields.signal !== 'SIGTERM' && fields.signal !== 'SIGINT') return { problem: "'stopping' without SIGTERM or SIGINT" };
      return { message: { type: 'stopping', signal: fields.signal } };
    case 'listening':
    case 'abandoned':
      if (!isInteger(fields.index, 0, MAX_INT)) return { problem: `'${fields.type}' without a valid index` };
      return { message: { type: fields.type, index: fields.index } };
    case 'socket': {
      const { requestId, host, port, ipv6Only, backlog, zeroPortCall } = fields;
      if (!isInteger(requestId, 0, MAX_INT) || !isHost(host) || !isInteger(port, 0, 65535) || typeof ipv6Only !== 'boolean' ||
        !isInteger(backlog, 0, MAX_INT) || !isInteger(zeroPortCall, 0, MAX_ZERO_PORT_CALLS - 1)) {
        return { problem: 'a malformed socket request' };
      }
      return { message: { type: 'socket', requestId, host, port, ipv6Only, backlog, zeroPortCall } };
    }
    case 'stats': {
      const memory = fields.memory as Record<string, unknown> | null;
      const sizes = ['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'] as const;
      if (!isInteger(fields.requestId, 0, MAX_INT) || !isInteger(fields.connections, 0, MAX_INT) || typeof memory !== 'object' || memory === null ||
        !sizes.every((size) => isInteger(memory[size], 0, Number.MAX_SAFE_INTEGER))) {
        return { problem: 'malformed stats' };
      }
      const usage = Object.fromEntries(sizes.map((size) => [size, memory[size]])) as unknown as NodeJS.MemoryUsage;
      return { message: { type: 'stats', requestId: fields.requestId, memory: usage, connections: fields.connections } };
    }
    case 'metrics': {
      const { requestId, part, last } = fields;
      if (!isInteger(requestId, 0, MAX_INT) || typeof part !== 'string' || part.length > METRICS_PART_CHARS || typeof last !== 'boolean') {
        return { problem: 'a malformed metrics part' };
      }
      return { message: { type: 'metrics', requestId, part, last } };
    }
    case 'message': {
      const frame = checkAppMessage(fields);
      return frame ? { message: frame } : { problem: 'a malformed app message' };
    }
    case 'handover': {
      const { slot, index, bytes } = fields;
      if (!isInteger(slot, 0, MAX_WORKERS - 1) || !isInteger(index, 0, MAX_INT) || typeof bytes !== 'string' || bytes.length > Math.ceil(MAX_HANDOVER_BYTES / 3) * 4) {
        return { problem: 'a malformed handover' };
      }
      return { message: { type: 'handover', slot, index, bytes } };
    }
    default:
      return { problem: `an unknown message type ${JSON.stringify(fields.type)?.slice(0, 40)}` };
  }
}
