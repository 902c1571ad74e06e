// Bad input to the supervisor: each a clear error, and nothing left running (no process, socket or signal handler).
import child_process from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { supervise, type SupervisorOptions } from '../src';
import { childrenOf, fixture, newSockets, openFds } from './helpers';

const scratch = mkdtempSync(join(tmpdir(), 'prefork-errors-'));
const fdsBefore = openFds();
const signalListeners = () => ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU'].map((signal) => process.listenerCount(signal));
const listenersBefore = signalListeners();

const base: SupervisorOptions = { script: fixture('app.js'), args: [], execArgv: [], exitProcess: false, workers: 2 };

afterEach(() => {
  expect(childrenOf()).toEqual([]);
  expect(newSockets(fdsBefore)).toEqual([]);
  expect(signalListeners()).toEqual(listenersBefore);
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('invalid options throw at once and start nothing', () => {
  test.each([
    [{ workers: 0 }, RangeError, 'The "workers" option must be an integer from 1 to 1024. Received 0'],
    [{ workers: -1 }, RangeError, 'The "workers" option must be an integer from 1 to 1024. Received -1'],
    [{ workers: 1.5 }, RangeError, 'The "workers" option must be an integer from 1 to 1024. Received 1.5'],
    [{ workers: 'x' }, TypeError, `The "workers" option must be of type number. Received type string ('x')`],
    [{ workers: 100000 }, RangeError, 'The "workers" option must be an integer from 1 to 1024. Received 100000'],
    [{ listen: -1 }, RangeError, 'The "listen" option must be an integer from 0 to 65535. Received -1'],
    [{ listen: 70000 }, RangeError, 'The "listen" option must be an integer from 0 to 65535. Received 70000'],
    [{ listen: 'abc' }, TypeError, `The "listen" option must be a port, "host:port" or "[ipv6]:port". Received 'abc'`],
    [{ listen: [3000, { port: 'x' }] }, TypeError, `The "listen[1].port" option must be of type number. Received type string ('x')`],
    [{ listen: [3000, 3000] }, TypeError, 'The "listen" option names 3000 twice'],
    [{ wokers: 2 }, TypeError, 'Unknown option "wokers" for supervise(). Did you mean "workers"? Valid options: workers, listen, script'],
    [{ restart: { dealy: 5 } }, TypeError, 'Unknown option "dealy" for the "restart" option. Did you mean "delay"?'],
    [{ restart: { factor: 0.5 } }, RangeError, 'The "restart.factor" option must be a number from 1 to 100. Received 0.5'],
    [{ shutdownTimeout: -5 }, RangeError, 'The "shutdownTimeout" option must be an integer from 0 to 2147483647. Received -5'],
    [{ sockets: 'magic' }, TypeError, `The "sockets" option must be 'reuseport' or 'shared'. Received 'magic'`],
    [{ script: '/nonexistent/app.js' }, TypeError, `The "script" option must name an existing file. Received '/nonexistent/app.js'`],
    [{ user: 'prefork-no-such-user' }, TypeError, `The "user" option names no user on this system. Received 'prefork-no-such-user'`],
    [{ group: 'prefork-no-such-group' }, TypeError, `The "group" option names no group on this system. Received 'prefork-no-such-group'`],
  ])('%j', (options, type, message) => {
    expect(() => supervise({ ...base, ...options } as SupervisorOptions)).toThrow(type);
    expect(() => supervise({ ...base, ...options } as SupervisorOptions)).toThrow(message);
  });
});

describe('failures while starting reject ready() and stop everything', () => {
  test('an unresolvable host', async () => {
    const supervisor = supervise({ ...base, listen: 'no-such-host.invalid:0' });
    await expect(supervisor.ready()).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });

  test('a port held by a program without SO_REUSEPORT: EADDRINUSE', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as net.AddressInfo;
    try {
      const supervisor = supervise({ ...base, listen: `127.0.0.1:${port}` });
      await expect(supervisor.ready()).rejects.toMatchObject({ code: 'EADDRINUSE', message: `bind EADDRINUSE 127.0.0.1:${port}` });
    } finally {
      holder.close();
    }
  });

  test('a script with a syntax error', async () => {
    const script = join(scratch, 'broken.js');
    writeFileSync(script, 'this is not javascript(\n');
    const supervisor = supervise({ ...base, script, listen: 0 });
    await expect(supervisor.ready()).rejects.toMatchObject({
      code: 'ERR_PREFORK_WORKER_EXIT',
      message: expect.stringMatching(/^worker \d \(pid \d+\) exited with code 1 before it was ready$/),
    });
  });

  test('a worker that exits before listening', async () => {
    const supervisor = supervise({ ...base, listen: 0, env: { TEST_BEHAVIOUR: 'exit-before-listen' } });
    await expect(supervisor.ready()).rejects.toMatchObject({ code: 'ERR_PREFORK_WORKER_EXIT', exitCode: 3 });
  });
});

const asRoot = process.getuid?.() === 0 ? test : test.skip;
asRoot('a port below 1024 as non-root: EACCES, the primary exits 1 and leaves nothing', async () => {
  const primary = child_process.spawnSync(process.execPath, [fixture('app.js')], {
    env: { ...process.env, TEST_OPTIONS: JSON.stringify({ listen: 81, workers: 2 }) },
    uid: 65534,
    gid: 65534,
    encoding: 'utf8',
    timeout: 10000,
  });
  expect(primary.status).toBe(1);
  expect(primary.stdout).toContain('"event":"start-failed","code":"EACCES","message":"bind EACCES');
  expect(primary.stderr).toMatch(/^prefork: bind EACCES \S+:81$/m);
  expect(primary.stdout).not.toContain('"event":"fork"');
});

test('the one-line listen() with a bad worker count exits 1 with the message', () => {
  const script = join(scratch, 'bad-workers.js');
  writeFileSync(script, `require(${JSON.stringify(join(__dirname, '..', 'lib'))}).listen(require('http').createServer(), 0, { workers: 0 }).catch((error) => { console.error(error.message); process.exit(1); });`);
  const result = child_process.spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 10000 });
  expect(result.status).toBe(1);
  expect(result.stderr).toContain('The "workers" option must be an integer from 1 to 1024. Received 0');
});
