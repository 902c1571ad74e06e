// The examples run as their targets run them: express.js and fastify.js under `-r prefork/register`; the
// Dockerfile parsed (no Docker engine here) and its CMD run in examples/ with its ENV; the systemd unit parsed
// and its ExecStart run with a NOTIFY_SOCKET the test owns, reloaded by its own ExecReload command.
import child_process, { type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cleanUp, dockerfileProblems, parseDockerfile, parseUnit, root, ServerRun, splitCommand, testEnvironment, unitProblems,
  unitRunEnvironment, unitValue,
} from './doc-runner';
import { childrenOf, fixture, waitFor } from './helpers';
import { describeWithTool } from './tools';

const examples = join(root, 'examples');
const read = (name: string) => readFileSync(join(examples, name), 'utf8');

afterEach(cleanUp);

for (const name of ['express.js', 'fastify.js']) {
  test(`examples/${name}, unchanged, is served by 2 workers under -r prefork/register; SIGTERM stops it with exit 0 and nothing left`, async () => {
    const run = new ServerRun(['node', '-r', 'prefork/register', `examples/${name}`], { cwd: root, env: testEnvironment([read(name)]) });
    const { workers } = await run.serves();
    expect(workers.length).toBeGreaterThanOrEqual(2);
    expect(await run.stop()).toEqual({ code: 0, signal: null });
  }, 60000);
}

describe('examples/Dockerfile', () => {
  const dockerfile = parseDockerfile(read('Dockerfile'));

  test('FROM a maintained Node line, CMD runs node in exec form, and a stop timeout above the drain is documented', () => {
    expect(dockerfileProblems(dockerfile)).toEqual([]);
  });

  test('its CMD, run in examples/ with its ENV (PORT 0 here), is served by 2 workers; SIGTERM (docker stop) ends it with 0 and nothing left', async () => {
    const run = new ServerRun(dockerfile.cmd!, { cwd: examples, env: { ...dockerfile.env, ...testEnvironment([]) } });
    await run.serves();
    expect(await run.stop()).toEqual({ code: 0, signal: null });
  }, 60000);
});

describe('examples/prefork.service', () => {
  const unit = parseUnit(read('prefork.service'));

  test('Type=notify with ExecReload (or notify-reload), KillMode=mixed, TimeoutStopSec above the drain', () => {
    expect(unitProblems(unit)).toEqual([]);
    expect(unitValue(unit, 'KillMode')).toBe('mixed');
  });

  describeWithTool('python3', 'its ExecStart under a fake systemd', () => {
    const receivers: ChildProcessWithoutNullStreams[] = [];
    let scratch = '';
    beforeEach(() => (scratch = mkdtempSync(join(tmpdir(), 'prefork-unit-'))));
    // Waits for each receiver's exit, so no zombie outlives the test: a suite that runs next in this jest worker
    // and checks its children synchronously saw one (store.test.ts, in a CI run on Node 26).
    afterEach(async () => {
      await Promise.all(
        receivers.splice(0).map((receiver) =>
          receiver.exitCode !== null || receiver.signalCode !== null
            ? undefined
            : new Promise((resolve) => receiver.once('exit', resolve).kill('SIGKILL')),
        ),
      );
      rmSync(scratch, { recursive: true, force: true });
      expect(childrenOf()).toEqual([]);
    });

    /** A datagram socket at `path` standing in for systemd's, collecting each notification. */
    async function notifySocket(path: string): Promise<string[]> {
      const receiver = child_process.spawn('python3', [fixture('notify-receiver.py'), path]);
      receivers.push(receiver);
      const messages: string[] = [];
      let bound = false;
      let buffered = '';
      receiver.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        const lines = (buffered + chunk).split('\n');
        buffered = lines.pop()!;
        for (const line of lines) {
          if (line === 'READY') bound = true;
          else messages.push(JSON.parse(line) as string);
        }
      });
      await waitFor(() => bound, 5000, 'the notify socket to be bound');
      return messages;
    }
    const sent = (messages: string[], field: string, from = 0) => messages.findIndex((message, i) => i >= from && message.split('\n').includes(field));

    const asRoot = process.getuid?.() === 0;
    test(`READY=1 with MAINPID once 2 workers serve${asRoot ? ' as PREFORK_USER' : ' (not root: without PREFORK_USER)'}; its ExecReload reloads (RELOADING=1, READY=1); SIGTERM stops it (STOPPING=1, exit 0, nothing left)`, async () => {
      const path = join(scratch, 'notify');
      const messages = await notifySocket(path);
      const { env } = unitRunEnvironment(unit, scratch);
      // WorkingDirectory (/srv/app) is examples/ here; the watchdog is shortened so that its pings show.
      const run = new ServerRun(splitCommand(unitValue(unit, 'ExecStart')!).argv, { cwd: examples, env: { ...env, NOTIFY_SOCKET: path, WATCHDOG_USEC: '200000' } });
      const { workers } = await run.serves();
      await waitFor(() => sent(messages, 'READY=1') >= 0, 5000, 'READY=1');
      expect(messages[sent(messages, 'READY=1')].split('\n')).toContain(`MAINPID=${run.pid}`);
      if (asRoot && env.PREFORK_USER) {
        const uid = Number(child_process.execFileSync('id', ['-u', env.PREFORK_USER], { encoding: 'utf8' }));
        for (const pid of workers) expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${uid}\\s`, 'm'));
      }
      await waitFor(() => messages.includes('WATCHDOG=1'), 3000, 'a watchdog ping');

      const { argv } = splitCommand(unitValue(unit, 'ExecReload')!.replace('$MAINPID', String(run.pid)));
      const before = messages.length;
      child_process.execFileSync(argv[0], argv.slice(1));
      await waitFor(() => sent(messages, 'RELOADING=1', before) >= 0, 5000, 'RELOADING=1');
      await waitFor(() => sent(messages, 'READY=1', sent(messages, 'RELOADING=1', before)) >= 0, 15000, 'READY=1 after the reload');
      await run.serves();

      expect(await run.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      await waitFor(() => messages.includes('STOPPING=1'), 2000, 'STOPPING=1');
      if (env.PREFORK_PID_FILE) expect(existsSync(env.PREFORK_PID_FILE)).toBe(false);
    }, 60000);
  });
});
