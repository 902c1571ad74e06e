// spawn(), reaping and kill(): exact fds, exit reporting, exec failures, parent death, coexistence with child_process.
import child_process from 'node:child_process';
import { chmodSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChannelPair, createListenSocket, kill, spawn, ChildHandle } from '../src';
import { native } from '../src/core/binding';
import { childrenOf, fixture, isDead, newSockets, openFds, processState, waitFor } from './helpers';

const fdsBefore = openFds();
const scratch = mkdtempSync(join(tmpdir(), 'prefork-spawn-'));
const running: ChildHandle[] = [];
const strays: number[] = []; // pids that are not our children (grandchildren)

function start(options: Parameters<typeof spawn>[0]): ChildHandle {
  const child = spawn(options);
  running.push(child);
  return child;
}

const sleeper = (extra: Partial<Parameters<typeof spawn>[0]> = {}) => start({ file: 'sleep', args: ['sleep', '30'], ...extra });

afterEach(async () => {
  for (const child of running.splice(0)) {
    child.kill('SIGKILL');
    await child.exited;
  }
  for (const pid of strays.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
  expect(newSockets(fdsBefore)).toEqual([]);
  expect(childrenOf().filter((child) => child.state === 'Z')).toEqual([]);
});

test('an exit code is reported through exited and the exit event', async () => {
  const child = start({ file: process.execPath, args: ['node', '-e', 'process.exit(7)'] });
  const event = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  expect(await child.exited).toEqual({ code: 7, signal: null });
  expect(await event).toEqual({ code: 7, signal: null });
  expect(child.exitInfo).toEqual({ code: 7, signal: null });
  expect(processState(child.pid)).toBeUndefined(); // reaped, not a zombie
});

test('kill -9 of a child reports SIGKILL', async () => {
  const child = sleeper();
  child.kill('SIGKILL');
  expect(await child.exited).toEqual({ code: null, signal: 'SIGKILL' });
  expect(child.kill('SIGTERM')).toBe(false); // already exited: no signal to a recycled pid
});

test('kill(pid, signal) signals any process by name', async () => {
  const child = sleeper();
  kill(child.pid, 'SIGTERM');
  expect(await child.exited).toEqual({ code: null, signal: 'SIGTERM' });
  expect(() => kill(child.pid, 'SIGNOPE' as NodeJS.Signals)).toThrow(/The "signal" option must be a signal name/);
  expect(() => kill(0, 'SIGTERM')).toThrow(RangeError);
});

test('a child has exactly the fds asked for, and nothing else leaks', async () => {
  const socket = await createListenSocket({ host: '127.0.0.1', port: 0 });
  const [mine, theirs] = createChannelPair();
  try {
    const child = sleeper({ fds: { 3: socket.fd, 5: theirs } });
    // Right after exec the dynamic loader opens ld.so.cache and libc on the lowest free fd (4) and closes them
    // again: a look in between saw fd 4 (CI, once). So the set must settle on exactly these within 2 s; a leaked
    // fd stays, and fails.
    const sorted = (fds: Map<number, string>) => [...fds.keys()].sort((a, b) => a - b);
    const childFds = await waitFor(() => {
      const fds = openFds(child.pid);
      return sorted(fds).join() === '0,1,2,3,5' && fds;
    }, 2000, 'the child to hold exactly fds 0-3 and 5').catch(() => openFds(child.pid));
    expect(sorted(childFds)).toEqual([0, 1, 2, 3, 5]);
    const ourFds = openFds();
    expect(childFds.get(3)).toBe(ourFds.get(socket.fd));
    expect(childFds.get(5)).toBe(ourFds.get(theirs));
  } finally {
    [socket.fd, mine, theirs].forEach((fd) => closeSync(fd));
  }
});

test('fds can be placed on stdio and swapped without clobbering each other', async () => {
  const outPath = join(scratch, 'out.txt');
  const errPath = join(scratch, 'err.txt');
  const out = openSync(outPath, 'w');
  const err = openSync(errPath, 'w');
  try {
    // child 1 <- err, child 2 <- out: a naive dup2 order would overwrite one with the other.
    const child = start({ file: '/bin/sh', args: ['sh', '-c', 'echo to-stdout; echo to-stderr >&2'], fds: { 1: err, 2: out } });
    expect(await child.exited).toEqual({ code: 0, signal: null });
  } finally {
    closeSync(out);
    closeSync(err);
  }
  expect(readFileSync(errPath, 'utf8')).toBe('to-stdout\n');
  expect(readFileSync(outPath, 'utf8')).toBe('to-stderr\n');
});

test('cwd, env and argv reach the child', async () => {
  const outPath = join(scratch, 'cwd.txt');
  const out = openSync(outPath, 'w');
  try {
    const child = start({
      file: '/bin/sh',
      args: ['sh', '-c', 'echo "$(pwd) $GREETING $0"', 'argv-zero-ignored'],
      cwd: scratch,
      env: { GREETING: 'hello', PATH: process.env.PATH },
      fds: { 1: out },
    });
    await child.exited;
  } finally {
    closeSync(out);
  }
  expect(readFileSync(outPath, 'utf8')).toBe(`${scratch} hello argv-zero-ignored\n`);
});

test('exec of a missing file throws ENOENT and leaves no zombie', () => {
  expect(() => start({ file: '/nonexistent/prefork-app', args: ['x'] })).toThrow(
    expect.objectContaining({ code: 'ENOENT', errno: -2, syscall: 'execve', path: '/nonexistent/prefork-app', message: 'execve ENOENT /nonexistent/prefork-app' }),
  );
  expect(() => start({ file: 'prefork-no-such-program', args: ['x'] })).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  expect(childrenOf().filter((child) => child.state === 'Z')).toEqual([]);
});

test('an exec failure is still reported when the fd map covers where the error pipe was', () => {
  const devNull = openSync('/dev/null', 'r');
  try {
    const fds: Record<number, number> = {};
    for (let fd = 3; fd <= 60; fd++) fds[fd] = devNull;
    expect(() => start({ file: '/nonexistent/prefork-app', args: ['x'], fds })).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  } finally {
    closeSync(devNull);
  }
  expect(childrenOf().filter((child) => child.state === 'Z')).toEqual([]);
});

test('exec of a file without execute permission throws EACCES', () => {
  const script = join(scratch, 'not-executable.sh');
  writeFileSync(script, '#!/bin/sh\nexit 0\n');
  chmodSync(script, 0o644);
  expect(() => start({ file: script, args: [script] })).toThrow(expect.objectContaining({ code: 'EACCES', syscall: 'execve' }));
  expect(childrenOf().filter((child) => child.state === 'Z')).toEqual([]);
});

test('a missing cwd throws ENOENT from chdir, naming the directory', () => {
  expect(() => start({ file: 'true', args: ['true'], cwd: '/nonexistent-dir' })).toThrow(
    expect.objectContaining({ code: 'ENOENT', syscall: 'chdir', path: '/nonexistent-dir' }),
  );
});

test('processGroup, cpus, uid and gid are applied', async () => {
  const child = sleeper({ processGroup: true, cpus: [0], ...(process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}) });
  const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
  const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  expect(pgrp).toBe(child.pid);
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  expect(status).toMatch(/^Cpus_allowed_list:\s+0$/m);
  if (process.getuid?.() === 0) {
    expect(status).toMatch(/^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    expect(status).toMatch(/^Gid:\s+65534\s+65534\s+65534\s+65534$/m);
    expect(status).toMatch(/^Groups:\s+65534\s*$/m);
  }
});

test('a uid above 2^31 is applied, not mistaken for "unchanged"', async () => {
  if (process.getuid?.() !== 0) return; // only root may change uid
  const child = sleeper({ uid: 2 ** 31 + 5, gid: 2 ** 31 + 7 });
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  expect(status).toMatch(/^Uid:\s+2147483653\s/m);
  expect(status).toMatch(/^Gid:\s+2147483655\s/m);
});

test('killing the parent kills its children (PDEATHSIG), also after a uid change', async () => {
  const options = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const parent = child_process.spawn(process.execPath, [fixture('spawn-sleeper.js'), JSON.stringify(options)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const sleeperPid = await new Promise<number>((resolve, reject) => {
    parent.stdout.once('data', (chunk) => resolve(Number(String(chunk).trim())));
    parent.once('exit', () => reject(new Error('spawn-sleeper exited early')));
  });
  strays.push(sleeperPid);
  expect(isDead(sleeperPid)).toBe(false);
  parent.kill('SIGKILL');
  await new Promise((resolve) => parent.once('exit', resolve));
  await waitFor(() => isDead(sleeperPid), 1000, `sleeper ${sleeperPid} to die with its parent`);
});

test('deathSignal: null lets a child outlive its parent', async () => {
  const parent = child_process.spawn(process.execPath, [fixture('spawn-sleeper.js'), '{"deathSignal":null}'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const sleeperPid = await new Promise<number>((resolve) => parent.stdout.once('data', (chunk) => resolve(Number(String(chunk).trim()))));
  strays.push(sleeperPid);
  parent.kill('SIGKILL');
  await new Promise((resolve) => parent.once('exit', resolve));
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(isDead(sleeperPid)).toBe(false);
});

test('child_process in the same program keeps getting its own exit events', async () => {
  const ours = start({ file: process.execPath, args: ['node', '-e', 'setTimeout(() => process.exit(3), 200)'] });
  const theirs = child_process.spawn(process.execPath, ['-e', 'setTimeout(() => process.exit(4), 100)']);
  const theirExit = new Promise((resolve) => theirs.on('exit', (code, signal) => resolve({ code, signal })));
  expect(await theirExit).toEqual({ code: 4, signal: null });
  expect(await ours.exited).toEqual({ code: 3, signal: null });
  const after = child_process.spawnSync(process.execPath, ['-e', 'process.exit(5)']);
  expect(after.status).toBe(5);
});

test('the thread+waitpid fallback reports exits where pidfd is not used', async () => {
  const [pid, pidfd] = native.spawn({
    file: '/bin/sh', args: ['sh', '-c', 'exit 9'], env: [], cwd: undefined, fds: [], uid: -1, gid: -1, groups: null, cpus: [], processGroup: false, deathSignal: 9,
  });
  if (pidfd >= 0) closeSync(pidfd);
  const status = await new Promise((resolve) => native.waitInThread(pid, (code, signal) => resolve({ code, signal })));
  expect(status).toEqual({ code: 9, signal: 0 });
  expect(processState(pid)).toBeUndefined();
});

describe('bad arguments are clear errors and start nothing', () => {
  test.each([
    [{ file: 'sleep', args: [] }, TypeError, 'The "args" option must contain at least argv[0]. Received []'],
    [{ file: 'sleep' }, TypeError, 'The "args" option must be an array of strings (argv, argv[0] included). Received undefined'],
    [{ file: '', args: ['x'] }, TypeError, `The "file" option must be a non-empty string. Received ''`],
    [{ file: 'sleep', args: ['sleep', 1] }, TypeError, 'The "args[1]" option must be of type string. Received type number (1)'],
    [{ file: 'sleep', args: ['sleep', 'a\0b'] }, TypeError, 'The "args[1]" option must not contain null bytes'],
    [{ file: 'sleep', args: ['sleep'], fds: { 3: -1 } }, RangeError, 'The "fds[3]" option must be an integer from 0 to 2147483647. Received -1'],
    [{ file: 'sleep', args: ['sleep'], fds: { '-3': 1 } }, RangeError, `The "fds" option must be keyed by child fd numbers from 0 to 1023. Received '-3'`],
    [{ file: 'sleep', args: ['sleep'], fds: { 3: 987654 } }, TypeError, 'The "fds[3]" option must be an open file descriptor of this process. Received 987654'],
    [{ file: 'sleep', args: ['sleep'], uid: -1 }, RangeError, 'The "uid" option must be an integer from 0 to 4294967294. Received -1'],
    [{ file: 'sleep', args: ['sleep'], cpus: [] }, TypeError, 'The "cpus" option must be a non-empty array of CPU numbers. Received []'],
    [{ file: 'sleep', args: ['sleep'], deathSignal: 'SIGFOO' }, TypeError, `The "deathSignal" option must be a signal name`],
    [{ file: 'sleep', args: ['sleep'], env: { 'A=B': 'c' } }, TypeError, `The "env key" option must not contain "="`],
    [{ file: 'sleep', args: ['sleep'], fd: {} }, TypeError, 'Unknown option "fd" for spawn(). Did you mean "fds"?'],
  ])('%j', (options, type, message) => {
    const before = childrenOf().length;
    expect(() => spawn(options as never)).toThrow(type);
    expect(() => spawn(options as never)).toThrow(message);
    expect(childrenOf().length).toBe(before);
  });
});
