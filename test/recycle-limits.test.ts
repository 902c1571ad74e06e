// Pure parts of liveness and recycling, without processes: which limit a worker has reached, how often
// workers beat, and the sizes and durations the environment and flags accept.
import { recycleDue } from '../src/primary/recycle';
import { heartbeatInterval } from '../src/primary/worker-launch';
import { parseDurationText, parseSizeText } from '../src/validate';

const OFF = { maxRequests: 0, maxRequestsJitter: 0, maxMemory: 0, maxAge: 0 };
const MiB = 1024 * 1024;

test('recycleDue: each limit at its threshold, memory first, 0 meaning off', () => {
  const reading = { served: 0, rss: 100 * MiB, age: 0 };
  expect(recycleDue(OFF, 0, { served: 1e9, rss: 1e12, age: 1e9 })).toBeNull();
  expect(recycleDue({ ...OFF, maxRequests: 100 }, 130, { ...reading, served: 129 })).toBeNull(); // its own limit, jitter included
  expect(recycleDue({ ...OFF, maxRequests: 100 }, 130, { ...reading, served: 130 })).toBe('requests');
  expect(recycleDue({ ...OFF, maxMemory: 100 * MiB }, 0, { ...reading, rss: 100 * MiB - 1 })).toBeNull();
  expect(recycleDue({ ...OFF, maxMemory: 100 * MiB }, 0, reading)).toBe('memory');
  expect(recycleDue({ ...OFF, maxMemory: 100 * MiB }, 0, { ...reading, rss: null })).toBeNull(); // unknown: not guessed
  expect(recycleDue({ ...OFF, maxAge: 1000 }, 0, { ...reading, age: 999 })).toBeNull();
  expect(recycleDue({ ...OFF, maxAge: 1000 }, 0, { ...reading, age: 1000 })).toBe('age');
  expect(recycleDue({ maxRequests: 1, maxRequestsJitter: 0, maxMemory: 1, maxAge: 1 }, 1, { served: 5, rss: 5, age: 5 })).toBe('memory');
});

test('heartbeatInterval: a tenth of the timeout, between 10 ms and 1 s; 1 s when the check is off', () => {
  expect([100, 1000, 5000, 30000, 0].map(heartbeatInterval)).toEqual([10, 100, 500, 1000, 1000]);
});

test('sizes: bytes or 1024-based units; durations: ms or units; 0 is off; the rest is refused with what is allowed', () => {
  const fail = (allowed: string): never => {
    throw new Error(allowed);
  };
  const size = (text: string) => parseSizeText(text, 16 * MiB, Number.MAX_SAFE_INTEGER, fail);
  expect(['0', '16777216', '512M', '512MB', '512MiB', '512Mi', '1Gi', '1.5g', '64 m', '1T', '16384KiB', '17000000B'].map(size))
    .toEqual([0, 16 * MiB, 512 * MiB, 512 * MiB, 512 * MiB, 512 * MiB, 1024 * MiB, 1.5 * 1024 * MiB, 64 * MiB, 1024 * 1024 * MiB, 16 * MiB, 17000000]);
  for (const bad of ['', '-1', '1M', '12.5', 'lots', '5X', '1e9', '512iB', '512i', '1.5']) expect(() => size(bad)).toThrow(/0 \(off\), or bytes from 16777216/);
  const duration = (text: string) => parseDurationText(text, 1000, 2 ** 31 - 1, fail);
  expect(['0', '1000', '1500ms', '30s', '1.5m', '6h', '1d'].map(duration)).toEqual([0, 1000, 1500, 30000, 90000, 6 * 3600000, 86400000]);
  for (const bad of ['999', '1s5', '-5s', '30 sec', '25d', '1.5']) expect(() => duration(bad)).toThrow(/0 \(off\), or ms from 1000/);
});
