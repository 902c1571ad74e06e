// The prefork command: every flag, .js/.cjs/.mjs apps, and bad flags (clear errors, nothing started).
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { get, isDead, waitFor } from './helpers';
import { app, AppRun, cli, stopAllApps } from './apps';
import { tally } from './primary';

afterEach(stopAllApps);

const version = (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;

test('--help and --version', async () => {
  const help = new AppRun([cli, '--help']);
  expect(await help.exited).toEqual({ code: 0, signal: null });
  expect(help.output).toMatch(/^Usage: prefork \[options\] \[--\] app\.js \[app arguments\]/);
  for (const flag of ['--workers', '--shutdown-timeout', '--ready-timeout', '--wait-ready', '--heartbeat-timeout', '--max-requests', '--max-requests-jitter', '--max-memory', '--max-age', '--node-arg', '--log-prefix']) expect(help.output).toContain(flag);
  const shown = new AppRun([cli, '--version']);
  expect(await shown.exited).toEqual({ code: 0, signal: null });
  expect(shown.output).toBe(`${version}\n`);
});

test.each(['plain-http.js', 'plain.cjs', 'esm.mjs'])('--workers 3 runs %s on 3 workers, with app arguments after --', async (name) => {
  const run = new AppRun([cli, '--workers', '3', '--', app(name), '--app-flag']);
  const { port, pids } = await run.listening(3);
  expect([...(await tally(port, 60)).keys()].map(Number).sort()).toEqual([...pids].sort());
  expect(run.sideEffectPids().sort()).toEqual([...pids].sort());
  expect(run.errors).toMatch(/prefork: 3 workers ready \(pids [\d, ]+\) on .+:\d+; primary pid \d+/);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('--shutdown-timeout: a request that outlasts it is cut when the worker is killed', async () => {
  const run = new AppRun([cli, '--workers=1', '--shutdown-timeout=300', app('plain-http.js')]);
  const { port, pids } = await run.listening(1);
  const slow = get(port, '127.0.0.1', '/slow/5000');
  await new Promise((resolve) => setTimeout(resolve, 200));
  run.process.kill('SIGTERM');
  await expect(slow).rejects.toThrow(/socket hang up|ECONNRESET/);
  expect(await run.stop()).toEqual({ code: 0, signal: null });
  expect(run.errors).toContain(`worker 0 (pid ${pids[0]}) exited with signal SIGKILL`);
});

test('--wait-ready counts process.send("ready"), and --node-arg reaches the workers', async () => {
  const run = new AppRun([cli, '--workers', '2', '--wait-ready', '--node-arg', '--no-warnings', '--node-arg=--max-old-space-size=200', app('pm2-ready.js')]);
  await run.waitForMatches(/prefork: 2 workers ready/g, 1, { source: 'errors' });
  const execArgv = run.matches(/^EXECARGV \d+ (.+)$/gm).map((line) => JSON.parse(line[1]) as string[]);
  expect(execArgv).toHaveLength(2);
  for (const args of execArgv) expect(args.slice(0, 2)).toEqual(['--no-warnings', '--max-old-space-size=200']);
});

test('--ready-timeout with --wait-ready: a worker that never says ready fails the start, exit 1', async () => {
  const run = new AppRun([cli, '--workers', '2', '--wait-ready', '--ready-timeout', '300', app('pm2-ready.js')], { READY_NEVER: '1' });
  expect(await run.exited).toEqual({ code: 1, signal: null });
  expect(run.errors).toMatch(/prefork: worker \d \(pid \d+\) was not ready within 300 ms \(ERR_PREFORK_READY_TIMEOUT\)/);
  await run.stop();
});

test('--log-prefix puts "[worker N] " before each line a worker prints', async () => {
  const run = new AppRun([cli, '--workers', '2', '--log-prefix', app('plain-http.js')]);
  const lines = await run.waitForMatches(/^\[worker (\d)\] LISTENING \d+ (\d+) \d$/gm, 2);
  expect(lines.map((line) => line[1]).sort()).toEqual(['0', '1']);
  expect(run.matches(/^LISTENING/gm)).toEqual([]);
});

test('SIGHUP reloads and SIGTTIN / SIGTTOU scale the command', async () => {
  const run = new AppRun([cli, '--workers', '1', app('plain-http.js')]);
  const { pids } = await run.listening(1);
  run.process.kill('SIGHUP');
  await run.waitForMatches(/prefork: reload done/g, 1, { source: 'errors' });
  await waitFor(() => isDead(pids[0]), 5000, 'the old worker to drain');
  run.process.kill('SIGTTIN');
  await run.waitForMatches(/prefork: scaled from 1 to 2 workers/g, 1, { source: 'errors' });
  run.process.kill('SIGTTOU');
  await run.waitForMatches(/prefork: scaled from 2 to 1 workers/g, 1, { source: 'errors' });
});

test('--listen opens its addresses at start; workers listening there are served from them', async () => {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  const run = new AppRun([cli, '--workers', '2', '--listen', `127.0.0.1:${port}`, app('plain-http.js')], { PORT: String(port) });
  const { pids } = await run.listening(2);
  await run.waitForMatches(new RegExp(`2 workers ready .* on 127\\.0\\.0\\.1:${port}`, 'g'), 1, { source: 'errors' });
  expect(pids).toContain(Number(await get(port)));
});

test('a bad PREFORK_LISTEN names the variable, and nothing starts', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')], { PREFORK_LISTEN: 'port:x' });
  expect(await run.exited).toEqual({ code: 1, signal: null });
  expect(run.errors).toContain("The PREFORK_LISTEN environment variable must be a comma-separated list of ports or host:port (e.g. 3000,127.0.0.1:8080,[::1]:9000). Received 'port:x'");
  expect(run.sideEffectPids()).toEqual([]);
});

describe('bad flags are clear errors and start nothing', () => {
  test.each([
    [['--workers', '0', 'APP'], "prefork: --workers must be an integer from 1 to 1024. Received '0' (see prefork --help)"],
    [['--workers', 'x', 'APP'], "prefork: --workers must be an integer from 1 to 1024. Received 'x' (see prefork --help)"],
    [['--workers'], 'prefork: --workers needs a value (see prefork --help)'],
    [['--shutdown-timeout', '-5', 'APP'], "prefork: --shutdown-timeout must be an integer from 0 to 2147483647. Received '-5' (see prefork --help)"],
    [['--ready-timeout=soon', 'APP'], "prefork: --ready-timeout must be an integer from 0 to 2147483647. Received 'soon' (see prefork --help)"],
    [['--wait-ready=yes', 'APP'], 'prefork: --wait-ready takes no value (see prefork --help)'],
    [['--bogus', 'APP'], 'prefork: unknown option --bogus (see prefork --help)'],
    [['--listen', '3000,,4000', 'APP'], "prefork: --listen must be a comma-separated list of ports or host:port (e.g. 3000,127.0.0.1:8080,[::1]:9000). Received '3000,,4000' (see prefork --help)"],
    [['--listen=host:port', 'APP'], "prefork: --listen must be a comma-separated list of ports or host:port (e.g. 3000,127.0.0.1:8080,[::1]:9000). Received 'host:port' (see prefork --help)"],
    [['--heartbeat-timeout', '50', 'APP'], "prefork: --heartbeat-timeout must be 0 (off), or ms from 100 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received '50' (see prefork --help)"],
    [['--max-memory=1M', 'APP'], "prefork: --max-memory must be 0 (off), or bytes from 16777216 to 9007199254740991, or a number with a unit K, M, G or T (e.g. 512M). Received '1M' (see prefork --help)"],
    [['--max-requests', '-3', 'APP'], "prefork: --max-requests must be an integer from 0 to 2147483647. Received '-3' (see prefork --help)"],
    [['--max-age', 'forever', 'APP'], "prefork: --max-age must be 0 (off), or ms from 1000 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received 'forever' (see prefork --help)"],
    [[], 'prefork: no app to run (see prefork --help)'],
    [['/nonexistent/app.js'], 'prefork: /nonexistent/app.js: no such file (see prefork --help)'],
  ])('%j', async (args, message) => {
    const run = new AppRun([cli, ...args.map((arg) => (arg === 'APP' ? app('plain-http.js') : arg))]);
    expect(await run.exited).toEqual({ code: 2, signal: null });
    expect(run.errors).toContain(message);
    expect(run.sideEffectPids()).toEqual([]);
    await run.stop();
  });
});

describe('bad PREFORK_* liveness and recycle variables name the variable, and nothing starts', () => {
  test.each([
    [{ PREFORK_HEARTBEAT_TIMEOUT: '10' }, "The PREFORK_HEARTBEAT_TIMEOUT environment variable must be 0 (off), or ms from 100 to 2147483647"],
    [{ PREFORK_MAX_MEMORY: '512X' }, "The PREFORK_MAX_MEMORY environment variable must be 0 (off), or bytes from 16777216"],
    [{ PREFORK_MAX_AGE: '-1' }, "The PREFORK_MAX_AGE environment variable must be 0 (off), or ms from 1000"],
    [{ PREFORK_MAX_REQUESTS_JITTER: '1.5' }, "The PREFORK_MAX_REQUESTS_JITTER environment variable must be an integer from 0 to 2147483647. Received '1.5'"],
    [{ PREFORK_METRICS: 'host:port' }, 'PREFORK_METRICS'],
    [{ PREFORK_METRICS: '70000' }, 'PREFORK_METRICS'],
  ])('%j', async (env, message) => {
    const run = new AppRun(['-r', 'prefork/register', app('plain-http.js')], env);
    expect(await run.exited).toEqual({ code: 1, signal: null });
    expect(run.errors).toContain(message);
    expect(run.sideEffectPids()).toEqual([]);
  });
});

test('--heartbeat-timeout: a worker stuck in an endless loop is logged, killed and restarted', async () => {
  const run = new AppRun([cli, '--workers', '2', '--heartbeat-timeout', '1s', app('liveness.js')]);
  const { port } = await run.listening(2);
  void get(port, '127.0.0.1', '/spin').catch(() => {});
  const [line] = await run.waitForMatches(/prefork: worker (\d) \(pid (\d+)\) is unresponsive: its event loop has not turned for \d+ ms \(heartbeatTimeout 1000\); killing it/g, 1, { source: 'errors' });
  await run.waitForMatches(new RegExp(`worker ${line[1]} restarted as pid \\d+ after 0 ms \\(unresponsive\\)`, 'g'), 1, { source: 'errors' });
  expect(run.errors).toContain(`worker ${line[1]} (pid ${line[2]}) exited with signal SIGKILL (unresponsive)`);
});

test('recycling from the environment and a flag together: PREFORK_MAX_REQUESTS with --max-age', async () => {
  const run = new AppRun([cli, '--workers', '1', '--max-age', '1h', app('plain-http.js')], { PREFORK_MAX_REQUESTS: '10' });
  const { port, pids } = await run.listening(1);
  for (let i = 0; i < 10; i++) await get(port);
  await run.waitForMatches(new RegExp(`prefork: recycled worker 0 \\(pid ${pids[0]}\\): recycle.maxRequests reached; pid \\d+ serves its slot`, 'g'), 1, { source: 'errors' });
  await run.waitForMatches(new RegExp(`worker 0 \\(pid ${pids[0]}\\) exited with code 0 \\(recycle-requests\\)`, 'g'), 1, { source: 'errors' });
});
