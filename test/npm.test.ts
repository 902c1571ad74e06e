// `npm start` and `npx prefork`: a SIGTERM or Ctrl-C to npm stops prefork gracefully, and nothing of npm's tree
// outlives it. npm forwards SIGTERM to the shell it ran the script with; dash dies of it without passing it on,
// so the primary follows npm's exit (src/primary/npm-parent.ts) instead of serving on with parent 1.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processStatus } from '../src/core/system';
import { app, AppRun, cli, root, stopAllApps } from './apps';
import { get, isDead, processGroup, waitFor } from './helpers';

const npmEnv = { npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false', npm_config_yes: 'true' };
let project: string;
const groups: number[] = [];

beforeAll(() => {
  // An app's project with prefork installed: the package (a link to this checkout) and its command in node_modules/.bin.
  project = mkdtempSync(join(tmpdir(), 'prefork-npm-'));
  mkdirSync(join(project, 'node_modules', '.bin'), { recursive: true });
  symlinkSync(root, join(project, 'node_modules', 'prefork'));
  // npm install makes lib/zero-code/cli.js executable and links it; a built checkout's is not: a script that execs it.
  writeFileSync(join(project, 'node_modules', '.bin', 'prefork'), `#!/bin/sh\nexec "${process.execPath}" "${cli}" "$@"\n`, { mode: 0o755 });
  const scripts = { start: `node -r prefork/register ${app('plain-http.js')}` };
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'prefork-npm-test', version: '1.0.0', private: true, scripts }));
});

afterEach(async () => {
  // A failed test may leave the tree behind (that is the bug): every process of each job is killed.
  for (const group of groups.splice(0)) if (processGroup(group).length > 0) process.kill(-group, 'SIGKILL');
  await stopAllApps();
});

afterAll(() => rmSync(project, { recursive: true, force: true }));

/** npm (or npx) with `args` in the project, leading its own process group as a terminal's foreground job does. */
function npm(file: 'npm' | 'npx', args: string[]): AppRun {
  const run = new AppRun(args, npmEnv, { file, cwd: project, group: true });
  groups.push(run.process.pid!);
  return run;
}

/** The serving tree: the port, the worker pids and the primary's pid. */
async function serving(run: AppRun): Promise<{ port: number; pids: number[]; primary: number }> {
  const { port, pids } = await run.listening(2);
  const [[, primary]] = await run.waitForMatches(/primary pid (\d+)$/gm, 1, { source: 'errors' });
  return { port, pids, primary: Number(primary) };
}

/**
 * `stop` while a slow request is in flight: it is answered, both workers exit 0 as in a shutdown, and within 15 s
 * no process of the job remains (npm, its shell, the primary, the workers).
 */
async function expectGracefulStop(run: AppRun, stop: () => void): Promise<void> {
  const { port, pids, primary } = await serving(run);
  const slow = get(port, '127.0.0.1', '/slow/1500');
  await new Promise((resolve) => setTimeout(resolve, 300));
  stop();
  expect(await slow).toMatch(/^\d+$/);
  for (const pid of pids) {
    await waitFor(() => new RegExp(`worker \\d \\(pid ${pid}\\) exited with code 0 \\(shutdown\\)`).test(run.errors), 15000, `worker ${pid} to exit 0; stderr: ${run.errors}`);
  }
  await waitFor(() => processGroup(run.process.pid!).length === 0, 15000, 'every process of the job to exit');
  expect([primary, ...pids].every(isDead)).toBe(true);
}

test('npm start (node -r prefork/register app.js): SIGTERM to npm alone drains and stops the primary and its workers', async () => {
  const run = npm('npm', ['start']);
  await expectGracefulStop(run, () => run.process.kill('SIGTERM'));
  expect(run.errors).toMatch(/prefork: npm \(pid \d+\) exited; stopping gracefully/);
});

test('npx prefork app.js: SIGTERM to npx alone drains and stops the primary and its workers', async () => {
  const run = npm('npx', ['prefork', app('plain-http.js')]);
  await expectGracefulStop(run, () => run.process.kill('SIGTERM'));
});

test('npm start: Ctrl-C (SIGINT to the foreground job, as a terminal sends it) stops everything gracefully', async () => {
  const run = npm('npm', ['start']);
  await expectGracefulStop(run, () => run.signalGroup('SIGINT'));
});

test('npm start: SIGINT to npm alone orphans nothing (its shell waits for the primary), and a SIGTERM after it still drains', async () => {
  const run = npm('npm', ['start']);
  const { primary, port } = await serving(run);
  const parent = processStatus(primary)?.ppid;
  run.process.kill('SIGINT');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  // npm forwards SIGINT to its shell only. dash holds it until its child exits, so the job serves on, whole,
  // under npm; a shell that execs the command instead passes it to the primary, which stops.
  if (processGroup(run.process.pid!).length > 0) {
    expect(isDead(run.process.pid!)).toBe(false);
    expect(processStatus(primary)?.ppid).toBe(parent);
    expect(await get(port)).toMatch(/^\d+$/);
    await expectGracefulStop(run, () => run.process.kill('SIGTERM'));
  } else {
    expect(run.errors).toMatch(/exited with code 0 \(shutdown\)/);
  }
});

test('a shell that is not npm\'s (sh -c "… &", as nohup from a login shell): its exit does not stop prefork', async () => {
  const run = new AppRun(['-c', `"${process.execPath}" -r prefork/register ${app('plain-http.js')} & wait`], {}, { file: 'sh', group: true });
  groups.push(run.process.pid!);
  const { port, primary } = await serving(run);
  run.process.kill('SIGTERM');
  await run.exited;
  await new Promise((resolve) => setTimeout(resolve, 1000)); // several of the primary's checks
  expect(processStatus(primary)?.ppid).not.toBe(run.process.pid);
  expect(await get(port)).toMatch(/^\d+$/);
  expect(run.errors).not.toContain('stopping gracefully');
  process.kill(primary, 'SIGTERM');
  await waitFor(() => processGroup(run.process.pid!).length === 0, 15000, 'the primary and its workers to exit');
});
