// RateLimiterPrefork against rate-limiter-flexible itself: the same answers as its RateLimiterMemory, its own
// RateLimiterRes on rejection, its wrappers working unchanged, its types, and exact counts across 2 workers.
import http from 'node:http';
import { RateLimiterMemory, RateLimiterRes, RLWrapperBlackAndWhite } from 'rate-limiter-flexible';
import { RateLimiterPrefork } from '../src';
import { app, AppRun, stopAllApps } from './apps';

afterEach(stopAllApps);

// Its interface, as rate-limiter-flexible's own types have it (a compile-time check: `npm test` runs tsc).
type Interface = Pick<RateLimiterMemory, 'consume' | 'penalty' | 'reward' | 'block' | 'get' | 'set' | 'delete' | 'getKey' | 'points' | 'duration' | 'blockDuration' | 'keyPrefix'>;
let unique = 0;
const limiters = (options: { points: number; duration: number; blockDuration?: number }): [Interface, Interface] => {
  const keyPrefix = `t${process.pid}-${unique++}`;
  return [new RateLimiterMemory({ ...options, keyPrefix }), new RateLimiterPrefork({ ...options, keyPrefix })];
};
const shape = (res: RateLimiterRes | null) => res && { remainingPoints: res.remainingPoints, consumedPoints: res.consumedPoints, isFirstInDuration: res.isFirstInDuration };
const settle = (promise: Promise<RateLimiterRes>) => promise.then((res) => ({ ok: shape(res) }), (res: RateLimiterRes) => ({ rejected: shape(res), isRes: res instanceof RateLimiterRes }));

test('consume answers as RateLimiterMemory does, and rejects with rate-limiter-flexible\'s own RateLimiterRes', async () => {
  for (const limiter of limiters({ points: 3, duration: 60 })) {
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await settle(limiter.consume('client')));
    expect(answers).toEqual([
      { ok: { remainingPoints: 2, consumedPoints: 1, isFirstInDuration: true } },
      { ok: { remainingPoints: 1, consumedPoints: 2, isFirstInDuration: false } },
      { ok: { remainingPoints: 0, consumedPoints: 3, isFirstInDuration: false } },
      { rejected: { remainingPoints: 0, consumedPoints: 4, isFirstInDuration: false }, isRes: true },
      { rejected: { remainingPoints: 0, consumedPoints: 5, isFirstInDuration: false }, isRes: true },
    ]);
  }
});

test('penalty, reward, get, set, block and delete match RateLimiterMemory', async () => {
  const [memory, prefork] = limiters({ points: 10, duration: 60 });
  const script = async (limiter: Interface) => [
    shape(await limiter.penalty('a', 3)),
    shape(await limiter.reward('a', 1)),
    shape(await limiter.get('a')),
    shape(await limiter.set('b', 7, 30)),
    shape(await limiter.get('b')),
    shape(await limiter.block('c', 20)),
    await settle(limiter.consume('c')),
    await limiter.delete('c'),
    await limiter.delete('never'),
    shape(await limiter.get('c')),
    limiter.getKey('x'),
  ];
  const expected = await script(memory);
  const answered = await script(prefork);
  expect(answered.slice(0, -1)).toEqual(expected.slice(0, -1));
  expect(answered.at(-1)).toBe(`${prefork.keyPrefix}:x`);
});

test('blockDuration: once over the limit, the key stays blocked for blockDuration, as with RateLimiterMemory', async () => {
  const [, prefork] = limiters({ points: 1, duration: 1, blockDuration: 30 });
  await prefork.consume('k');
  const rejected = await prefork.consume('k').catch((res: RateLimiterRes) => res);
  expect(rejected).toBeInstanceOf(RateLimiterRes);
  expect(rejected.msBeforeNext).toBeGreaterThan(29000); // blocked for 30 s, not the 1 s window
});

test("rate-limiter-flexible's own wrappers take it unchanged (RLWrapperBlackAndWhite)", async () => {
  const limiter = new RLWrapperBlackAndWhite({ limiter: new RateLimiterPrefork({ points: 1, duration: 60, keyPrefix: `bw${process.pid}` }) as unknown as RateLimiterMemory, whiteList: ['friend'] });
  for (let i = 0; i < 3; i++) await limiter.consume('friend');
  await limiter.consume('stranger');
  await expect(limiter.consume('stranger')).rejects.toBeInstanceOf(RateLimiterRes);
});

test('bad options are clear errors', () => {
  expect(() => new RateLimiterPrefork({ points: -1 })).toThrow('The "points" option must be an integer from 0. Received -1');
  expect(() => new RateLimiterPrefork({ duration: 'soon' as never })).toThrow('The "duration" option must be of type number');
  expect(() => new RateLimiterPrefork({ pionts: 3 } as never)).toThrow('Unknown option "pionts" for RateLimiterPrefork. Did you mean "points"?');
});

test('across 2 workers, exactly `points` of 300 requests pass per duration (rate-limiter-flexible\'s middleware example)', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('rate-limiter-flexible.js')], { RUN_ID: String(Date.now()) });
  const { port } = await run.listening(2);
  let passed = 0;
  const servedBy = new Set<string>();
  for (let i = 0; i < 300; i++) {
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, agent: false }, (response) => {
        let text = '';
        response.setEncoding('utf8').on('data', (chunk) => (text += chunk)).on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
      }).on('error', reject);
    });
    if (status === 200) {
      passed += 1;
      servedBy.add(body);
    } else expect(status).toBe(429);
  }
  expect(passed).toBe(100);
  expect(servedBy.size).toBe(2);
});
