// createListenSocket(): SO_REUSEPORT sockets, their errors, and their use by real HTTP children.
import { closeSync } from 'node:fs';
import net from 'node:net';
import { createListenSocket, spawn, ChildHandle } from '../src';
import { fixture, get, newSockets, openFds } from './helpers';

const fdsBefore = openFds();
const opened: number[] = [];
const children: ChildHandle[] = [];

async function listenSocket(options: Parameters<typeof createListenSocket>[0]) {
  const socket = await createListenSocket(options);
  opened.push(socket.fd);
  return socket;
}

function startHttpWorker(fd: number, args: string[] = []): ChildHandle {
  const child = spawn({ file: process.execPath, args: ['node', fixture('http-worker.js'), ...args], fds: { 3: fd } });
  children.push(child);
  return child;
}

afterEach(async () => {
  for (const child of children.splice(0)) {
    child.kill('SIGKILL');
    await child.exited;
  }
  for (const fd of opened.splice(0)) closeSync(fd);
});

afterAll(() => {
  expect(newSockets(fdsBefore)).toEqual([]);
});

test('port 0 reports the port the kernel picked', async () => {
  const socket = await listenSocket({ host: '127.0.0.1', port: 0 });
  expect(socket).toEqual({ fd: expect.any(Number), host: '127.0.0.1', port: expect.any(Number), family: 'IPv4' });
  expect(socket.port).toBeGreaterThan(0);
});

test('a spawned node child serves HTTP on an inherited SO_REUSEPORT socket', async () => {
  const socket = await listenSocket({ host: '127.0.0.1', port: 0 });
  const child = startHttpWorker(socket.fd);
  expect(await get(socket.port)).toBe(String(child.pid));
});

test('two children with their own sockets on one port both receive connections', async () => {
  const first = await listenSocket({ host: '127.0.0.1', port: 0 });
  const second = await listenSocket({ host: '127.0.0.1', port: first.port });
  const pids = [startHttpWorker(first.fd).pid, startHttpWorker(second.fd).pid].map(String);
  const answers = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const pid = await get(first.port);
    answers.set(pid, (answers.get(pid) ?? 0) + 1);
  }
  expect([...answers.keys()].sort()).toEqual(pids.sort());
  for (const count of answers.values()) expect(count).toBeGreaterThan(20);
});

test('listen: false binds only, so no connection is queued until the worker listens', async () => {
  const socket = await listenSocket({ host: '127.0.0.1', port: 0, listen: false });
  await expect(get(socket.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  const child = startHttpWorker(socket.fd, ['report']);
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      expect(await get(socket.port)).toBe(String(child.pid));
      break;
    } catch (error) {
      if ((error as { code?: string }).code !== 'ECONNREFUSED' || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
});

test('IPv6 loopback and dual-stack "::" accept, and ipv6Only refuses IPv4', async () => {
  const v6 = await listenSocket({ host: '::1', port: 0 });
  expect(v6.family).toBe('IPv6');
  startHttpWorker(v6.fd);
  expect(await get(v6.port, '::1')).toMatch(/^\d+$/);

  const dual = await listenSocket({ host: '::', port: 0 });
  startHttpWorker(dual.fd);
  expect(await get(dual.port, '127.0.0.1')).toMatch(/^\d+$/);

  const only6 = await listenSocket({ host: '::', port: 0, ipv6Only: true });
  startHttpWorker(only6.fd);
  expect(await get(only6.port, '::1')).toMatch(/^\d+$/);
  await expect(get(only6.port, '127.0.0.1')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
});

test('a host name is resolved before binding', async () => {
  const socket = await listenSocket({ host: 'localhost', port: 0 });
  expect(['127.0.0.1', '::1']).toContain(socket.host);
});

test('EADDRINUSE when a socket without SO_REUSEPORT holds the port', async () => {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const { port } = holder.address() as net.AddressInfo;
  try {
    await expect(createListenSocket({ host: '127.0.0.1', port })).rejects.toMatchObject({
      code: 'EADDRINUSE',
      syscall: 'bind',
      errno: -98,
      address: '127.0.0.1',
      port,
      message: `bind EADDRINUSE 127.0.0.1:${port}`,
    });
  } finally {
    holder.close();
  }
});

test('an address this machine does not have gives EADDRNOTAVAIL', async () => {
  await expect(createListenSocket({ host: '192.0.2.1', port: 0 })).rejects.toMatchObject({
    code: 'EADDRNOTAVAIL',
    message: 'bind EADDRNOTAVAIL 192.0.2.1:0',
  });
});

test('an unresolvable host name is an ENOTFOUND error', async () => {
  await expect(createListenSocket({ host: 'no-such-host.invalid', port: 0 })).rejects.toMatchObject({ code: 'ENOTFOUND' });
});

describe('bad arguments are clear errors', () => {
  test.each([
    [{ port: 70000 }, RangeError, 'The "port" option must be an integer from 0 to 65535. Received 70000'],
    [{ port: -1 }, RangeError, 'The "port" option must be an integer from 0 to 65535. Received -1'],
    [{ port: 1.5 }, RangeError, 'The "port" option must be an integer from 0 to 65535. Received 1.5'],
    [{ port: 'x' }, TypeError, `The "port" option must be of type number. Received type string ('x')`],
    [{}, TypeError, 'The "port" option must be of type number. Received undefined'],
    [{ port: 0, host: '' }, TypeError, `The "host" option must be a non-empty string. Received ''`],
    [{ port: 0, backlog: -5 }, RangeError, 'The "backlog" option must be an integer from 0 to 2147483647. Received -5'],
    [{ port: 0, ipv6Only: 'yes' }, TypeError, `The "ipv6Only" option must be of type boolean. Received type string ('yes')`],
    [{ port: 0, listen: false, backlog: 10 }, TypeError, 'The "backlog" option has no effect with listen: false; pass it to server.listen(). Received 10'],
    [{ prot: 80 }, TypeError, 'Unknown option "prot" for createListenSocket(). Did you mean "port"? Valid options: host, port, backlog, ipv6Only, listen'],
  ])('%j', async (options, type, message) => {
    const attempt = createListenSocket(options as never);
    await expect(attempt).rejects.toThrow(type);
    await expect(attempt).rejects.toThrow(message);
  });
});
