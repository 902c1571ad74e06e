// systemd: sd_notify to a NOTIFY_SOCKET the test owns (a path and an abstract name), the watchdog, and socket
// activation (a listening socket passed at fd 3 with LISTEN_FDS, as systemd does), with the prefork command.
import child_process, { type ChildProcessWithoutNullStreams } from 'node:child_process';
import { closeSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createListenSocket, supervise, type Supervisor } from '../src';
import { app, AppRun, cli, stopAllApps } from './apps';
import { fixture, get, isDead, waitFor } from './helpers';
import { tally } from './primary';
import { describeWithTool } from './tools';

const receivers: ChildProcessWithoutNullStreams[] = [];
const scratch = mkdtempSync(join(tmpdir(), 'prefork-systemd-'));
let sockets = 0;
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

afterEach(async () => {
  await stopAllApps();
  for (const receiver of receivers.splice(0)) receiver.kill('SIGKILL');
});

/** A datagram socket at `address` that collects what it receives. */
async function notifySocket(address: string): Promise<{ messages: string[] }> {
  const receiver = child_process.spawn('python3', [fixture('notify-receiver.py'), address]);
  receivers.push(receiver);
  const state = { messages: [] as string[], ready: false };
  let buffered = '';
  receiver.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      if (line === 'READY') state.ready = true;
      else state.messages.push(JSON.parse(line) as string);
    }
  });
  await waitFor(() => state.ready || undefined, 5000, 'the notify socket bound');
  return state;
}

const find = (state: { messages: string[] }, field: string, from = 0) =>
  state.messages.findIndex((message, i) => i >= from && message.split('\n').includes(field));

