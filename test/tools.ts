// Programs outside npm that some suites need: present, or the suite is skipped with one line naming what is
// missing, or (where CI asks for it with the tool's variable set to `required`) the suite runs and fails.
import child_process from 'node:child_process';

interface ExternalTool {
  /** Every command the suite runs. */
  commands: string[];
  /** Which suite needs it, for the skip line. */
  suite: string;
  /** How to get it. */
  install: string;
  /** `required` here makes a missing tool a failure instead of a skip (.ci/run sets it). */
  requiredBy: string;
}

export const EXTERNAL_TOOLS = {
  'redis-server': {
    commands: ['redis-server', 'redis-cli'],
    suite: 'the Redis recipe tests in test/rate-limit.test.ts',
    install: "Debian's redis-server package: apt-get install redis-server",
    requiredBy: 'PREFORK_TEST_REDIS',
  },
  wrk: {
    commands: ['wrk'],
    suite: 'the wrk load tests in test/recycle.test.ts, test/upgrade.test.ts and test/real-apps.test.ts (reloads)',
    install: "Debian's wrk package: apt-get install wrk",
    requiredBy: 'PREFORK_TEST_WRK',
  },
  python3: {
    commands: ['python3'],
    suite: 'the sd_notify tests in test/systemd.test.ts (a datagram socket Node cannot open)',
    install: "Debian's python3 package (node-gyp needs it to build prefork too)",
    requiredBy: 'PREFORK_TEST_PYTHON',
  },
} satisfies Record<string, ExternalTool>;

export type ToolName = keyof typeof EXTERNAL_TOOLS;

/** Whether `command` runs at all (a bounded `--version`, never a wait on a service; wrk's exits 1, which is fine). */
function runs(command: string): boolean {
  const probe = child_process.spawnSync(command, ['--version'], { stdio: 'ignore', timeout: 5000 });
  return probe.error === undefined && probe.signal === null;
}

/** The commands of `name` that are not on this machine ([] when it is all there). */
export function missingCommands(name: ToolName): string[] {
  return EXTERNAL_TOOLS[name].commands.filter((command) => !runs(command));
}

export function isRequired(name: ToolName): boolean {
  return process.env[EXTERNAL_TOOLS[name].requiredBy] === 'required';
}

/** Why a suite is skipped for lack of `name`, and how to get it. */
export function skipReason(name: ToolName, missing: string[]): string {
  const tool = EXTERNAL_TOOLS[name];
  return `${missing.join(' and ')} not found; install ${tool.install} (CI sets ${tool.requiredBy}=required)`;
}

/** Tests that run workers as another user need a root test process; elsewhere they are skipped, with the reason. */
export const IS_ROOT = process.getuid?.() === 0;
export const ROOT_SKIP_LINE = 'skipping the tests that run workers as another user (test/hardening.test.ts): they need root';

export function testAsRoot(name: string, fn: () => Promise<void>): void {
  if (IS_ROOT) test(name, fn);
  else test.skip(`${name} (skipped: needs root)`, fn);
}

/**
 * `describe` when the tool is there or required, else `describe.skip` with the reason in the title (the same
 * line jest's global setup prints once, see test/global-setup.ts).
 */
export function describeWithTool(name: ToolName, title: string, suite: () => void): void {
  const missing = missingCommands(name);
  if (missing.length === 0 || isRequired(name)) describe(title, suite);
  else describe.skip(`${title} (skipped: ${skipReason(name, missing)})`, suite);
}

/** `test` when the tool is there or required, else `test.skip` with the reason in the title, as describeWithTool. */
export function testWithTool(name: ToolName, title: string, fn: () => Promise<void>, timeout?: number): void {
  const missing = missingCommands(name);
  if (missing.length === 0 || isRequired(name)) test(title, fn, timeout);
  else test.skip(`${title} (skipped: ${skipReason(name, missing)})`, fn);
}

export interface WrkResult {
  requests: number;
  socketErrors: number;
  non2xx: number;
  output: string;
}

/**
 * wrk -t1 -c50 for `seconds` against 127.0.0.1:port with `headers`: its request and error counts. A request
 * slower than `timeout` seconds (wrk's default: 2) counts as a socket error.
 */
export function wrk(port: number, seconds: number, headers: string[], { timeout = 2 } = {}): Promise<WrkResult> {
  const args = ['-t1', '-c50', `-d${seconds}s`, `--timeout`, `${timeout}s`, ...headers.flatMap((header) => ['-H', header]), `http://127.0.0.1:${port}/`];
  return new Promise((resolve, reject) => {
    child_process.execFile('wrk', args, { timeout: (seconds + 20) * 1000 }, (error, output) => {
      if (error) return reject(error);
      const requests = Number(/(\d+) requests in/.exec(output)?.[1]);
      const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
      const socketErrors = errors ? errors.slice(1).reduce((sum, count) => sum + Number(count), 0) : 0;
      resolve({ requests, socketErrors, non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0), output });
    });
  });
}
