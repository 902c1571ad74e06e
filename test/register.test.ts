// Zero-code mode: unmodified express, fastify, koa, hono and node:http apps under `node -r prefork/register`,
// an ES-module app under `--import`, https, two ports, PM2 habits, Unix paths, reload and kill -9 under load.
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { get, isDead, waitFor } from './helpers';
import { app, AppRun, root, stopAllApps } from './apps';
import { load, tally } from './primary';

const directories: string[] = [];
afterEach(async () => {
  await stopAllApps();
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

/** A scratch directory holding index.js, which runs the plain-http fixture. */
function appDirectory(): string {
  const directory = mkdtempSync(join(tmpdir(), 'prefork-register-app-'));
  directories.push(directory);
  writeFileSync(join(directory, 'index.js'), `require(${JSON.stringify(app('plain-http.js'))});\n`);
  return directory;
}

async function expectTwoWorkersServe(run: AppRun, port: number, pids: number[]): Promise<void> {
  const counts = await tally(port, 40);
  expect([...counts.keys()].map(Number).sort()).toEqual([...pids].sort());
  // Top-level code ran in the two workers only, never in the primary.
  expect(run.sideEffectPids().sort()).toEqual([...pids].sort());
  expect(run.sideEffectPids()).not.toContain(run.process.pid);
}

test.each(['plain-http.js', 'express.js', 'fastify.js', 'koa.js', 'hono.js'])(
  '%s under node -r prefork/register answers from 2 worker pids, and no app code runs in the primary',
  async (name) => {
    const run = new AppRun(['-r', 'prefork/register', app(name)]);
    const { port, pids } = await run.listening(2);
    expect(new Set(run.matches(/^LISTENING (\d+)/gm).map((line) => line[1])).size).toBe(1); // listen(0): one port for all
    await expectTwoWorkersServe(run, port, pids);
    expect(await run.stop()).toEqual({ code: 0, signal: null });
  },
);

test('the idle primary loads no prom-client, no worker side and no node:http (an app with prom-client, metrics off)', async () => {
  const run = new AppRun(['-r', 'prefork/register', '-r', join(__dirname, 'fixtures', 'primary-modules.js'), app('prom-client.js')]);
  await run.waitForMatches(/^prefork: 2 workers ready/gm, 1, { source: 'errors' });
  run.process.kill('SIGWINCH');
  const [[, loaded]] = await run.waitForMatches(/^PRIMARY-LOADED (.*)$/gm, 1, { source: 'errors' });
  const { files, builtins } = JSON.parse(loaded) as { files: string[]; builtins: string[] };
  expect(files.filter((file) => /\/node_modules\/prom-client\/|\/lib\/worker\/index\.js$|\/lib\/zero-code\/intercept\.js$|\/lib\/primary\/metrics-endpoint\.js$/.test(file))).toEqual([]);
  expect(builtins.filter((name) => ['http', 'child_process'].includes(name))).toEqual([]);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('an ES-module app under node --import prefork/register', async () => {
  const run = new AppRun(['--import', 'prefork/register', app('esm.mjs')]);
  const { port, pids } = await run.listening(2);
  await expectTwoWorkersServe(run, port, pids);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('an https server with a self-signed certificate', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('https.js')]);
  const { port, pids } = await run.listening(2);
  const ca = readFileSync(join(__dirname, 'fixtures', 'tls', 'cert.pem'));
  const answers = new Set<number>();
  for (let i = 0; i < 40; i++) {
    const body = await new Promise<string>((resolve, reject) =>
      https
        .get({ host: '127.0.0.1', port, ca, servername: 'localhost', agent: false }, (response) => {
          let text = '';
          response.setEncoding('utf8').on('data', (chunk) => (text += chunk)).on('end', () => resolve(text));
        })
        .on('error', reject),
    );
    answers.add(Number(body));
  }
  expect([...answers].sort()).toEqual([...pids].sort());
});

test('an http2 app and a plain net.Server (options-object listen) are intercepted too', async () => {
  const h2 = new AppRun(['-r', 'prefork/register', app('http2.js')]);
  const { port: h2Port, pids: h2Pids } = await h2.listening(2);
  const answers = new Set<number>();
  for (let i = 0; i < 30; i++) {
    const session = http2.connect(`http://127.0.0.1:${h2Port}`);
    const body = await new Promise<string>((resolve, reject) => {
      const stream = session.request({ ':path': '/' });
      let text = '';
      stream.setEncoding('utf8').on('data', (chunk) => (text += chunk)).on('end', () => resolve(text)).on('error', reject);
    });
    session.close();
    answers.add(Number(body));
  }
  expect([...answers].sort()).toEqual([...h2Pids].sort());

  const tcp = new AppRun(['-r', 'prefork/register', app('net.js')]);
  const { port, pids } = await tcp.listening(2);
  const seen = new Set<number>();
  for (let i = 0; i < 40; i++) {
    seen.add(Number(await new Promise<string>((resolve, reject) => {
      let text = '';
      net.connect(port, '127.0.0.1').setEncoding('utf8').on('data', (chunk) => (text += chunk)).on('end', () => resolve(text)).on('error', reject);
    })));
  }
  expect([...seen].sort()).toEqual([...pids].sort());
});

test('an app that listens on two ports gets both from the primary', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('two-ports.js')]);
  const lines = await run.waitForMatches(/^PORTS (\d+) (\d+) (\d+)$/gm, 2);
  const [api, metrics] = [Number(lines[0][1]), Number(lines[0][2])];
  expect(lines.map((line) => [Number(line[1]), Number(line[2])])).toEqual([[api, metrics], [api, metrics]]);
  const pids = lines.map((line) => Number(line[3])).sort();
  const apiAnswers = await tally(api, 30);
  const metricsAnswers = await tally(metrics, 30);
  expect([...apiAnswers.keys()].map((body) => Number(body.split(' ')[1])).sort()).toEqual(pids);
  expect([...metricsAnswers.keys()].every((body) => body.startsWith('metrics '))).toBe(true);
});

