// Facts about this machine the supervisor's defaults depend on: usable CPUs (cgroup-aware), users, groups.
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';

/** CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (a container's CPU limit). */
export function usableCpuCount(): number {
  const byAffinity = typeof availableParallelism === 'function' ? availableParallelism() : cpus().length;
  const limit = cgroupCpuLimit();
  return limit === null ? byAffinity : Math.max(1, Math.min(byAffinity, Math.ceil(limit)));
}

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** A cgroup path and its ancestors, deepest first: '/a/b' → ['/a/b', '/a', '']. */
function withAncestors(path: string): string[] {
  const parts = path.split('/').filter(Boolean);
  return parts.map((_, i) => `/${parts.slice(0, parts.length - i).join('/')}`).concat('');
}

/**
 * The CPUs this process's cgroup may use (quota / period), or null without a limit: cgroup v2's cpu.max, or
 * v1's cpu.cfs_quota_us and cpu.cfs_period_us, on the process's own cgroup and its ancestors (the tightest
 * wins). `read` returns a file's text or null (tests pass a fake file system).
 */
export function cgroupCpuLimit(read: (path: string) => string | null = readOrNull): number | null {
  const membership = read('/proc/self/cgroup') ?? '';
  const limits: number[] = [];
  const v2 = /^0::(.*)$/m.exec(membership)?.[1];
  if (v2 !== undefined) {
    for (const dir of withAncestors(v2)) {
      const [quota, period] = (read(`/sys/fs/cgroup${dir}/cpu.max`) ?? '').trim().split(/\s+/);
      if (quota && quota !== 'max' && Number(quota) > 0 && Number(period) > 0) limits.push(Number(quota) / Number(period));
    }
  }
  const v1 = /^\d+:([^:\n]*):(.*)$/gm;
  for (const [, controllers, path] of membership.matchAll(v1)) {
    if (!controllers.split(',').includes('cpu')) continue;
    // Where the cpu hierarchy is mounted, and which of its cgroups the mount shows as its root.
    for (const line of (read('/proc/self/mountinfo') ?? '').split('\n')) {
      const [before, after] = line.split(' - ');
      const [type, , options] = (after ?? '').split(' ');
      if (type !== 'cgroup' || !options?.split(',').includes('cpu')) continue;
      const [, , , root, mountPoint] = before.split(' ');
      const relative = root === '/' ? path : path.startsWith(root) ? path.slice(root.length) : null;
      if (relative === null) continue;
      for (const dir of withAncestors(relative)) {
        const quota = Number(read(`${mountPoint}${dir}/cpu.cfs_quota_us`));
        const period = Number(read(`${mountPoint}${dir}/cpu.cfs_period_us`));
        if (quota > 0 && period > 0) limits.push(quota / period);
      }
    }
  }
  return limits.length > 0 ? Math.min(...limits) : null;
}

/** CPU numbers in this process's affinity mask (Linux). */
export function allowedCpus(): number[] {
  const status = readFileSync('/proc/self/status', 'utf8');
  const list = /^Cpus_allowed_list:\s*(.+)$/m.exec(status)?.[1] ?? '';
  const numbers: number[] = [];
  for (const range of list.split(',')) {
    const [low, high = low] = range.split('-').map(Number);
    for (let cpu = low; cpu <= high; cpu++) numbers.push(cpu);
  }
  return numbers;
}

/** A passwd or group entry by name or number, through NSS (getent), or null when there is none. */
export function lookupAccount(database: 'passwd' | 'group', key: string | number): { id: number; groupId: number } | null {
  // Required here: only `user` and `group` need it, and node:child_process is a large load for every primary and worker.
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  let line: string;
  try {
    line = execFileSync('getent', [database, String(key)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return null; // getent exits 2 for an unknown key
  }
  const fields = line.split('\n')[0].split(':');
  const id = Number(fields[2]);
  return Number.isInteger(id) ? { id, groupId: Number(fields[3]) } : null;
}

/** net.ipv4.tcp_migrate_req: whether a closed listener's queue moves to its reuseport siblings (Linux 5.14+). */
export function tcpMigrateReq(): boolean | null {
  try {
    return readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').trim() === '1';
  } catch {
    return null;
  }
}

/** A process's state letter ('R', 'S', 'Z'…) and parent pid, from /proc/<pid>/stat; null when gone or unreadable. */
export function processStatus(pid: number | string): { name: string; state: string; ppid: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // the name in ( ) may hold spaces
    return { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), state, ppid: Number(ppid) };
  } catch {
    return null;
  }
}

/** A process's resident memory in bytes (VmRSS in /proc/<pid>/status: no cooperation needed), or null. */
export function residentSetSize(pid: number): number | null {
  try {
    const kilobytes = /^VmRSS:\s*(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kilobytes === undefined ? null : Number(kilobytes) * 1024;
  } catch {
    return null; // gone, or not Linux
  }
}
