// PID 1's duty (a container started without --init): processes orphaned anywhere below become our children,
// and their zombies are ours to reap. Only zombies that spawn() did not start are reaped, each by its pid (never
// waitpid(-1)), so the workers' own reaping (pidfd) is undisturbed. A primary that starts children through
// node:child_process must not use this (libuv reaps those by pid too): register mode and the command do not.
import { readdirSync } from 'node:fs';
import { native } from '../core/binding';
import { isUnreapedChild } from '../core/spawn';
import { processStatus } from '../core/system';
import { debug } from '../debug';

/** Our zombie children, from /proc: state 'Z' and ppid = us. */
function zombieChildren(): number[] {
  return readdirSync('/proc').filter((entry) => {
    if (!/^\d+$/.test(entry)) return false;
    const status = processStatus(entry);
    return status?.state === 'Z' && status.ppid === process.pid;
  }).map(Number);
}

/**
 * On every SIGCHLD, reaps the zombie children that are not spawn()'s; `reaped` hears of each (PID 1's init learns
 * so how its current primary ended). Returns the function that stops it.
 */
export function reapOrphans(reaped: (pid: number, code: number, signal: number) => void = () => {}): () => void {
  const sweep = () => {
    for (const pid of zombieChildren()) {
      if (isUnreapedChild(pid)) continue;
      try {
        const status = native.reapExited(pid);
        if (!status) continue;
        debug('primary: reaped orphan %d (%s)', pid, status[1] ? `signal ${status[1]}` : `code ${status[0]}`);
        reaped(pid, status[0], status[1]);
      } catch {
        // reaped by its own parent's wait meanwhile
      }
    }
  };
  process.on('SIGCHLD', sweep);
  sweep();
  return () => process.off('SIGCHLD', sweep);
}
