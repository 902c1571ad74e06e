// PID 1's duty (a container started without --init): processes orphaned anywhere below become our children,
// and their zombies are ours to reap. Only zombies that are not workers are reaped, by pid (never
// waitpid(-1)), so the workers' own reaping (pidfd) and libuv's children are undisturbed.
import { readdirSync, readFileSync } from 'node:fs';
import { native } from '../core/binding';
import { debug } from '../debug';

/** Our zombie children, from /proc: pid → state 'Z' and ppid = us. */
function zombieChildren(): number[] {
  const zombies: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state === 'Z' && Number(ppid) === process.pid) zombies.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return zombies;
}

/** On every SIGCHLD, reaps the zombie children `isWorker` does not claim. Returns the function that stops it. */
export function reapOrphans(isWorker: (pid: number) => boolean): () => void {
  const sweep = () => {
    for (const pid of zombieChildren()) {
      if (isWorker(pid)) continue;
      try {
        const status = native.reapExited(pid);
        if (status) debug('primary: reaped orphan %d (%s)', pid, status[1] ? `signal ${status[1]}` : `code ${status[0]}`);
      } catch {
        // reaped by its own parent's wait meanwhile
      }
    }
  };
  process.on('SIGCHLD', sweep);
  sweep();
  return () => process.off('SIGCHLD', sweep);
}