test('NODE_APP_INSTANCE is the worker slot, as PM2 sets it', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')]);
  await run.listening(2);
  expect(run.matches(/^LISTENING \d+ \d+ (\S+)$/gm).map((line) => line[1]).sort()).toEqual(['0', '1']);
});

test('PM2 habit: with PREFORK_WAIT_READY, process.send("ready") makes a worker ready', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('pm2-ready.js')], { PREFORK_WAIT_READY: '1', PREFORK_READY_TIMEOUT: '5000' });
  const { port, pids } = await run.listening(2);
  await new Promise((resolve) => setTimeout(resolve, 800)); // past the app's 300 ms
  expect([...(await tally(port, 20)).keys()].length).toBeGreaterThan(0);
  run.process.kill('SIGHUP'); // a reload waits for readiness: it only finishes if 'ready' counted
  await waitFor(() => pids.every(isDead), 10000, 'the reload to replace both workers');
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('Unix socket paths pass through: each worker binds its own', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('unix-socket.js')], { PREFORK_READY_TIMEOUT: '0', PREFORK_WAIT_READY: '1' });
  const lines = await run.waitForMatches(/^UNIX (\S+) (\d+)$/gm, 2);
  expect(lines.map((line) => line[1]).sort()).toEqual([join(run.scratch, 'app-0.sock'), join(run.scratch, 'app-1.sock')]);
});

test('kill -9 of a worker under load: refilled, and only its in-flight requests fail', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')]);
  const { port, pids } = await run.listening(2);
  const traffic = load(port, { concurrency: 6 });
  await new Promise((resolve) => setTimeout(resolve, 300));
  process.kill(pids[0], 'SIGKILL');
  await run.waitForMatches(/^LISTENING (\d+) (\d+) (\S+)$/gm, 3);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const result = await traffic.stop();
  expect(result.failed).toBeLessThanOrEqual(6);
  const replacement = Number(run.matches(/^LISTENING (\d+) (\d+) (\S+)$/gm)[2][2]);
  expect(result.byPid.get(String(replacement))).toBeGreaterThan(0);
});

