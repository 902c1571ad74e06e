// Test harness for supervisor tests: runs test/fixtures/app.js as a real primary, reads its events,
// drives real HTTP load at it, and makes sure no primary or worker outlives a test.
import child_process, { type ChildProcessWithoutNullStreams } from 'node:child_process';
import http from 'node:http';
import { fixture, isDead, stopSuccessors, waitFor } from './helpers';

export interface AppEvent {
  event: string;
  id?: number;
  pid?: number;
  generation?: number;
  state?: string;
  [field: string]: unknown;
}

const running = new Set<Primary>();

export class Primary {
  readonly process: ChildProcessWithoutNullStreams;
  readonly events: AppEvent[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: Array<() => void> = [];
  /** Every writer of our stdout closed: the primary, a successor a hot upgrade started, and all their workers. */
  private stdoutEnded = false;

  constructor(
    options: object,
    { behaviour = '', script = fixture('app.js'), nodeArgs = [] as string[], uid, env = {} }: { behaviour?: string; script?: string; nodeArgs?: string[]; uid?: number; env?: NodeJS.ProcessEnv } = {},
  ) {
    this.process = child_process.spawn(process.execPath, [...nodeArgs, script], {
      env: { ...process.env, TEST_OPTIONS: JSON.stringify(options), TEST_BEHAVIOUR: behaviour, ...env },
      uid,
    });
    running.add(this);
    this.process.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      this.stdout += chunk;
      const lines = this.stdout.split('\n');
      this.stdout = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith('EVENT ')) this.events.push(JSON.parse(line.slice(6)));
      this.notify();
    });
    this.process.stdout.once('end', () => {
      this.stdoutEnded = true;
      this.notify();
    });
    this.process.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      this.notify();
    });
    this.exited = new Promise((resolve) =>
      this.process.once('exit', (code, signal) => {
        resolve({ code, signal });
        this.notify();
      }),
    );
  }

  private notify(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /**
   * Resolves with the first event (from `after` on) that matches; fails on timeout, or when the primary exited and
   * nothing can print any more (a primary that hands over to a new one exits while the new one still prints here).
   */
  async waitFor(match: (event: AppEvent) => boolean, { after = 0, timeout = 15000 } = {}): Promise<AppEvent> {
    const deadline = Date.now() + timeout;
    for (;;) {
      const found = this.events.slice(after).find(match);
      if (found) return found;
      if ((this.process.exitCode !== null || this.process.signalCode !== null) && this.stdoutEnded) {
        throw new Error(`primary exited (${this.process.exitCode ?? this.process.signalCode}) before the event; stderr: ${this.stderr}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for an event; events: ${JSON.stringify(this.events)}; stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  waitForEvent(name: string, options?: { after?: number; timeout?: number }): Promise<AppEvent> {
    return this.waitFor((event) => event.event === name, options);
  }

  /** Every worker pid the primary ever forked. */
  get workerPids(): number[] {
    return this.events.filter((event) => event.event === 'fork').map((event) => event.pid as number);
  }

  async allReady(): Promise<{ port: number; workers: AppEvent[] }> {
    const ready = await this.waitForEvent('all-ready');
    const addresses = ready.addresses as Array<{ port: number }>;
    return { port: addresses[0]?.port, workers: ready.workers as AppEvent[] };
  }

  signal(signal: NodeJS.Signals): void {
    this.process.kill(signal);
  }

  /**
   * SIGTERM (or SIGKILL after 10 s), and the same to a new primary a hot upgrade left; then checks that no worker
   * either forked is still alive (they share this stdout, so their events are all here).
   */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    running.delete(this);
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 10000);
    const result = await this.exited;
    clearTimeout(timer);
    await stopSuccessors(this.stderr);
    await waitFor(() => this.workerPids.every(isDead), 2000, 'every worker to be gone').catch(() => {
      for (const pid of this.workerPids) if (!isDead(pid)) process.kill(pid, 'SIGKILL');
      throw new Error(`workers outlived their primary: ${this.workerPids.filter((pid) => !isDead(pid))}`);
    });
    return result;
  }
}

/** Stops every primary a test left running (use in afterEach). */
export async function stopAllPrimaries(): Promise<void> {
  await Promise.all([...running].map((primary) => primary.stop()));
}

export interface LoadResult {
  ok: number;
  failed: number;
  errors: string[];
  byPid: Map<string, number>;
}

/**
 * Real HTTP load on loopback, bounded: `concurrency` clients loop until `stop` resolves. keepAlive: each
 * client reuses one connection; otherwise a new connection (Connection: close) per request.
 */
export function load(port: number, { concurrency = 4, keepAlive = false, path = '/' }: { concurrency?: number; keepAlive?: boolean; path?: string }) {
  const result: LoadResult = { ok: 0, failed: 0, errors: [], byPid: new Map() };
  let stopping = false;
  const one = (agent: http.Agent | false) =>
    new Promise<void>((resolve) => {
      const request = http.get({ host: '127.0.0.1', port, path, agent, headers: keepAlive ? {} : { connection: 'close' } }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk) => (body += chunk));
        response.on('end', () => {
          if (response.statusCode === 200) {
            result.ok += 1;
            result.byPid.set(body, (result.byPid.get(body) ?? 0) + 1);
          } else {
            result.failed += 1;
            result.errors.push(`status ${response.statusCode}`);
          }
          resolve();
        });
        response.on('error', (error) => {
          result.failed += 1;
          result.errors.push(error.message);
          resolve();
        });
      });
      request.on('error', (error) => {
        result.failed += 1;
        result.errors.push(`${(error as NodeJS.ErrnoException).code ?? ''} ${error.message}`);
        resolve();
      });
      request.setTimeout(10000, () => request.destroy(new Error('timeout')));
    });
  const clients = Array.from({ length: concurrency }, async () => {
    const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
    while (!stopping) await one(agent);
    if (agent) agent.destroy();
  });
  return {
    result,
    /** Stops the clients and resolves with the totals once every request has settled. */
    async stop(): Promise<LoadResult> {
      stopping = true;
      await Promise.all(clients);
      return result;
    },
  };
}

/** Sequential connection-per-request GETs; resolves with how many each pid answered. */
export async function tally(port: number, count: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const body = await new Promise<string>((resolve, reject) =>
      http
        .get({ host: '127.0.0.1', port, agent: false, headers: { connection: 'close' } }, (response) => {
          let text = '';
          response.setEncoding('utf8').on('data', (chunk) => (text += chunk)).on('end', () => resolve(text));
        })
        .on('error', reject),
    );
    counts.set(body, (counts.get(body) ?? 0) + 1);
  }
  return counts;
}
