// Messages between the primary and its workers, as node:cluster has them: process.send() and process.on('message')
// in a worker; supervisor.on('message'), worker.send() and broadcast() in the primary; JSON or 'advanced'
// serialization; the size cap; hostile frames (the worker is killed, the primary serves on); node:cluster's
// primary view (cluster.workers, cluster 'message') that setupPrimary() of cluster libraries relies on.
import cluster from 'node:cluster';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { types } from 'node:util';
import { MAX_MESSAGE_BYTES } from '../src/limits';
import type { Supervisor, SupervisorOptions, Worker } from '../src';
import { fixture, get, waitFor } from './helpers';
import { TestSupervisors } from './supervisors';

const supervisors = new TestSupervisors();
afterEach(() => supervisors.stopAll());
afterAll(() => supervisors.remove());

type Received = { worker: Worker; message: any };

/** A supervisor of messages-worker.js that records every message; resolves once both workers said hello. */
async function start(options: SupervisorOptions = {}): Promise<{ supervisor: Supervisor; received: Received[]; next: (match: (message: any) => boolean, from?: Worker) => Promise<Received> }> {
  const supervisor = supervisors.start({ script: fixture('messages-worker.js'), ...options });
  const received: Received[] = [];
  supervisor.on('message', (worker, message) => received.push({ worker, message }));
  const next = (match: (message: any) => boolean, from?: Worker) =>
    waitFor(() => received.find((entry) => match(entry.message) && (!from || entry.worker === from)), 5000, 'a message');
  await supervisor.ready();
  await waitFor(() => received.filter((entry) => entry.message?.hello).length === 2 || undefined, 5000, 'two hellos');
  return { supervisor, received, next };
}

test("each worker's process.send() reaches supervisor.on('message') with its worker; worker.send() and broadcast() reach process.on('message')", async () => {
  const { supervisor, received, next } = await start();
  const hellos = received.filter((entry) => entry.message.hello);
  expect(hellos.map((entry) => entry.message.hello).sort()).toEqual(supervisor.workers.map((worker) => worker.pid).sort());
  for (const { worker, message } of hellos) {
    expect(message).toEqual({ hello: worker.pid, typeofSend: 'function', connected: true });
    expect(supervisor.workers).toContain(worker);
  }
  // worker.send: to that worker alone; its callback gets null once the message left, and it returns true.
  const [first, second] = supervisor.workers;
  let acked: Error | null | undefined;
  expect(first.send({ cmd: 'echo', value: 'to the first' }, (error: Error | null) => (acked = error))).toBe(true);
  expect((await next((message) => message.echo === 'to the first')).worker).toBe(first);
  expect(acked).toBeNull();
  expect(second.send({ cmd: 'echo', value: { nested: [1, 'two', null] } })).toBe(true);
  expect((await next((message) => message.echo?.nested)).message).toEqual({ echo: { nested: [1, 'two', null] }, pid: second.pid });
  // broadcast: every worker.
  supervisor.broadcast({ cmd: 'echo', value: 'to all' });
  await waitFor(() => received.filter((entry) => entry.message.echo === 'to all').length === 2 || undefined, 5000, 'two echoes');
  expect(received.filter((entry) => entry.message.echo === 'to all').map((entry) => entry.worker.pid).sort()).toEqual([first.pid, second.pid].sort());
  // process.send's callback (null once sent) and return value (true), as Node's.
  first.send({ cmd: 'callback' });
  expect((await next((message) => 'callback' in message)).message).toEqual({ callback: null, returned: true });
  // send is no enumerable field: not in stats() nor in JSON.
  expect(Object.keys(first)).not.toContain('send');
  expect((await supervisor.stats()).workers[0]).not.toHaveProperty('send');
});

