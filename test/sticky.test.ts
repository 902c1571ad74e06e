// socket.io with its default transports under the default balance (issue 28): a polling request or a websocket
// upgrade that the kernel hashes to a worker other than its session's is handed to the right one (src/worker/sticky.ts),
// so no client sees "Session ID unknown". The app (test/fixtures/apps/compat/socket-io-sticky.js) never requires prefork.
import { io as connect, type Socket } from 'socket.io-client';
import { app, AppRun, stopAllApps } from './apps';
import { fixture, get, waitFor } from './helpers';

afterEach(stopAllApps);

const register = (name: string) => ['-r', 'prefork/register', app(name)];
/** A drain of 3 s, not 10: pending long-polls hold each stop to half of it, and these tests stop apps often. */
const DRAIN = { PREFORK_SHUTDOWN_TIMEOUT: '3000' };
const CLIENTS = 12;

/** A socket.io client and what it saw: connects, disconnect reasons, connect errors and 'news' broadcasts. */
class Client {
  readonly socket: Socket;
  connects = 0;
  readonly problems: string[] = [];
  readonly news: number[] = [];

  constructor(port: number, options: { transports?: Array<'polling' | 'websocket'>; reconnection: boolean }) {
    this.socket = connect(`http://127.0.0.1:${port}`, { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 500, ...options });
    this.socket.on('connect', () => (this.connects += 1));
    this.socket.on('connect_error', (error) => this.problems.push(`connect_error ${error.message}`));
    this.socket.on('disconnect', (reason) => this.problems.push(`disconnect ${reason}`));
    this.socket.on('news', (n: number) => this.news.push(n));
  }

  whoami(): Promise<number> {
    return this.socket.timeout(5000).emitWithAck('whoami');
  }

  get transport(): string | undefined {
    return this.socket.io.engine?.transport?.name;
  }
}

async function connectAll(port: number, options: ConstructorParameters<typeof Client>[1], count = CLIENTS): Promise<Client[]> {
  const clients = Array.from({ length: count }, () => new Client(port, options));
  await waitFor(() => {
    const problems = options.reconnection ? [] : clients.flatMap((client) => client.problems);
    if (problems.length > 0) throw new Error(`clients failed: ${problems.join(', ')}`);
    return clients.every((client) => client.connects >= 1) || undefined;
  }, 15000, `${count} clients to connect`);
  return clients;
}

const disconnectAll = (clients: Client[]) => clients.forEach((client) => client.socket.disconnect());

test("default transports under the default balance: every client connects, upgrades and talks to both workers' sessions, no 'Session ID unknown'", async () => {
  const run = new AppRun(register('compat/socket-io-sticky.js'), DRAIN);
  const { port, pids } = await run.listening(2);
  const clients = await connectAll(port, { reconnection: false });
  const polling = await connectAll(port, { transports: ['polling'], reconnection: false });
  try {
    const servedBy = new Set<number>();
    for (let round = 0; round < 5; round++) {
      for (const pid of await Promise.all([...clients, ...polling].map((client) => client.whoami()))) servedBy.add(pid);
    }
    expect([...servedBy].sort()).toEqual([...pids].sort()); // sessions on both workers
    await waitFor(() => clients.every((client) => client.transport === 'websocket') || undefined, 10000, 'every default client to upgrade');
    expect(polling.map((client) => client.transport)).toEqual(polling.map(() => 'polling'));
    expect([...clients, ...polling].flatMap((client) => client.problems)).toEqual([]);
    expect(run.matches(/^ENGINE_ERROR .*$/gm).map((line) => line[0])).toEqual([]);
  } finally {
    disconnectAll([...clients, ...polling]);
  }
});

test('an app that loads socket.io before prefork and serves with listen(): polling clients on both workers, no errors', async () => {
  const run = new AppRun([fixture('socket-io-listen.js')]);
  const { port, pids } = await run.listening(2);
  const clients = await connectAll(port, { transports: ['polling'], reconnection: false });
  try {
    const servedBy = new Set<number>();
    for (let round = 0; round < 3; round++) for (const pid of await Promise.all(clients.map((client) => client.whoami()))) servedBy.add(pid);
    expect([...servedBy].sort()).toEqual([...pids].sort());
    expect(clients.flatMap((client) => client.problems)).toEqual([]);
    expect(run.matches(/^ENGINE_ERROR .*$/gm).map((line) => line[0])).toEqual([]);
  } finally {
    disconnectAll(clients);
  }
});

