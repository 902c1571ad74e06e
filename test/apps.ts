// Test harness for the zero-code mode: runs an unmodified app (test/fixtures/apps) under
// `node -r prefork/register`, `--import` or the prefork command, and reads what its workers print.
import child_process, { type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDead, stopSuccessors, waitFor } from './helpers';

export const root = join(__dirname, '..');
export const app = (name: string): string => join(__dirname, 'fixtures', 'apps', name);
export const cli = join(root, 'lib', 'zero-code', 'cli.js');

const running = new Set<AppRun>();

export class AppRun {
  readonly process: ChildProcessWithoutNullStreams;
  readonly scratch = mkdtempSync(join(tmpdir(), 'prefork-app-'));
  readonly sideEffectFile = join(this.scratch, 'side-effect');
  output = '';
  errors = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /**
   * `args` follow the node binary, e.g. ['-r', 'prefork/register', app('express.js')] or [cli, '--workers', '2', …].
   * `file` runs something else first (a shell that execs node); `fds` are passed on from fd 3 (socket activation);
   * `group`: the primary leads a process group of its own, as a shell's foreground job (see signalGroup());
   * `cwd`: where it runs (default: this package, so `prefork/register` resolves to it).
   */
  constructor(
    args: string[],
    env: NodeJS.ProcessEnv = {},
    { file = process.execPath, fds = [], group = false, cwd = root }: { file?: string; fds?: number[]; group?: boolean; cwd?: string } = {},
  ) {
    this.process = child_process.spawn(file, args, {
      cwd,
      env: { ...process.env, PREFORK_WORKERS: '2', SIDE_EFFECT_FILE: this.sideEffectFile, SOCKET_DIR: this.scratch, ...env },
      stdio: ['pipe', 'pipe', 'pipe', ...fds],
      detached: group,
    }) as ChildProcessWithoutNullStreams;
    chmodSync(this.scratch, 0o777); // workers may run as another user (PREFORK_USER)
    running.add(this);
    this.process.stdout.setEncoding('utf8').on('data', (chunk: string) => (this.output += chunk));
    this.process.stderr.setEncoding('utf8').on('data', (chunk: string) => (this.errors += chunk));
    // A program that cannot start emits 'error' and never 'exit': the run then counts as ended, with the reason.
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code, signal) => resolve({ code, signal }));
      this.process.once('error', (error) => {
        this.errors += `spawn failed: ${error.message}\n`;
        resolve({ code: -1, signal: null });
      });
    });
  }

  /** Every match of `pattern` (with the g flag) in stdout (or in stderr, where prefork's primary logs) so far. */
  matches(pattern: RegExp, source: 'output' | 'errors' = 'output'): RegExpMatchArray[] {
    return [...this[source].matchAll(pattern)];
  }

  /** Waits until `count` lines match; fails early with the app's stderr when it exits. */
  async waitForMatches(pattern: RegExp, count: number, { source = 'output', timeout = 15000 }: { source?: 'output' | 'errors'; timeout?: number } = {}): Promise<RegExpMatchArray[]> {
    const deadline = Date.now() + timeout;
    for (;;) {
      const found = this.matches(pattern, source);
      if (found.length >= count) return found;
      if (this.process.exitCode !== null || this.process.signalCode !== null) {
        throw new Error(`exited (${this.process.exitCode ?? this.process.signalCode}) before ${count} × ${pattern}; output: ${this.output}; stderr: ${this.errors}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} × ${pattern}; output: ${this.output}; stderr: ${this.errors}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  /** Waits for `workers` LISTENING lines; returns the shared port and the worker pids. */
  async listening(workers = 2): Promise<{ port: number; pids: number[] }> {
    const lines = await this.waitForMatches(/^LISTENING (\d+) (\d+) (\S+)$/gm, workers);
    return { port: Number(lines[0][1]), pids: lines.map((line) => Number(line[2])) };
  }

  /** `signal` to the primary's whole process group, as Ctrl-C, systemd's KillMode=control-group or `tini -g` send it. */
  signalGroup(signal: NodeJS.Signals): void {
    process.kill(-this.process.pid!, signal);
  }

  /** Pids whose top-level code ran (the side-effect file). */
  sideEffectPids(): number[] {
    try {
      return readFileSync(this.sideEffectFile, 'utf8').trim().split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** SIGTERM (SIGKILL after 10 s); then every process that ran app code must be gone. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 10000);
    const result = await this.exited;
    clearTimeout(timer);
    running.delete(this);
    await stopSuccessors(this.errors);
    const pids = this.sideEffectPids();
    await waitFor(() => pids.every(isDead), 2000, 'the app workers to be gone').catch(() => {
      for (const pid of pids) if (!isDead(pid)) process.kill(pid, 'SIGKILL');
      throw new Error(`workers outlived their primary: ${pids.filter((pid) => !isDead(pid))}`);
    });
    rmSync(this.scratch, { recursive: true, force: true });
    return result;
  }
}

export async function stopAllApps(): Promise<void> {
  await Promise.all([...running].map((run) => run.stop()));
}
