// Under `npm start`, `npm run` and `npx`, the primary ends when npm does. npm forwards SIGTERM to the shell it ran
// the script with; the shell (dash) dies of it without passing it on, npm exits, and the primary would serve on
// with parent 1: no drain, and nothing left to stop it. So the primary follows npm's death as a graceful stop.
import { processStatus } from '../core/system';

/**
 * How often the primary checks that npm is still there (ms). Node has no event for another process's death
 * (pidfd_open is not in the native core, PR_SET_PDEATHSIG neither): four reads of /proc/self/stat a second, and
 * only under npm.
 */
const NPM_CHECK_INTERVAL_MS = 250;

/** The shells npm may run a script with (script-shell); one that forks instead of exec-ing the command sits between. */
const SHELLS = new Set(['sh', 'dash', 'bash', 'ash', 'zsh', 'busybox']);

/** npm titles itself "npm start", "npm run dev", "npm exec …" (npx): the name in /proc/PID/stat. */
const isNpm = (pid: number): boolean => /^np[mx]( |$)/.test(processStatus(pid)?.name ?? '');

/**
 * npm's pid and the chain from this process up to it: [our parent, its parent…]; null unless npm started us,
 * directly or through the script's shell. A login shell, systemd, docker's init or any other parent: null.
 */
function npmAncestry(): { npm: number; chain: Array<{ pid: number; ppid: number }> } | null {
  if (process.platform !== 'linux') return null;
  const parent = process.ppid;
  if (parent <= 1) return null;
  if (isNpm(parent)) return { npm: parent, chain: [{ pid: process.pid, ppid: parent }] };
  const grandparent = processStatus(parent)?.ppid ?? 0;
  if (grandparent <= 1 || !SHELLS.has(processStatus(parent)?.name ?? '') || !isNpm(grandparent)) return null;
  return { npm: grandparent, chain: [{ pid: process.pid, ppid: parent }, { pid: parent, ppid: grandparent }] };
}

/**
 * When npm started this process: calls `stop` once npm (or the shell between) is gone, with one line on stderr.
 * A parent's death shows as a new parent pid (orphans are re-parented), so a reused pid cannot fool it.
 * Returns the function that stops watching.
 */
export function followNpm(stop: () => void): () => void {
  const ancestry = npmAncestry();
  if (!ancestry) return () => {};
  const timer = setInterval(() => {
    if (ancestry.chain.every(({ pid, ppid }) => processStatus(pid)?.ppid === ppid)) return;
    clearInterval(timer);
    process.stderr.write(`prefork: npm (pid ${ancestry.npm}) exited; stopping gracefully\n`);
    stop();
  }, NPM_CHECK_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