test.each([
  ['connection-per-request', false],
  ['keep-alive', true],
])('SIGHUP reload under %s load: zero failed requests, old workers gone', async (_name, keepAlive) => {
  const run = new AppRun(['-r', 'prefork/register', app('express.js')]);
  const { port, pids } = await run.listening(2);
  const traffic = load(port, { concurrency: 4, keepAlive });
  await new Promise((resolve) => setTimeout(resolve, 300));
  run.process.kill('SIGHUP');
  await run.waitForMatches(/^LISTENING (\d+) (\d+) (\S+)$/gm, 4);
  await waitFor(() => pids.every(isDead), 10000, 'the old workers to drain');
  await new Promise((resolve) => setTimeout(resolve, 300));
  const result = await traffic.stop();
  expect(result.errors).toEqual([]);
  expect(result.failed).toBe(0);
  expect(result.ok).toBeGreaterThan(50);
});

test('a slow request finishes when the primary is stopped', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')]);
  const { port } = await run.listening(2);
  const slow = get(port, '127.0.0.1', '/slow/1000');
  await new Promise((resolve) => setTimeout(resolve, 200));
  run.process.kill('SIGTERM');
  expect(await slow).toMatch(/^\d+$/);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

describe('bad environment values are clear errors and start nothing', () => {
  test.each([
    [{ PREFORK_WORKERS: '0' }, `The PREFORK_WORKERS environment variable must be an integer from 1 to 1024, or max (the CPUs this process may use). Received '0'`],
    [{ PREFORK_WORKERS: 'many' }, `The PREFORK_WORKERS environment variable must be an integer from 1 to 1024, or max (the CPUs this process may use). Received 'many'`],
    [{ PREFORK_SHUTDOWN_TIMEOUT: '-1' }, `The PREFORK_SHUTDOWN_TIMEOUT environment variable must be ms from 0 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received '-1'`],
    [{ PREFORK_READY_TIMEOUT: '1.5' }, `The PREFORK_READY_TIMEOUT environment variable must be ms from 0 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received '1.5'`],
    [{ PREFORK_RESTART_DELAY: 'soon' }, `The PREFORK_RESTART_DELAY environment variable must be ms from 0 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received 'soon'`],
    [{ PREFORK_WATCH: 'maybe' }, `The PREFORK_WATCH environment variable must be 1, true, yes, on, 0, false, no or off. Received 'maybe'`],
    [{ PREFORK_WAIT_READY: 'maybe' }, `The PREFORK_WAIT_READY environment variable must be 1, true, yes, on, 0, false, no or off. Received 'maybe'`],
    [{ PREFORK_SOCKETS: 'magic' }, `The PREFORK_SOCKETS environment variable must be one of reuseport, shared. Received 'magic'`],
    [{ PREFORK_BALANCE: 'round-robin' }, `The PREFORK_BALANCE environment variable must be one of hash, client-ip. Received 'round-robin'`],
    [{ PREFORK_USER: 'prefork-no-such-user' }, process.getuid?.() === 0 ? `The "user" option names no user on this system. Received 'prefork-no-such-user'` : 'needs a primary running as root'],
  ])('%j', async (env, message) => {
    const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')], env);
    expect(await run.exited).toEqual({ code: 1, signal: null });
    expect(run.errors).toContain(`prefork: ${message}`);
    expect(run.sideEffectPids()).toEqual([]); // no app code ran anywhere
    await run.stop();
  });
});

test("PREFORK_BALANCE=least-loaded (deprecated) starts with one line, on one shared queue", async () => {
  const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')], { PREFORK_WORKERS: '2', PREFORK_BALANCE: 'least-loaded' });
  await run.waitForMatches(/prefork: \d+ workers? ready/g, 1, { source: 'errors' });
  expect(await run.stop()).toEqual({ code: 0, signal: null });
  expect(run.errors.split('\n').filter((line) => line.includes('least-loaded'))).toEqual([
    "prefork: balance 'least-loaded' is deprecated and ignored: every worker takes connections from one shared queue (sockets: 'shared'), which measured a better tail",
  ]);
});

test('every duration variable takes a unit, PREFORK_MAX_MEMORY takes Gi, PREFORK_WORKERS takes max', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')], {
    PREFORK_WORKERS: 'max',
    PREFORK_SHUTDOWN_TIMEOUT: '2s', PREFORK_READY_TIMEOUT: '1m', PREFORK_HEARTBEAT_TIMEOUT: '30s', PREFORK_MAX_AGE: '1h',
    PREFORK_RESTART_DELAY: '100ms', PREFORK_RESTART_MAX_DELAY: '15s', PREFORK_RESTART_RESET_AFTER: '0.5m', PREFORK_RESTART_WINDOW: '1h',
    PREFORK_MAX_MEMORY: '1Gi',
  });
  await run.waitForMatches(/prefork: \d+ workers? ready/g, 1, { source: 'errors' });
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('PREFORK_READY_TIMEOUT=0.3s is 300 ms', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('pm2-ready.js')], { PREFORK_WAIT_READY: '1', PREFORK_READY_TIMEOUT: '0.3s', READY_NEVER: '1' });
  expect(await run.exited).toEqual({ code: 1, signal: null });
  expect(run.errors).toMatch(/prefork: worker \d \(pid \d+\) was not ready within 300 ms \(ERR_PREFORK_READY_TIMEOUT\)/);
});

