// Which part the register preload plays in this process. It is inherited by everything the app starts (worker
// threads, forked and spawned node processes, through execArgv and NODE_OPTIONS), and must act only once.
import { readFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import { platformSupported } from '../core/binding';
import { processStatus } from '../core/system';
import { ENV_DESCENDANT_OF, ENV_WORKER_ID } from '../protocol/messages';
import { isWorker } from '../worker/context'; // not '../worker', which wires up the whole worker side

/**
 * - 'worker': a prefork worker's main thread: intercept listen().
 * - 'primary': the main thread of a process prefork did not start, and no worker is among its ancestors.
 * - 'plain': a worker thread, or a process a worker started (directly or not): plain Node.
 * - 'unsupported': Windows: the app runs as one plain process.
 */
export type RegisterRole = 'worker' | 'primary' | 'plain' | 'unsupported';

export function registerRole(): RegisterRole {
  if (!isMainThread) return 'plain';
  if (!platformSupported()) return 'unsupported';
  if (isWorker()) return 'worker';
  return startedUnderAWorker() ? 'plain' : 'primary';
}

/**
 * A worker marks its environment (ENV_DESCENDANT_OF) for what it starts. An app may start children with an
 * environment of its own, so on Linux the process tree is asked too: is any ancestor a prefork worker? A
 * process's /proc/PID/environ is the environment it was started with, so a worker's still names its slot.
 */
function startedUnderAWorker(): boolean {
  if (process.env[ENV_DESCENDANT_OF]) return true;
  if (process.platform !== 'linux') return false;
  for (let pid = process.ppid, hops = 0; pid > 1 && hops < 64; pid = parentOf(pid), hops++) {
    if (startedAsWorker(pid)) return true;
  }
  return false;
}

/** 0 when the process is gone or not ours to read: the walk stops there. */
function parentOf(pid: number): number {
  return processStatus(pid)?.ppid ?? 0;
}

function startedAsWorker(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').some((entry) => entry.startsWith(`${ENV_WORKER_ID}=`));
  } catch {
    return false; // another user's process (or gone)
  }
}
