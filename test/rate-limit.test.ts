// Fiber's rate-limiter example end to end, under prefork with 2 workers: prefork's shared stores count
// across workers (exactly 100 of 300 pass), per-worker memory stores do not (about 100 per worker), and
// the Redis recipe for more than one machine, against a real redis-server on loopback (skipped, with one line,
// where redis-server is missing; failed instead under PREFORK_TEST_REDIS=required, as .ci/run sets).
import child_process, { type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { app, AppRun, stopAllApps } from './apps';
import { waitFor } from './helpers';
import { describeWithTool, missingCommands } from './tools';

afterEach(stopAllApps);

function request(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, agent: false, headers: { connection: 'close' } }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk) => (body += chunk)).on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** 300 requests from one client; returns how many passed and which pids served the passing ones. */
async function hammer(name: string, env: NodeJS.ProcessEnv): Promise<{ passed: number; limited: number; servedBy: Set<string> }> {
  const run = new AppRun(['-r', 'prefork/register', app(name)], env);
  const { port } = await run.listening(2);
  let passed = 0;
  let limited = 0;
  const servedBy = new Set<string>();
  for (let i = 0; i < 300; i++) {
    const { status, body } = await request(port);
    if (status === 200) {
      passed += 1;
      servedBy.add(body);
    } else if (status === 429) limited += 1;
    else throw new Error(`unexpected status ${status}: ${body}`);
  }
  await run.stop();
  return { passed, limited, servedBy };
}

describe.each(['express-rate-limit.js', 'fastify-rate-limit.js'])('%s, limit 100 per minute, 2 workers', (name) => {
  test("prefork's shared store: exactly 100 of 300 requests pass, served by both workers", async () => {
    const { passed, limited, servedBy } = await hammer(name, { RATE_STORE: 'shared' });
    expect(passed).toBe(100);
    expect(limited).toBe(200);
    expect(servedBy.size).toBe(2);
  });

  test('the per-worker memory store lets about 100 per worker pass (the problem prefork solves)', async () => {
    const { passed } = await hammer(name, { RATE_STORE: 'memory' });
    expect(passed).toBeGreaterThan(150);
    expect(passed).toBeLessThanOrEqual(200);
  });
});

describeWithTool('redis-server', 'the Redis recipe (more than one machine), on a real redis-server', () => {
  let redis: ChildProcess | undefined;
  let redisPort = 0;

  beforeAll(async () => {
    const missing = missingCommands('redis-server');
    if (missing.length > 0) throw new Error(`${missing.join(' and ')} not found, and PREFORK_TEST_REDIS=required`);
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    redisPort = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    redis = child_process.spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitFor(() => {
      const attempt = child_process.spawnSync('redis-cli', ['-p', String(redisPort), 'ping'], { encoding: 'utf8', timeout: 2000 });
      return attempt.stdout?.trim() === 'PONG';
    }, 10000, 'redis-server to answer');
  });

  afterAll(async () => {
    if (!redis || redis.exitCode !== null || redis.signalCode !== null) return;
    const exited = new Promise((resolve) => redis!.once('exit', resolve));
    redis.kill('SIGTERM');
    await exited;
  });

  test.each(['express-rate-limit.js', 'fastify-rate-limit.js'])('%s with the Redis store: exactly 100 of 300 pass', async (name) => {
    const { passed, servedBy } = await hammer(name, { RATE_STORE: 'redis', REDIS_URL: `redis://127.0.0.1:${redisPort}`, REDIS_PREFIX: `${name}-${Date.now()}` });
    expect(passed).toBe(100);
    expect(servedBy.size).toBe(2);
  });
});
