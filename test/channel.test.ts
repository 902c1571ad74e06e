// The control channel: framed JSON messages and fds over a socketpair, in one process and across processes.
import { closeSync, fstatSync, writeSync } from 'node:fs';
import { createChannelPair, createListenSocket, spawn, ControlChannel, ChildHandle } from '../src';
import { native } from '../src/core/binding';
import { fixture, newSockets, openFds } from './helpers';

const fdsBefore = openFds();
const channels: ControlChannel[] = [];
const children: ChildHandle[] = [];

function pair(): [ControlChannel, ControlChannel] {
  const [a, b] = createChannelPair();
  const ends: [ControlChannel, ControlChannel] = [new ControlChannel(a), new ControlChannel(b)];
  channels.push(...ends);
  return ends;
}

function nextMessage(channel: ControlChannel): Promise<[unknown, number[]]> {
  return new Promise((resolve) => channel.once('message', (message, fds) => resolve([message, fds])));
}

/** The next `count` messages: one read can deliver several, so listen for all of them at once. */
function nextMessages(channel: ControlChannel, count: number): Promise<Array<[unknown, number[]]>> {
  const messages: Array<[unknown, number[]]> = [];
  return new Promise((resolve) => {
    const onMessage = (message: unknown, fds: number[]) => {
      messages.push([message, fds]);
      if (messages.length < count) return;
      channel.off('message', onMessage);
      resolve(messages);
    };
    channel.on('message', onMessage);
  });
}

afterEach(async () => {
  for (const channel of channels.splice(0)) channel.close();
  for (const child of children.splice(0)) {
    child.kill('SIGKILL');
    await child.exited;
  }
});

afterAll(() => {
  expect(newSockets(fdsBefore)).toEqual([]);
});

test('messages arrive whole and in order', async () => {
  const [left, right] = pair();
  const received: unknown[] = [];
  const done = new Promise<void>((resolve) =>
    right.on('message', (message) => {
      received.push(message);
      if (received.length === 100) resolve();
    }),
  );
  for (let i = 0; i < 100; i++) left.send({ seq: i, text: 'x'.repeat(i * 10) });
  await done;
  expect(received).toEqual(Array.from({ length: 100 }, (_, i) => ({ seq: i, text: 'x'.repeat(i * 10) })));
});

test('more than the socket buffer holds is queued and arrives intact, in order', async () => {
  const [left, right] = pair();
  const chunk = 'y'.repeat(60 * 1024);
  const arrival = nextMessages(right, 101);
  for (let i = 0; i < 100; i++) left.send({ i, chunk }); // 6 MB: far past the socket buffer
  left.send('after');
  const messages = await arrival;
  expect(messages.slice(0, 100).every(([message], i) => (message as { i: number; chunk: string }).i === i && (message as { chunk: string }).chunk === chunk)).toBe(true);
  expect(messages[100][0]).toBe('after');
});

test('frames are capped at 64 KiB: send() refuses a larger message, and a peer announcing one is cut off', async () => {
  const [left, right] = pair();
  expect(() => left.send('x'.repeat(70 * 1024))).toThrow('The "message" option must serialise to at most 65536 bytes of JSON');
  const failed = new Promise<Error>((resolve) => right.once('error', resolve));
  const header = Buffer.alloc(8);
  header.writeUInt32BE(16 * 1024 * 1024, 0); // a 16 MiB body announced
  writeSync(left.fd, header);
  expect(await failed).toMatchObject({ code: 'ERR_PREFORK_CHANNEL_PROTOCOL' });
  expect(right.closed).toBe(true);
});

test('an fd travels with its message (SCM_RIGHTS) and is a new descriptor of the same socket', async () => {
  const [left, right] = pair();
  const socket = await createListenSocket({ host: '127.0.0.1', port: 0 });
  try {
    const arrival = nextMessages(right, 2);
    left.send('plain');
    left.send({ socket: 'here' }, [socket.fd]);
    const [plain, [message, fds]] = await arrival;
    expect(plain).toEqual(['plain', []]);
    expect(message).toEqual({ socket: 'here' });
    expect(fds).toHaveLength(1);
    expect(fds[0]).not.toBe(socket.fd);
    expect(fstatSync(fds[0]).ino).toBe(fstatSync(socket.fd).ino);
    closeSync(fds[0]);
  } finally {
    closeSync(socket.fd);
  }
});

