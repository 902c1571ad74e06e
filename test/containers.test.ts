// Containers: the primary as PID 1 reaps orphaned grandchildren (in a real PID namespace), the default worker
// count honours a cgroup v1 or v2 CPU quota, and the pid file.
import child_process from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroupCpuLimit } from '../src/core/system';
import { app, AppRun, cli, root, stopAllApps } from './apps';
import { childrenOf, get, isDead, waitFor } from './helpers';
import { IS_ROOT } from './tools';

afterEach(stopAllApps);

const scratch = mkdtempSync(join(tmpdir(), 'prefork-containers-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const canUnshare = IS_ROOT && child_process.spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;
const pidNamespaceTest = canUnshare ? test : test.skip;

pidNamespaceTest('as PID 1 (unshare --pid), the command reaps orphaned grandchildren and still restarts its own workers', async () => {
  const unshare = child_process.spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child=SIGTERM', process.execPath, cli, '--workers', '2', app('orphans.js')], {
    cwd: root, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let errors = '';
  unshare.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  unshare.stderr.setEncoding('utf8').on('data', (chunk: string) => (errors += chunk));
  const exited = new Promise((resolve) => unshare.once('exit', resolve));
  let primary = 0;
  try {
    await waitFor(() => (output.match(/^LISTENING/gm) ?? []).length >= 2 || undefined, 10_000, 'two workers');
    const port = Number(/^LISTENING (\d+)/m.exec(output)![1]);
    // The primary, seen from here: the unshare process's child, PID 1 inside.
    primary = childrenOf(unshare.pid!)[0].pid;
    expect(readFileSync(`/proc/${primary}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
    for (let i = 0; i < 4; i++) expect(Number(await get(port, '127.0.0.1', '/orphan'))).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the sleeps ended: without a reaper, 4 zombies
    expect(childrenOf(primary).filter((child) => child.state === 'Z')).toEqual([]);
    // Its own workers are still reaped and replaced as before.
    const [worker] = childrenOf(primary);
    process.kill(worker.pid, 'SIGKILL');
    await waitFor(() => /worker \d restarted as pid \d+ after 0 ms \(crash\)/.test(errors) || undefined, 5000, 'the restart');
    expect(childrenOf(primary).filter((child) => child.state === 'Z')).toEqual([]);
  } finally {
    // unshare --fork does not pass SIGTERM on: stop the primary itself, then unshare exits with it.
    if (primary) process.kill(primary, 'SIGTERM');
    else unshare.kill('SIGKILL');
    await exited;
  }
});
if (!canUnshare) test('(skipped: the PID-1 test needs root and unshare --pid from util-linux)', () => {});

describe('cgroup CPU limits', () => {
  const fake = (files: Record<string, string>) => (path: string) => files[path] ?? null;

  test('v2: cpu.max of the own cgroup and its ancestors, the tightest winning', () => {
    expect(cgroupCpuLimit(fake({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '150000 100000\n' }))).toBe(1.5);
    expect(cgroupCpuLimit(fake({
      '/proc/self/cgroup': '0::/system.slice/app.service\n',
      '/sys/fs/cgroup/system.slice/app.service/cpu.max': 'max 100000\n',
      '/sys/fs/cgroup/system.slice/cpu.max': '200000 100000\n',
    }))).toBe(2);
    expect(cgroupCpuLimit(fake({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': 'max 100000\n' }))).toBeNull();
  });

  test("v1: cpu.cfs_quota_us / cpu.cfs_period_us where the cpu hierarchy is mounted, a container's root included", () => {
    const mountinfo = '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n';
    expect(cgroupCpuLimit(fake({
      '/proc/self/cgroup': '4:memory:/x\n1:cpu:/job\n0::/\n', '/proc/self/mountinfo': mountinfo,
      '/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us': '50000\n', '/sys/fs/cgroup/cpu/job/cpu.cfs_period_us': '100000\n',
      '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
    }))).toBe(0.5);
    // In a container, the mount's root is the container's own cgroup.
    expect(cgroupCpuLimit(fake({
      '/proc/self/cgroup': '3:cpu,cpuacct:/docker/abc\n',
      '/proc/self/mountinfo': '40 30 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n',
      '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '300000', '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000',
    }))).toBe(3);
    expect(cgroupCpuLimit(fake({ '/proc/self/cgroup': '1:cpu:/\n', '/proc/self/mountinfo': mountinfo, '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1' }))).toBeNull();
  });

  const v1 = '/sys/fs/cgroup/cpu';
  const canMakeV1Group = IS_ROOT && existsSync(`${v1}/cpu.cfs_quota_us`) && (() => {
    try {
      mkdirSync(`${v1}/prefork-probe-${process.pid}`);
      rmdirSync(`${v1}/prefork-probe-${process.pid}`);
      return true;
    } catch {
      return false;
    }
  })();
  (canMakeV1Group ? test : test.skip)('a real cgroup v1 quota of one CPU: the default worker count is 1', async () => {
    const group = `${v1}/prefork-test-${process.pid}`;
    mkdirSync(group);
    try {
      writeFileSync(`${group}/cpu.cfs_period_us`, '100000');
      writeFileSync(`${group}/cpu.cfs_quota_us`, '100000');
      const count = child_process.spawnSync('sh', ['-c', `echo $$ > ${group}/cgroup.procs && exec "$0" -e "console.log(require('./lib/core/system').usableCpuCount())"`, process.execPath], { cwd: root, encoding: 'utf8' });
      expect(count.stdout.trim()).toBe('1');
    } finally {
      rmdirSync(group);
    }
  });
  if (!canMakeV1Group) test('(skipped: the real cgroup v1 test needs root and a writable cpu hierarchy at /sys/fs/cgroup/cpu)', () => {});
});

describe('pid file', () => {
  test('--pid-file and PREFORK_PID_FILE: the primary pid, written atomically, removed at exit', async () => {
    const path = join(scratch, 'flag.pid');
    const run = new AppRun([cli, '--workers', '1', '--pid-file', path, app('plain-http.js')]);
    await run.listening(1);
    expect(readFileSync(path, 'utf8')).toBe(`${run.process.pid}\n`);
    expect(readdirSync(scratch).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    expect(await run.stop()).toEqual({ code: 0, signal: null });
    expect(existsSync(path)).toBe(false);

    const fromEnvironment = join(scratch, 'env.pid');
    const registered = new AppRun(['-r', 'prefork/register', app('plain-http.js')], { PREFORK_PID_FILE: fromEnvironment, PREFORK_WORKERS: '1' });
    await registered.listening(1);
    expect(readFileSync(fromEnvironment, 'utf8')).toBe(`${registered.process.pid}\n`);
    await registered.stop();
    expect(existsSync(fromEnvironment)).toBe(false);
  });

  test('a symlink planted at the temporary name cannot make the primary overwrite another file', async () => {
    // The primary is started through a shell that waits for a line before it execs node: its pid is known before
    // it writes anything, so a link sits at every name the pid `${path}.${pid}.tmp` scheme could use.
    const path = join(scratch, 'planted.pid');
    const victim = join(scratch, 'victim');
    const linkedVictim = join(scratch, 'linked-victim');
    writeFileSync(victim, 'precious\n');
    writeFileSync(linkedVictim, 'precious too\n');
    symlinkSync(linkedVictim, path); // a link at the pid file itself is replaced, not followed
    const run = new AppRun(['-c', 'read go && exec "$0" "$@"', process.execPath, cli, '--workers', '1', '--pid-file', path, app('plain-http.js')], {}, { file: '/bin/sh' });
    const planted = `${path}.${run.process.pid}.tmp`;
    symlinkSync(victim, planted);
    run.process.stdin.write('go\n');
    await run.listening(1);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(readFileSync(linkedVictim, 'utf8')).toBe('precious too\n');
    expect(lstatSync(path).isFile()).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe(`${run.process.pid}\n`);
    expect(await run.stop()).toEqual({ code: 0, signal: null });
    expect(existsSync(path)).toBe(false);
    expect(readdirSync(scratch).filter((name) => name.endsWith('.tmp') && join(scratch, name) !== planted)).toEqual([]);
    rmSync(planted);
  });

  test('a pid file that cannot be written fails the start before any worker, with a clear error', async () => {
    const run = new AppRun([cli, '--workers', '1', '--pid-file', '/nonexistent/dir/prefork.pid', app('plain-http.js')]);
    expect(await run.exited).toEqual({ code: 1, signal: null });
    expect(run.errors).toContain('Cannot write the pid file /nonexistent/dir/prefork.pid: ENOENT');
    expect(run.sideEffectPids()).toEqual([]);
  });

  test('a start that fails after the pid file was written removes it', async () => {
    const path = join(scratch, 'failed.pid');
    const broken = join(scratch, 'broken.js');
    writeFileSync(broken, "throw new Error('broken app');\n");
    const run = new AppRun([cli, '--workers', '1', '--pid-file', path, broken]);
    expect(await run.exited).toEqual({ code: 1, signal: null });
    expect(run.errors).toContain('broken app');
    expect(existsSync(path)).toBe(false);
    expect(run.sideEffectPids()).toEqual([]);
  });
});

test('nothing is left behind', () => {
  expect(childrenOf().filter((child) => !isDead(child.pid))).toEqual([]);
});
