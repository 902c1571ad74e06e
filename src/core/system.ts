// Facts about this machine the supervisor's defaults depend on: usable CPUs (cgroup-aware), users, groups.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';

/** CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers' CPU limit). */
export function usableCpuCount(): number {
  const byAffinity = typeof availableParallelism === 'function' ? availableParallelism() : cpus().length;
  try {
    const [quota, period] = readFileSync('/sys/fs/cgroup/cpu.max', 'utf8').trim().split(/\s+/);
    if (quota !== 'max' && Number(period) > 0) return Math.max(1, Math.min(byAffinity, Math.ceil(Number(quota) / Number(period))));
  } catch {
    // no cgroup v2 CPU controller here: the affinity mask is the limit
  }
  return byAffinity;
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

/** A process's resident memory in bytes (VmRSS in /proc/<pid>/status: no cooperation needed), or null. */
export function residentSetSize(pid: number): number | null {
  try {
    const kilobytes = /^VmRSS:\s*(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kilobytes === undefined ? null : Number(kilobytes) * 1024;
  } catch {
    return null; // gone, or not Linux
  }
}
