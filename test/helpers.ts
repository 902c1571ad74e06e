// Test helpers: real HTTP requests, /proc inspection for leaks and zombies, polling.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';

export const fixture = (name: string): string => join(__dirname, 'fixtures', name);

/** One HTTP GET on a fresh connection (Connection: close), from `localAddress` if given; resolves with the body. */
export function get(port: number, host = '127.0.0.1', path = '/', localAddress?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host, port, path, localAddress, agent: false, headers: { connection: 'close' } }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve(body));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.setTimeout(5000, () => request.destroy(new Error('request timed out')));
  });
}

export async function waitFor<T>(probe: () => T | undefined | false, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value as T;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** State letter of a process (R, S, Z…), or undefined when it no longer exists. */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** Gone, or a zombie that is no longer ours to reap: either way it runs no code. */
export const isDead = (pid: number): boolean => {
  const state = processState(pid);
  return state === undefined || state === 'Z' || state === 'X';
};

/**
 * A hot upgrade leaves a new primary that is not our child (its parent, the old primary, has exited): every one
 * that `stderr` reports starting is stopped (SIGTERM, SIGKILL after 15 s) with its workers, and must be gone.
 */
export async function stopSuccessors(stderr: string): Promise<void> {
  for (const [, pidText] of stderr.matchAll(/new primary pid (\d+) is starting/g)) {
    const pid = Number(pidText);
    if (isDead(pid)) continue;
    const group = [pid, ...childrenOf(pid).map((child) => child.pid)];
    process.kill(pid, 'SIGTERM');
    await waitFor(() => group.every(isDead), 15000, `the new primary ${pid} and its workers to exit`).catch((error: Error) => {
      for (const stray of group) if (!isDead(stray)) process.kill(stray, 'SIGKILL');
      throw error;
    });
  }
}

/** Children of this process, with their states (zombies included). */
export function childrenOf(parent = process.pid): Array<{ pid: number; state: string }> {
  const children: Array<{ pid: number; state: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === parent) children.push({ pid: Number(entry), state: fields[0] });
    } catch {
      // exited while we looked
    }
  }
  return children;
}

/** The live processes of a process group (zombies left out): a job's whole tree, wherever its members were re-parented. */
export function processGroup(group: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === group && fields[0] !== 'Z' && fields[0] !== 'X') members.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return members;
}

/** fd number → what it points to (socket:[inode], pipe:[…], a path), for a process. */
export function openFds(pid: number | 'self' = 'self'): Map<number, string> {
  const fds = new Map<number, string>();
  for (const entry of readdirSync(`/proc/${pid}/fd`)) {
    try {
      fds.set(Number(entry), readlinkSync(`/proc/${pid}/fd/${entry}`));
    } catch {
      // the fd of readdir itself, closed by now
    }
  }
  return fds;
}

/** Fails when this process holds sockets it did not hold at `before` (a leaked listen socket or channel). */
export function newSockets(before: Map<number, string>): string[] {
  const leaked: string[] = [];
  for (const [fd, target] of openFds()) {
    if (target.startsWith('socket:') && before.get(fd) !== target) leaked.push(`${fd} -> ${target}`);
  }
  return leaked;
}