test('an fd queued behind a full socket buffer survives the caller closing its own copy', async () => {
  const [left, right] = pair();
  const socket = await createListenSocket({ host: '127.0.0.1', port: 0 });
  const inode = fstatSync(socket.fd).ino;
  const arrival = nextMessages(right, 101);
  for (let i = 0; i < 100; i++) left.send('z'.repeat(60 * 1024)); // fills the socket buffer: the next message waits in the queue
  left.send('with fd', [socket.fd]);
  closeSync(socket.fd);
  const [message, fds] = (await arrival)[100];
  expect(message).toBe('with fd');
  expect(fstatSync(fds[0]).ino).toBe(inode);
  closeSync(fds[0]);
});

/** A raw frame (u32 body length, u32 announced fd count, JSON) sent with `fds` by sendmsg, as a hostile peer could. */
function sendRawFrame(fd: number, message: unknown, announced: number, fds: number[]): void {
  const body = Buffer.from(JSON.stringify(message));
  const header = Buffer.alloc(8);
  header.writeUInt32BE(body.length, 0);
  header.writeUInt32BE(announced, 4);
  native.channelSend(fd, Buffer.concat([header, body]), 0, fds);
}

test.each([
  ['announce none', 0],
  ['announce fewer than they carry', 1],
])('frames that %s: the fds are closed at once and the channel is cut off (a peer cannot fill our fd table)', async (_case, announced) => {
  const [left, right] = pair();
  const before = openFds().size;
  const failed = new Promise<Error>((resolve) => right.once('error', resolve));
  const received: number[][] = [];
  right.on('message', (_message, fds: number[]) => received.push(fds));
  for (let i = 0; i < 20; i++) sendRawFrame(left.fd, 'ready', announced, Array(64).fill(0));
  expect(await failed).toMatchObject({ code: 'ERR_PREFORK_CHANNEL_PROTOCOL', message: expect.stringMatching(/fds that no frame announced/) });
  expect(right.closed).toBe(true);
  for (const fds of received) fds.forEach((fd) => closeSync(fd));
  expect(received.flat().length).toBeLessThanOrEqual(announced);
  expect(openFds().size).toBe(before - 1); // and the channel's own fd
});