describeWithTool('python3', 'sd_notify', () => {
test('READY=1 with MAINPID and STATUS when all workers are ready, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1, and the watchdog', async () => {
  const path = join(scratch, `notify-${++sockets}`);
  const notify = await notifySocket(path);
  const run = new AppRun([cli, '--workers', '2', app('plain-http.js')], { NOTIFY_SOCKET: path, WATCHDOG_USEC: '200000' });
  const { pids } = await run.listening(2);
  await waitFor(() => find(notify, 'READY=1') >= 0 || undefined, 5000, 'READY=1');
  const ready = notify.messages[find(notify, 'READY=1')].split('\n');
  expect(ready).toEqual(['READY=1', `MAINPID=${run.process.pid}`, 'STATUS=2 of 2 workers ready, 0 restarts']);
  // Workers are not the main process: systemd's variables are not theirs.
  for (const pid of pids) expect(readFileSync(`/proc/${pid}/environ`, 'utf8')).not.toContain('NOTIFY_SOCKET');
  await waitFor(() => notify.messages.filter((message) => message === 'WATCHDOG=1').length >= 3 || undefined, 3000, '3 watchdog pings');

  const beforeReload = notify.messages.length;
  const hup = process.hrtime.bigint() / 1000n;
  run.process.kill('SIGHUP');
  await run.waitForMatches(/prefork: reload done/g, 1, { source: 'errors' });
  const reloading = find(notify, 'RELOADING=1', beforeReload);
  expect(reloading).toBeGreaterThanOrEqual(0);
  const usec = BigInt(/^MONOTONIC_USEC=(\d+)$/m.exec(notify.messages[reloading])![1]);
  expect(usec >= hup && usec - hup < 5_000_000n).toBe(true); // CLOCK_MONOTONIC, as Type=notify-reload wants
  await waitFor(() => find(notify, 'READY=1', reloading) > reloading || undefined, 2000, 'READY=1 after the reload');

  expect(await run.stop()).toEqual({ code: 0, signal: null });
  await waitFor(() => notify.messages.includes('STOPPING=1') || undefined, 2000, 'STOPPING=1');
});

test('a reload that fails (the old workers keep serving) is RELOADING=1, then READY=1 all the same', async () => {
  const path = join(scratch, `notify-${++sockets}`);
  const notify = await notifySocket(path);
  const behaviour = join(scratch, `behaviour-${sockets}`);
  writeFileSync(behaviour, '');
  process.env.NOTIFY_SOCKET = path; // read when the supervisor is made, as systemd sets it for the main process
  let supervisor: Supervisor;
  try {
    supervisor = supervise({
      script: fixture('app.js'), args: [], execArgv: [], workers: 2, listen: 0,
      env: { TEST_BEHAVIOUR_FILE: behaviour, TEST_OPTIONS: JSON.stringify({ listen: 0 }) },
    });
  } finally {
    delete process.env.NOTIFY_SOCKET;
  }
  try {
    await supervisor.ready();
    await waitFor(() => find(notify, 'READY=1') >= 0 || undefined, 5000, 'READY=1');
    const beforeReload = notify.messages.length;
    writeFileSync(behaviour, 'exit-before-listen'); // the new workers exit before they listen
    await expect(supervisor.reload()).rejects.toMatchObject({ code: 'ERR_PREFORK_RELOAD_FAILED' });
    const reloading = find(notify, 'RELOADING=1', beforeReload);
    expect(reloading).toBeGreaterThanOrEqual(0);
    await waitFor(() => find(notify, 'READY=1', reloading) > reloading || undefined, 2000, 'READY=1 after the failed reload');
    expect(notify.messages[find(notify, 'READY=1', reloading)].split('\n')).toContain('STATUS=2 of 2 workers ready, 0 restarts');
  } finally {
    await supervisor.shutdown({ timeout: 1000 });
  }
});

test('an abstract NOTIFY_SOCKET (@name) gets READY=1; a NOTIFY_SOCKET nobody listens on is one warning, and the service runs', async () => {
  const name = `@prefork-test-${process.pid}-${Date.now()}`;
  const notify = await notifySocket(name);
  const run = new AppRun([cli, '--workers', '2', app('plain-http.js')], { NOTIFY_SOCKET: name });
  await run.listening(2);
  await waitFor(() => find(notify, 'READY=1') >= 0 || undefined, 5000, 'READY=1 on the abstract socket');

  const orphan = new AppRun([cli, '--workers', '1', app('plain-http.js')], { NOTIFY_SOCKET: '/nonexistent/notify' });
  const { port } = await orphan.listening(1);
  expect(Number(await get(port))).toBeGreaterThan(0);
  expect(orphan.matches(/cannot notify the service manager at NOTIFY_SOCKET=\/nonexistent\/notify/g, 'errors')).toHaveLength(1);
});

test('a hot upgrade (SIGUSR2) moves MAINPID and the watchdog to the new primary, with no STOPPING=1', async () => {
  const path = join(scratch, `notify-${++sockets}`);
  const notify = await notifySocket(path);
  const run = new AppRun([cli, '--workers', '2', app('plain-http.js')], { NOTIFY_SOCKET: path, WATCHDOG_USEC: '200000' });
  await run.listening(2);
  await waitFor(() => find(notify, 'READY=1') >= 0 || undefined, 5000, 'READY=1');
  run.process.kill('SIGUSR2');
  const [[, newPid]] = await run.waitForMatches(/new primary pid (\d+) is starting/g, 1, { source: 'errors' });
  try {
    await waitFor(() => find(notify, `MAINPID=${newPid}`) >= 0 || undefined, 10000, 'MAINPID of the new primary');
    const handedOver = find(notify, `MAINPID=${newPid}`);
    expect(notify.messages[handedOver]).toMatch(/^MAINPID=\d+\nSTATUS=upgraded/);
    await waitFor(() => find(notify, 'READY=1', handedOver) > handedOver || undefined, 5000, 'READY=1 from the new primary');
    expect(notify.messages[find(notify, 'READY=1', handedOver)].split('\n')).toContain(`MAINPID=${newPid}`);
    expect(await run.exited).toEqual({ code: 0, signal: null });
    const count = notify.messages.filter((message) => message === 'WATCHDOG=1').length;
    await waitFor(() => notify.messages.filter((message) => message === 'WATCHDOG=1').length >= count + 3 || undefined, 3000, 'the new primary pings');
    expect(notify.messages).not.toContain('STOPPING=1');
  } finally {
    process.kill(Number(newPid), 'SIGTERM');
    await waitFor(() => isDead(Number(newPid)) || undefined, 10000, 'the new primary to exit');
  }
  await waitFor(() => notify.messages.includes('STOPPING=1') || undefined, 2000, 'STOPPING=1 from the new primary');
});

test('the watchdog pauses while a worker is stuck, and resumes once it is replaced', async () => {
  const path = join(scratch, `notify-${++sockets}`);
  const notify = await notifySocket(path);
  const run = new AppRun([cli, '--workers', '2', '--heartbeat-timeout', '2000', app('liveness.js')], { NOTIFY_SOCKET: path, WATCHDOG_USEC: '100000' });
  const { port } = await run.listening(2);
  await waitFor(() => notify.messages.filter((message) => message === 'WATCHDOG=1').length >= 3 || undefined, 3000, 'watchdog pings');
  const pings: number[] = [];
  const watch = setInterval(() => pings.push(notify.messages.filter((message) => message === 'WATCHDOG=1').length), 50);
  void get(port, '127.0.0.1', '/spin').catch(() => {});
  await run.waitForMatches(/is unresponsive/g, 1, { source: 'errors' });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  clearInterval(watch);
  // Between half the timeout (1 s) and the kill (2 s), no ping: at least 600 ms (12 samples) without a new one.
  let longest = 0;
  for (let i = 0, run = 0; i < pings.length; i++) longest = Math.max(longest, (run = i > 0 && pings[i] === pings[i - 1] ? run + 1 : 0));
  expect(longest).toBeGreaterThanOrEqual(12);
  expect(pings[pings.length - 1]).toBeGreaterThan(pings[pings.length - 12]); // pinging again after the replacement
});

});

