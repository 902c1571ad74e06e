// A refused listen is never silent: the primary says which worker could not listen where and why (in use,
// permission denied, not allowed), once per address however often the worker restarts, even when the app
// swallows the error as express 5's listen callback does.
import net from 'node:net';
import { app, AppRun, stopAllApps } from './apps';
import { testAsRoot } from './tools';

afterEach(stopAllApps);

/** The primary's refusal lines, each checked against a worker the primary reported by the same pid. */
function refusals(run: AppRun): string[] {
  const lines = run.matches(/^prefork: worker (\d+) \(pid (\d+)\) could not listen on (.*)$/gm, 'errors');
  for (const [, id, pid] of lines) expect(run.errors).toContain(`worker ${id} (pid ${pid}) exited with`);
  return lines.map((line) => line[0]);
}

/** A port some other process holds (dual-stack, as a Node server listens by default). */
async function heldPort(): Promise<{ port: number; release: () => void }> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, resolve));
  return { port: (holder.address() as net.AddressInfo).port, release: () => holder.close() };
}

test('express 5 on a port another process holds: EADDRINUSE is logged, though the app prints "listening" and its worker exits 0', async () => {
  const held = await heldPort();
  try {
    const run = new AppRun(['-r', 'prefork/register', app('express-listen-callback.js')], { PORT: String(held.port) });
    expect(await run.exited).toEqual({ code: 1, signal: null }); // the start fails: a worker exited before it was ready
    expect(run.output).toContain(`listening on ${held.port}`);
    const lines = refusals(run);
    expect(lines).toHaveLength(1); // both workers asked: once per address
    expect(lines[0]).toMatch(new RegExp(`could not listen on :${held.port}: address in use \\(EADDRINUSE\\)$`));
    await run.stop();
  } finally {
    held.release();
  }
});

test('a refused second port is logged once, not again for each reload or restart of the workers that ask for it', async () => {
  const held = await heldPort();
  try {
    // The app serves on port 0 and swallows the refusal of its second port: its workers are ready and stay up.
    const run = new AppRun(['-r', 'prefork/register', app('express-listen-callback.js')], { PORT: '0', SECOND_PORT: String(held.port) });
    await run.waitForMatches(/^prefork: 2 workers ready/gm, 1, { source: 'errors' });
    run.process.kill('SIGHUP');
    const [[, reloaded]] = await run.waitForMatches(/^prefork: reload done: pids (\d+)/gm, 1, { source: 'errors' });
    process.kill(Number(reloaded), 'SIGKILL');
    await run.waitForMatches(/^prefork: worker \d restarted as pid \d+/gm, 1, { source: 'errors' });
    // 5 workers so far (2, 2 more by the reload, 1 restart), each refused on the second port.
    await run.waitForMatches(new RegExp(`^listening on ${held.port}$`, 'gm'), 5);
    const lines = refusals(run);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`could not listen on :${held.port}: address in use \\(EADDRINUSE\\)$`));
    expect(await run.stop()).toEqual({ code: 0, signal: null });
  } finally {
    held.release();
  }
});

test('an address the operator did not allow (maxRequestedAddresses 0) is logged with the reason', async () => {
  const run = new AppRun(['-r', 'prefork/register', app('compat/listen-error.js')], { PORT: '0', PREFORK_MAX_REQUESTED_ADDRESSES: '0' });
  expect(await run.exited).toEqual({ code: 1, signal: null });
  const lines = refusals(run);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/could not listen on 127\.0\.0\.1:0: not allowed: workers asked for more than 0 addresses \(maxRequestedAddresses\) \(ERR_PREFORK_ADDRESS_NOT_ALLOWED\)$/);
  await run.stop();
});

testAsRoot('a primary without the privilege for port 80 logs EACCES (run as nobody)', async () => {
  const node = [process.execPath, '-r', 'prefork/register', app('compat/listen-error.js')];
  const run = new AppRun(['--reuid=nobody', '--regid=nogroup', '--clear-groups', ...node], { PORT: '80' }, { file: 'setpriv' });
  expect(await run.exited).toEqual({ code: 1, signal: null });
  const lines = refusals(run);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/could not listen on 127\.0\.0\.1:80: permission denied \(EACCES\)$/);
  await run.stop();
});