test('a peer that leaves our messages unread fails the channel past the fds or the bytes queued (maxQueued), not past a count of messages', async () => {
  const peers: number[] = [];
  const unread = (maxQueued: { fds: number; bytes: number }) => {
    const [a, b] = createChannelPair();
    peers.push(b); // a peer that never reads
    const sender = new ControlChannel(a, { maxQueued });
    channels.push(sender);
    const errors: Error[] = [];
    sender.on('error', (error: Error) => errors.push(error));
    return { sender, errors };
  };
  // 5,000 small messages (far more than the socket buffer holds) and no fds: under both bounds.
  const small = unread({ fds: 4, bytes: 1024 * 1024 });
  for (let i = 0; i < 5000; i++) small.sender.send({ type: 'message', data: i });
  expect(small.errors).toEqual([]);
  // Fds held in the queue: the fifth is one too many.
  const socket = await createListenSocket({ host: '127.0.0.1', port: 0 });
  try {
    const withFds = unread({ fds: 4, bytes: 1024 * 1024 });
    for (let i = 0; i < 2000; i++) withFds.sender.send({ i, chunk: 'z'.repeat(512) }); // fill the socket buffer first
    for (let i = 0; i < 5; i++) withFds.sender.send({ type: 'socket', i }, [socket.fd]);
    expect(withFds.errors).toEqual([expect.objectContaining({ code: 'ERR_PREFORK_CHANNEL_PROTOCOL', message: expect.stringMatching(/unread \(4 fds/) })]);
  } finally {
    closeSync(socket.fd);
  }
  // Bytes: 1 MiB of queued messages is the limit here.
  const big = unread({ fds: 4, bytes: 1024 * 1024 });
  for (let i = 0; i < 40 && big.errors.length === 0; i++) big.sender.send({ chunk: 'y'.repeat(60 * 1024) });
  expect(big.errors).toEqual([expect.objectContaining({ code: 'ERR_PREFORK_CHANNEL_PROTOCOL', message: expect.stringMatching(/messages unread \(0 fds, \d+ bytes\)/) })]);
  for (const fd of peers) closeSync(fd);
});

test('a channel that takes no fds (the primary\'s end of a worker\'s) never installs one: the first ends it', async () => {
  const [a, b] = createChannelPair();
  const left = new ControlChannel(a);
  const right = new ControlChannel(b, { fds: false });
  channels.push(left, right);
  const before = openFds().size;
  const failed = new Promise<Error>((resolve) => right.once('error', resolve));
  const received: number[][] = [];
  right.on('message', (_message, fds: number[]) => received.push(fds));
  sendRawFrame(left.fd, 'ready', 1, Array(64).fill(0));
  expect(await failed).toMatchObject({ code: 'ERR_PREFORK_CHANNEL_PROTOCOL', message: expect.stringMatching(/fds where the protocol has none/) });
  expect(received).toEqual([]);
  expect(openFds().size).toBe(before - 1); // the channel's own fd
});

test("a channel that takes one fd per frame (the primary's end of a worker's: handovers) passes one, and is cut off by a frame with 64", async () => {
  const [a, b] = createChannelPair();
  const left = new ControlChannel(a);
  const right = new ControlChannel(b, { fds: 1 });
  channels.push(left, right);
  const before = openFds().size;
  const [message, fds] = await new Promise<[unknown, number[]]>((resolve) => {
    right.once('message', (...args) => resolve(args as [unknown, number[]]));
    left.send({ type: 'handover' }, [0]);
  });
  expect(message).toEqual({ type: 'handover' });
  expect(fds).toHaveLength(1);
  closeSync(fds[0]);
  const failed = new Promise<Error>((resolve) => right.once('error', resolve));
  let mostOpen = 0;
  right.on('message', (_message, received: number[]) => {
    mostOpen = Math.max(mostOpen, openFds().size - before);
    received.forEach((fd) => closeSync(fd));
  });
  sendRawFrame(left.fd, 'ready', 1, Array(64).fill(0));
  expect(await failed).toMatchObject({ code: 'ERR_PREFORK_CHANNEL_PROTOCOL', message: expect.stringMatching(/more than 1 fds in one frame/) });
  expect(mostOpen).toBeLessThanOrEqual(2);
  expect(openFds().size).toBe(before - 1); // the channel's own fd
  expect(() => new ControlChannel(0, { fds: 33 })).toThrow(/fds/);
});

test('closing one end emits close on the other (EOF)', async () => {
  const [left, right] = pair();
  const closed = new Promise((resolve) => right.once('close', resolve));
  left.close();
  await closed;
  expect(right.closed).toBe(true);
  expect(() => right.send('late')).toThrow(expect.objectContaining({ code: 'ERR_PREFORK_CHANNEL_CLOSED' }));
});

test('the channel works across processes: a worker echoes messages and receives fds', async () => {
  const [ours, theirs] = createChannelPair();
  let child: ChildHandle;
  try {
    child = spawn({ file: process.execPath, args: ['node', fixture('channel-echo.js')], fds: { 3: theirs } });
    children.push(child);
  } finally {
    closeSync(theirs);
  }
  const channel = new ControlChannel(ours);
  channels.push(channel);
  const socket = await createListenSocket({ host: '127.0.0.1', port: 0 });
  try {
    const reply = nextMessage(channel);
    channel.send({ hello: 'worker' }, [socket.fd]);
    expect(await reply).toEqual([{ echo: { hello: 'worker' }, inodes: [fstatSync(socket.fd).ino], pid: child.pid }, []]);
  } finally {
    closeSync(socket.fd);
  }
  // The worker sees EOF when we close our end, and exits.
  channel.close();
  expect(await child.exited).toEqual({ code: 0, signal: null });
});

test('the primary sees close when its worker dies', async () => {
  const [ours, theirs] = createChannelPair();
  const child = spawn({ file: process.execPath, args: ['node', fixture('channel-echo.js')], fds: { 3: theirs } });
  children.push(child);
  closeSync(theirs);
  const channel = new ControlChannel(ours);
  channels.push(channel);
  const closed = new Promise((resolve) => channel.once('close', resolve));
  child.kill('SIGKILL');
  await closed;
});

test('bad arguments are clear errors', () => {
  const [left] = pair();
  expect(() => left.send('x', [-1])).toThrow('The "fds[0]" option must be an integer from 0 to 2147483647. Received -1');
  expect(() => left.send('x', Array(33).fill(0))).toThrow(/must be an array of at most 32 file descriptors/);
  expect(() => new ControlChannel(-1)).toThrow(RangeError);
});