test('a misspelt PREFORK_* variable is one warning line from the primary, naming the nearest one; prefork\'s own are not warned about', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')], { PREFORK_MAX_MEMROY: '1G', PREFORK_TEST_ANYTHING: '1', PREFORK_RACE_SEED: '7' });
  await run.listening(2);
  run.process.kill('SIGHUP'); // the new workers see the same environment: none of them warns
  await run.waitForMatches(/prefork: reload done/g, 1, { source: 'errors' });
  expect(run.errors.split('\n').filter((line) => line.includes('environment variable'))).toEqual([
    'prefork: unknown environment variable PREFORK_MAX_MEMROY (did you mean PREFORK_MAX_MEMORY?)',
  ]);
});

test('PREFORK_NODE_ARGS: Node options for the workers, after the primary\'s own', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('pm2-ready.js')], { PREFORK_NODE_ARGS: '--no-warnings  --max-old-space-size=200' });
  const execArgv = (await run.waitForMatches(/^EXECARGV \d+ (.+)$/gm, 2)).map((line) => JSON.parse(line[1]) as string[]);
  for (const args of execArgv) expect(args.slice(-2)).toEqual(['--no-warnings', '--max-old-space-size=200']);
});

test('node -r prefork/register DIR runs the directory\'s index.js, as node DIR does', async () => {
  const directory = appDirectory();
  const run = new AppRun(['-r', join(root, 'lib', 'zero-code', 'register.js'), '.'], {}, { cwd: directory });
  await run.listening(2);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('PREFORK_WATCH=1: an edit of the app reloads the workers (new pids answer)', async () => {
  const directory = appDirectory();
  const run = new AppRun(['-r', 'prefork/register', join(directory, 'index.js')], { PREFORK_WATCH: '1' });
  const { port, pids } = await run.listening(2);
  await run.waitForMatches(/prefork: watch: a change under/g, 1, { source: 'errors' });
  appendFileSync(join(directory, 'index.js'), '// edited\n');
  await run.waitForMatches(/prefork: watch: index\.js changed: reloading/g, 1, { source: 'errors' });
  await run.waitForMatches(/prefork: reload done/g, 1, { source: 'errors' });
  await waitFor(() => pids.every(isDead), 10000, 'the old workers to drain');
  const fresh = run.matches(/^LISTENING \d+ (\d+)/gm).slice(2).map((line) => Number(line[1]));
  expect(pids).not.toContain(Number(await get(port)));
  expect(fresh).toContain(Number(await get(port)));
});
