// The prefork command: every flag, .js/.cjs/.mjs apps and directories, units, PM2's -i, watch mode, and bad flags
// and variables (clear errors, nothing started).
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { usableCpuCount } from '../src/core/system';
import { SIGNALS } from '../src/primary/signals';
import { PM2_INSTANCES, SETTINGS } from '../src/zero-code/settings';
import { get, isDead, waitFor } from './helpers';
import { app, AppRun, cli, stopAllApps } from './apps';
import { load, tally } from './primary';

const directories: string[] = [];
afterEach(async () => {
  await stopAllApps();
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

/** A scratch app directory with these files; a file 'APP' is the plain-http fixture, required from there. */
function appDirectory(files: Record<string, string>): string {
  const directory = mkdtempSync(join(tmpdir(), 'prefork-cli-app-'));
  directories.push(directory);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(directory, name)), { recursive: true });
    writeFileSync(join(directory, name), text === 'APP' ? `require(${JSON.stringify(app('plain-http.js'))});\n` : text);
  }
  return directory;
}

const readyLine = (workers: number) => new RegExp(`prefork: ${workers} workers? ready`, 'g');

const version = (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;

test('--help names every flag, its variable and every signal the primary handles; --version', async () => {
  const help = new AppRun([cli, '--help']);
  expect(await help.exited).toEqual({ code: 0, signal: null });
  expect(help.output).toMatch(/^Usage: prefork \[options\] \[--\] app\.js \[app arguments\]/);
  for (const setting of SETTINGS) {
    expect(help.output).toMatch(new RegExp(`${setting.short ? `-${setting.short}, ` : ''}--${setting.flag}\\b.* ${setting.variable}, default `));
  }
  expect(help.output).toContain(`-${PM2_INSTANCES.short}, --${PM2_INSTANCES.flag}`);
  for (const signal of SIGNALS) expect(help.output).toMatch(new RegExp(`^  ${signal.slice(3)} +\\S`, 'm'));
  expect(help.output).toMatch(/^  USR2 +hot upgrade/m);
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
    [['--workers', '0', 'APP'], "prefork: --workers must be an integer from 1 to 1024, or max (the CPUs this process may use). Received '0' (see prefork --help)"],
    [['--workers', 'x', 'APP'], "prefork: --workers must be an integer from 1 to 1024, or max (the CPUs this process may use). Received 'x' (see prefork --help)"],
    [['-w', '-1', 'APP'], "prefork: -w must be an integer from 1 to 1024, or max (the CPUs this process may use). Received '-1' (see prefork --help)"],
    [['-i', '2000', 'APP'], "prefork: -i must be an integer from 1 to 1024, or max or 0 (the CPUs this process may use), or -N (all of them but N). Received '2000' (see prefork --help)"],
    [['--workers'], 'prefork: --workers needs a value (see prefork --help)'],
    [['--shutdown-timeout', '-5', 'APP'], "prefork: --shutdown-timeout must be ms from 0 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received '-5' (see prefork --help)"],
    [['--ready-timeout=soon', 'APP'], "prefork: --ready-timeout must be ms from 0 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received 'soon' (see prefork --help)"],
    [['--restart-window', '1.5', 'APP'], "prefork: --restart-window must be ms from 0 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received '1.5' (see prefork --help)"],
    [['--wait-ready=yes', 'APP'], 'prefork: --wait-ready takes no value (see prefork --help)'],
    [['--watch=1', 'APP'], 'prefork: --watch takes no value (see prefork --help)'],
    [['--bogus', 'APP'], 'prefork: unknown option --bogus (see prefork --help)'],
    [['--worker', '2', 'APP'], 'prefork: unknown option --worker: did you mean --workers? (see prefork --help)'],
    [['--sockets', 'magic', 'APP'], "prefork: --sockets must be one of reuseport, shared. Received 'magic' (see prefork --help)"],
    [['--listen', '3000,,4000', 'APP'], "prefork: --listen must be a comma-separated list of ports or host:port (e.g. 3000,127.0.0.1:8080,[::1]:9000). Received '3000,,4000' (see prefork --help)"],
    [['--listen=host:port', 'APP'], "prefork: --listen must be a comma-separated list of ports or host:port (e.g. 3000,127.0.0.1:8080,[::1]:9000). Received 'host:port' (see prefork --help)"],
    [['--heartbeat-timeout', '50', 'APP'], "prefork: --heartbeat-timeout must be 0 (off), or ms from 100 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received '50' (see prefork --help)"],
    [['--max-memory=1Mi', 'APP'], "prefork: --max-memory must be 0 (off), or bytes from 16777216 to 9007199254740991, or a number with a unit K, M, G or T (1024-based; Ki, MB, MiB… read the same; e.g. 512M). Received '1Mi' (see prefork --help)"],
    [['--max-requests', '-3', 'APP'], "prefork: --max-requests must be an integer from 0 to 2147483647. Received '-3' (see prefork --help)"],
    [['--max-age', 'forever', 'APP'], "prefork: --max-age must be 0 (off), or ms from 1000 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received 'forever' (see prefork --help)"],
    [[], 'prefork: no app to run (see prefork --help)'],
    [['/nonexistent/app.js'], 'prefork: /nonexistent/app.js: no such file (see prefork --help)'],
    [['EMPTY'], ': a directory with neither a package.json "main" nor an index.js (see prefork --help)'],
  ])('%j', async (args, message) => {
    const run = new AppRun([cli, ...args.map((arg) => (arg === 'APP' ? app('plain-http.js') : arg === 'EMPTY' ? appDirectory({}) : arg))]);
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

test('a bad PREFORK_* variable under the command names the variable, exits 1 and starts nothing', async () => {
  const run = new AppRun([cli, app('plain-http.js')], { PREFORK_SHUTDOWN_TIMEOUT: 'soon' });
  expect(await run.exited).toEqual({ code: 1, signal: null });
  expect(run.errors).toContain("prefork: The PREFORK_SHUTDOWN_TIMEOUT environment variable must be ms from 0 to 2147483647, or a number with a unit ms, s, m, h or d (e.g. 6h). Received 'soon'\n");
  expect(run.sideEffectPids()).toEqual([]);
});

describe('workers: --workers max, -w N and PM2\'s -i (a flag wins over PREFORK_WORKERS=2)', () => {
  const cpus = usableCpuCount();
  test.each([
    [['--workers', 'max'], cpus],
    [['-w', '3'], 3],
    [['-w1'], 1],
    [['-i', 'max'], cpus],
    [['-i', '0'], cpus],
    [['-i', '-1'], Math.max(1, cpus - 1)],
    [['-i', '3'], 3],
  ])('%j runs %d workers', async (flags, workers) => {
    const run = new AppRun([cli, ...flags, app('plain-http.js')]);
    await run.waitForMatches(readyLine(workers), 1, { source: 'errors' });
    expect(run.matches(/^LISTENING/gm)).toHaveLength(workers);
    expect(await run.stop()).toEqual({ code: 0, signal: null });
  });
});

test('every duration flag takes a unit, and so do the new flags of the former variable-only settings', async () => {
  const durations = ['--shutdown-timeout', '2s', '--ready-timeout', '1m', '--heartbeat-timeout', '30s', '--max-age', '1h', '--restart-delay', '100ms', '--restart-max-delay', '15s', '--restart-reset-after', '0.5m', '--restart-window', '1h'];
  const others = ['--max-memory', '512Mi', '--sockets', 'shared', '--cpu-affinity', '--store-capacity', '0', '--max-requested-addresses', '8', '--max-restarts', '3'];
  const run = new AppRun([cli, ...durations, ...others, app('plain-http.js')]);
  const { port, pids } = await run.listening(2);
  expect(pids).toContain(Number(await get(port)));
  expect(await run.stop()).toEqual({ code: 0, signal: null });
});

test('--ready-timeout 0.3s is 300 ms', async () => {
  const run = new AppRun([cli, '--wait-ready', '--ready-timeout', '0.3s', app('pm2-ready.js')], { READY_NEVER: '1' });
  expect(await run.exited).toEqual({ code: 1, signal: null });
  expect(run.errors).toMatch(/prefork: worker \d \(pid \d+\) was not ready within 300 ms \(ERR_PREFORK_READY_TIMEOUT\)/);
});

test.each(['16Mi', '16MiB', '0.015625Gi'])('--max-memory %s is 16 MiB: a worker (more than that) is recycled', async (size) => {
  const run = new AppRun([cli, '--workers', '1', '--max-memory', size, app('plain-http.js')]);
  await run.waitForMatches(/prefork: recycled worker 0 \(pid \d+\): recycle\.maxMemory \(resident memory\) reached/g, 1, { source: 'errors' });
});

test('a misspelt PREFORK_* variable is one warning line naming the nearest one, and is ignored', async () => {
  const run = new AppRun([cli, app('plain-http.js')], { PREFORK_WROKERS: '3', PREFORK_TEST_ANYTHING: '1' });
  await run.waitForMatches(readyLine(2), 1, { source: 'errors' });
  run.process.kill('SIGHUP'); // new workers: none of them warns
  await run.waitForMatches(/prefork: reload done/g, 1, { source: 'errors' });
  expect(run.errors.split('\n').filter((line) => line.includes('environment variable'))).toEqual([
    'prefork: unknown environment variable PREFORK_WROKERS (did you mean PREFORK_WORKERS?)',
  ]);
});

test('prefork . and prefork DIR run a directory as node does: package.json "main", else index.js', async () => {
  const withMain = appDirectory({ 'package.json': '{ "main": "src/server" }', 'src/server.js': 'APP', 'index.js': 'throw new Error("not the main")' });
  const dot = new AppRun([cli, '.'], {}, { cwd: withMain });
  await dot.listening(2);
  expect(await dot.stop()).toEqual({ code: 0, signal: null });
  const withIndex = appDirectory({ 'index.js': 'APP' });
  const named = new AppRun([cli, '-w', '1', withIndex]);
  await named.listening(1);
  expect(await named.stop()).toEqual({ code: 0, signal: null });
});

test('--watch: an edit reloads the workers under load with no failed request; node_modules, .git, dot-files and a log file do not', async () => {
  const directory = appDirectory({ 'server.js': 'APP', 'lib/util.js': '', 'node_modules/dep/index.js': '', '.git/HEAD': '' });
  const run = new AppRun([cli, '--watch', join(directory, 'server.js')]);
  const { port, pids } = await run.listening(2);
  await run.waitForMatches(/prefork: watch: a change under .* reloads the workers/g, 1, { source: 'errors' });
  const traffic = load(port, { concurrency: 4 });
  writeFileSync(join(directory, 'node_modules', 'dep', 'index.js'), '// changed\n');
  writeFileSync(join(directory, '.git', 'HEAD'), 'ref: refs/heads/other\n');
  writeFileSync(join(directory, '.env.local'), 'X=1\n');
  writeFileSync(join(directory, 'server.log'), 'a log the app writes beside its code\n');
  await new Promise((resolve) => setTimeout(resolve, 1000)); // past the debounce
  expect(run.errors).not.toMatch(/changed: reloading/);
  appendFileSync(join(directory, 'lib', 'util.js'), '// edited\n');
  appendFileSync(join(directory, 'server.js'), '// edited\n'); // the same burst: one reload
  await run.waitForMatches(/prefork: reload done/g, 1, { source: 'errors' });
  await waitFor(() => pids.every(isDead), 10000, 'the old workers to drain');
  const result = await traffic.stop();
  expect(result.errors).toEqual([]);
  expect(result.failed).toBe(0);
  expect(result.ok).toBeGreaterThan(20);
  const fresh = run.matches(/^LISTENING \d+ (\d+)/gm).slice(2).map((line) => Number(line[1]));
  expect(fresh).toHaveLength(2);
  expect([...(await tally(port, 20)).keys()].map(Number).every((pid) => fresh.includes(pid))).toBe(true);
  expect(run.matches(/prefork: watch: .* changed: reloading/g, 'errors')).toHaveLength(1);
});