test('a reload keeps the clients: each reconnects to a new worker and talks to it', async () => {
  const run = new AppRun(register('compat/socket-io-sticky.js'), DRAIN);
  const { port, pids } = await run.listening(2);
  const clients = await connectAll(port, { reconnection: true });
  try {
    run.process.kill('SIGHUP');
    await run.waitForMatches(/reload done/g, 1, { source: 'errors', timeout: 20000 });
    await waitFor(() => clients.every((client) => client.connects >= 2) || undefined, 15000, 'every client to reconnect');
    const after = await Promise.all(clients.map((client) => client.whoami()));
    expect(after.filter((pid) => pids.includes(pid))).toEqual([]);
    expect(clients.every((client) => client.socket.connected)).toBe(true);
  } finally {
    disconnectAll(clients);
  }
});

test("a reload with long-polling clients: the old workers close their engine.io sessions after the app's turn and exit 0, not SIGKILLed at the drain's end", async () => {
  const run = new AppRun(register('compat/socket-io-sticky.js'), DRAIN);
  const { port, pids } = await run.listening(2);
  const clients = await connectAll(port, { transports: ['polling'], reconnection: true });
  try {
    run.process.kill('SIGHUP');
    await run.waitForMatches(/reload done/g, 1, { source: 'errors', timeout: 20000 });
    for (const pid of pids) await run.waitForMatches(new RegExp(`\\(pid ${pid}\\) exited with code 0 \\(reload\\)`, 'g'), 1, { source: 'errors', timeout: 15000 });
    await waitFor(() => clients.every((client) => client.connects >= 2 && client.socket.connected) || undefined, 15000, 'every client to be back');
  } finally {
    disconnectAll(clients);
  }
});

// process.send in workers and the primary's relay, which @socket.io/cluster-adapter uses.
describe('with @socket.io/cluster-adapter', () => {
  test('a room broadcast from one worker reaches the clients on the other, and none sent after a reload is lost', async () => {
    const run = new AppRun(register('compat/socket-io-sticky.js'), { ...DRAIN, ADAPTER: 'cluster' });
    const { port, pids } = await run.listening(2);
    const clients = await connectAll(port, { reconnection: true });
    try {
      const servedBy = new Set(await Promise.all(clients.map((client) => client.whoami())));
      expect([...servedBy].sort()).toEqual([...pids].sort()); // clients on both workers
      const broadcasters = new Set<string>();
      for (let n = 1; n <= 6; n++) broadcasters.add(await get(port, '127.0.0.1', `/broadcast?n=${n}`));
      expect(broadcasters.size).toBeGreaterThanOrEqual(1);
      await waitFor(() => clients.every((client) => client.news.length >= 6) || undefined, 5000, 'every client to get 6 broadcasts');
      // Each exactly once. Not in order: a broadcast relayed from the other worker can arrive after a later one sent
      // by the client's own worker, as under node:cluster with this adapter.
      const sorted = (news: number[]) => [...news].sort((a, b) => a - b);
      expect(clients.map((client) => sorted(client.news))).toEqual(clients.map(() => [1, 2, 3, 4, 5, 6]));

      run.process.kill('SIGHUP');
      await run.waitForMatches(/reload done/g, 1, { source: 'errors', timeout: 20000 });
      await waitFor(() => clients.every((client) => client.connects >= 2 && client.socket.connected) || undefined, 15000, 'every client to be back');
      await Promise.all(clients.map((client) => client.whoami())); // each one's session is in place
      for (let n = 7; n <= 12; n++) await get(port, '127.0.0.1', `/broadcast?n=${n}`);
      await waitFor(() => clients.every((client) => client.news.length >= 12) || undefined, 5000, 'every client to get the 6 broadcasts after the reload');
      expect(clients.map((client) => sorted(client.news.slice(6)))).toEqual(clients.map(() => [7, 8, 9, 10, 11, 12]));
    } finally {
      disconnectAll(clients);
    }
  });
});