test("JSON by default (a Map arrives as {}, as under node:cluster); 'advanced' round-trips Map, Set, Date, BigInt and Buffer both ways", async () => {
  const value = () => ({ map: new Map([['a', 1]]), set: new Set([2]), date: new Date(1_700_000_000_000), big: 2n ** 70n, bytes: Buffer.from('hi') });
  const json = await start();
  const [worker] = json.supervisor.workers;
  expect(() => worker.send({ cmd: 'echo', value: 1n })).toThrow(/BigInt/); // JSON cannot take it: thrown, as Node's send
  worker.send({ cmd: 'echo', value: { map: new Map([['a', 1]]), date: new Date(1_700_000_000_000) } });
  expect((await json.next((message) => message.echo)).message.echo).toEqual({ map: {}, date: '2023-11-14T22:13:20.000Z' });
  await supervisors.stopAll();

  const advanced = await start({ serialization: 'advanced' });
  const [first] = advanced.supervisor.workers;
  first.send({ cmd: 'echo', value: value() });
  const { message } = await advanced.next((received) => received.echo);
  // (v8.deserialize builds them in Node's realm, not jest's: hence util.types, not instanceof)
  expect(types.isMap(message.echo.map)).toBe(true);
  expect(message.echo.map.get('a')).toBe(1);
  expect(types.isSet(message.echo.set)).toBe(true);
  expect([...message.echo.set]).toEqual([2]);
  expect(types.isDate(message.echo.date)).toBe(true);
  expect(message.echo.date.getTime()).toBe(1_700_000_000_000);
  expect(message.echo.big).toBe(2n ** 70n);
  expect(Buffer.from(message.echo.bytes).toString()).toBe('hi');
});

test('a message past the size cap is refused where it is sent; a hostile frame past it, or garbage, ends that worker only (protocol) and the primary serves on', async () => {
  const { supervisor, received, next } = await start({ serialization: 'advanced' });
  const [first, second] = supervisor.workers;
  // In the worker: process.send throws a RangeError, and the worker goes on.
  first.send({ cmd: 'too-large', bytes: MAX_MESSAGE_BYTES + 1 });
  expect((await next((message) => message.refused, first)).message).toMatchObject({
    refused: 'ERR_PREFORK_MESSAGE_TOO_LARGE', name: 'RangeError', message: expect.stringContaining(`at most ${MAX_MESSAGE_BYTES} bytes`),
  });
  // In the primary: worker.send and broadcast throw the same, and send nothing.
  expect(() => first.send('x'.repeat(MAX_MESSAGE_BYTES + 1))).toThrow(expect.objectContaining({ code: 'ERR_PREFORK_MESSAGE_TOO_LARGE' }));
  expect(() => supervisor.broadcast('x'.repeat(MAX_MESSAGE_BYTES + 1))).toThrow(expect.objectContaining({ code: 'ERR_PREFORK_MESSAGE_TOO_LARGE' }));
  // No handles: the sendHandle argument is refused by name.
  second.send({ cmd: 'handle' });
  expect((await next((message) => message.refused, second)).message).toMatchObject({
    refused: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('"sendHandle" option of process.send() must be undefined or null'),
  });

  const exits: Array<{ worker: Worker; reason: string | null }> = [];
  supervisor.on('exit', (worker, code, signal, reason) => exits.push({ worker, reason }));
  const hostile = [
    { type: 'message', v8Repeat: Math.ceil(MAX_MESSAGE_BYTES / 3) * 4 + 4 }, // valid base64 ('A' × n, built in the worker), past the cap
    { type: 'message', v8: Buffer.from([0xff, 0x0f, 0x6f, 0x6f, 0x6f]).toString('base64') }, // bytes v8 cannot read
    { type: 'message', v8: '***' }, // not base64
    { type: 'message' }, // neither data nor v8
    { type: 'message', data: 1, v8: '' }, // both
  ];
  for (const [index, frame] of hostile.entries()) {
    const victim = supervisor.workers[index % 2];
    victim.send({ cmd: 'raw', frame });
    await waitFor(() => exits.find((exit) => exit.worker === victim), 5000, `worker ${victim.id} killed for frame ${index}`);
    expect(exits.find((exit) => exit.worker === victim)?.reason).toBe('protocol');
    // The primary serves on: the replacement comes, says hello, and answers.
    await waitFor(() => (supervisor.workers.length === 2 && supervisor.workers.every((worker) => worker.state === 'ready')) || undefined, 10000, 'both slots ready');
    const replacement = supervisor.workers[index % 2];
    await next((message) => message.hello === replacement.pid);
    replacement.send({ cmd: 'echo', value: `after frame ${index}` });
    await next((message) => message.echo === `after frame ${index}`, replacement);
  }
  expect(await get(supervisor.addresses[0].port)).toMatch(/^\d+$/);
  expect(received.some((entry) => entry.message === 'x'.repeat(MAX_MESSAGE_BYTES + 1))).toBe(false);
});