describe('socket activation', () => {
  /** The command run as systemd runs a service: a shell sets LISTEN_PID to its pid, then execs node. */
  const activated = (fd: number, env: NodeJS.ProcessEnv, args: string[] = ['--workers', '2', app('plain-http.js')]) =>
    new AppRun(['-c', 'LISTEN_PID=${LISTEN_PID:-$$} exec "$0" "$@"', process.execPath, cli, ...args], env, { file: 'sh', fds: [fd] });

  test("systemd's socket is served by 2 workers, and a connection queued while the service restarts is served", async () => {
    const socket = await createListenSocket({ host: '127.0.0.1', port: 0 });
    try {
      const env = { LISTEN_FDS: '1', LISTEN_FDNAMES: 'web', PORT: String(socket.port) };
      const first = activated(socket.fd, env);
      const { pids } = await first.listening(2);
      await first.waitForMatches(new RegExp(`2 workers ready .* on 127\\.0\\.0\\.1:${socket.port}`, 'g'), 1, { source: 'errors' });
      expect([...(await tally(socket.port, 60)).keys()].map(Number).sort()).toEqual([...pids].sort());
      expect(await first.stop()).toEqual({ code: 0, signal: null });

      // The service is down; systemd (here: the test) still holds the socket, so the connection waits.
      const waiting = get(socket.port);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const second = activated(socket.fd, env);
      const { pids: next } = await second.listening(2);
      expect(next).toContain(Number(await waiting));
    } finally {
      closeSync(socket.fd);
    }
  });

  test('malformed LISTEN_FDS: an error when LISTEN_PID is ours, one warning when it is not', async () => {
    const socket = await createListenSocket({ host: '127.0.0.1', port: 0 });
    try {
      const ours = activated(socket.fd, { LISTEN_FDS: 'two' });
      expect(await ours.exited).toEqual({ code: 1, signal: null });
      expect(ours.errors).toContain("LISTEN_FDS must be the number of sockets systemd passed (0 to 1024). Received 'two'");
      expect(ours.sideEffectPids()).toEqual([]);

      const notOurs = activated(socket.fd, { LISTEN_FDS: 'two', LISTEN_PID: '1', PORT: '0' }, ['--workers', '1', app('plain-http.js')]);
      const { port } = await notOurs.listening(1);
      expect(port).not.toBe(socket.port);
      expect(notOurs.matches(/ignoring malformed socket activation variables \(LISTEN_PID=1, LISTEN_FDS=two\)/g, 'errors')).toHaveLength(1);

    } finally {
      closeSync(socket.fd);
    }
  });
});
