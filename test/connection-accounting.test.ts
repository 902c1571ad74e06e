// A worker's connection accounting without per-connection work: its servers live in the worker's context, so the
// copy of prefork that answers the primary (a global CLI's) counts and drains a server the app's own copy adopted.
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { supervise, type Supervisor } from '../src';
import { childrenOf, fixture, waitFor } from './helpers';

const ROOT = join(__dirname, '..');
let copy = '';
let supervisor: Supervisor | null = null;
const sockets: net.Socket[] = [];

beforeAll(() => {
  // A second copy of the built package, with its own file of the native addon (as another install would have).
  copy = mkdtempSync(join(tmpdir(), 'prefork-copy-'));
  cpSync(join(ROOT, 'lib'), join(copy, 'lib'), { recursive: true });
  copyFileSync(join(ROOT, 'package.json'), join(copy, 'package.json'));
  // The addon this checkout loads (a build, or a prebuild), at the same place in the copy.
  const addon = relative(ROOT, (require('node-gyp-build') as { path: (dir: string) => string }).path(ROOT));
  mkdirSync(dirname(join(copy, addon)), { recursive: true });
  copyFileSync(join(ROOT, addon), join(copy, addon));
  symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules')); // its dependencies (node-gyp-build)
});

afterAll(() => rmSync(copy, { recursive: true, force: true }));

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await supervisor?.shutdown({ timeout: 1000 });
  supervisor = null;
  await waitFor(() => childrenOf().length === 0 || undefined, 3000, 'no child left').catch(() => {});
  expect(childrenOf()).toEqual([]);
});

function startTwoCopies(): Supervisor {
  supervisor = supervise({
    script: fixture('apps/second-copy.js'), args: [], execArgv: [], workers: 2, listen: '127.0.0.1:0', signals: false, exitProcess: false,
    env: { TEST_FIRST_COPY: join(ROOT, 'lib'), TEST_APP_COPY: join(copy, 'lib') },
  });
  return supervisor;
}

test("stats() counts the open connections of a server the app's own copy of prefork adopted", async () => {
  await startTwoCopies().ready();
  const { port } = supervisor!.addresses[0];
  for (let i = 0; i < 3; i++) {
    const socket = net.connect(port, '127.0.0.1');
    sockets.push(socket);
    await new Promise((resolve) => socket.once('connect', resolve));
  }
  // The worker sees a connection once its loop turns: ask until it counts all three, for 3 s at most.
  let open = 0;
  for (const deadline = Date.now() + 3000; open !== 3 && Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
    const { workers } = await supervisor!.stats();
    open = workers.reduce((total, worker) => total + (worker.connections ?? 0), 0);
  }
  expect(open).toBe(3);
});

test("a shutdown lets an in-flight request on such a server finish, with `Connection: close`", async () => {
  await startTwoCopies().ready();
  const { port } = supervisor!.addresses[0];
  const agent = new http.Agent({ keepAlive: true });
  const response = new Promise<{ status?: number; connection?: string; body: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/?wait=400', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, connection: res.headers.connection, body }));
    }).on('error', reject);
  });
  await new Promise((resolve) => setTimeout(resolve, 100)); // the request is in the worker's handler
  const stopped = supervisor!.shutdown({ timeout: 3000 });
  supervisor = null;
  await expect(response).resolves.toMatchObject({ status: 200, connection: 'close', body: expect.stringMatching(/^\d+$/) });
  await stopped;
  agent.destroy();
});