test("process.disconnect(): 'disconnect' once, connected false, send returns false with ERR_IPC_CHANNEL_CLOSED; the worker serves on", async () => {
  const report = join(supervisors.scratch, 'disconnected');
  const { supervisor, received } = await start({ env: { DISCONNECT_REPORT: report } });
  const [first] = supervisor.workers;
  first.send({ cmd: 'disconnect' });
  const line = await waitFor(() => existsSync(report) && readFileSync(report, 'utf8').trim(), 5000, 'the disconnect report');
  expect(line).toBe(`${first.pid} connected=false returned=false ERR_IPC_CHANNEL_CLOSED`);
  first.send({ cmd: 'echo', value: 'unheard' });
  supervisor.workers[1].send({ cmd: 'echo', value: 'heard' });
  await waitFor(() => received.find((entry) => entry.message.echo === 'heard'), 5000, 'the other echo');
  expect(received.some((entry) => entry.message.echo === 'unheard')).toBe(false);
  expect(first.state).toBe('ready');
});

test("a 'message' listener keeps a worker alive, as in Node, but not past its shutdown: an app that closes its server on SIGTERM exits 0", async () => {
  const { supervisor } = await start({ env: { CLOSE_ON_SIGTERM: '1' } });
  const exits: Array<{ code: number | null; signal: string | null }> = [];
  supervisor.on('exit', (worker, code, signal) => exits.push({ code, signal }));
  await supervisor.shutdown({ timeout: 10000 });
  expect(exits).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
});

test("node:cluster's primary view: cluster.workers holds each prefork worker, cluster emits 'message' (worker, message), and its send() answers", async () => {
  const seen: Array<{ worker: any; message: any }> = [];
  const listener = (worker: unknown, message: unknown) => seen.push({ worker, message });
  cluster.on('message', listener);
  try {
    const { supervisor } = await start();
    const entries = Object.values(cluster.workers ?? {}) as any[];
    const pids = supervisor.workers.map((worker) => worker.pid).sort();
    expect(entries.map((entry) => entry.process.pid).sort()).toEqual(pids);
    expect(new Set(entries.map((entry) => entry.id)).size).toBe(2);
    for (const entry of entries) expect(cluster.workers?.[entry.id]).toBe(entry);
    const entry = entries[0];
    entry.send({ cmd: 'echo', value: 'via cluster' });
    const answer = await waitFor(() => seen.find((item) => item.message?.echo === 'via cluster'), 5000, "cluster's 'message'");
    expect(answer.worker).toBe(entry);
    expect(answer.message.pid).toBe(entry.process.pid);
    await supervisors.stopAll();
    expect(Object.values(cluster.workers ?? {})).toEqual([]); // gone with their processes
  } finally {
    cluster.off('message', listener);
  }
});

test('bad serialization options name the option, the value and what is allowed', () => {
  expect(() => supervisors.start({ serialization: 'v8' as never })).toThrow(
    expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: `The "serialization" option must be one of 'json', 'advanced'. Received 'v8'` }),
  );
});
