// spawn() and kill(): fork+exec through the core, and one exit notification per child.
import { EventEmitter } from 'node:events';
import { accessSync, closeSync, constants as fsConstants, fstatSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, join } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { native, READABLE } from './binding';
import { invalidType, invalidValue, outOfRange, preforkError } from '../errors';
import { checkBoolean, checkInteger, checkOptionNames, checkOptionsObject, checkSignal, checkString } from '../validate';
import { MAX_INT } from '../limits';

export interface SpawnOptions {
  /** Program to execute: a path, or a name looked up in PATH (the child's env PATH, else the parent's). Required. */
  file: string;
  /** The whole argv, argv[0] included (execve's convention). Required, at least one element. */
  args: string[];
  /** Environment of the child. Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** Working directory of the child. Default: the parent's. */
  cwd?: string;
  /** Child fd number → parent fd: the child gets exactly these (plus 0-2 when not mapped). Default {}. */
  fds?: Record<number, number>;
  /**
   * Run the child as this user id (needs root). Without `gid`, the user's primary group; without `groups`,
   * every group the user belongs to (initgroups, as nginx and gunicorn do). A uid with no entry in the user
   * database needs `gid`. Default: unchanged.
   */
  uid?: number;
  /** Run the child with this group id (needs root). Default: the user's primary group with `uid`, else unchanged. */
  gid?: number;
  /** Supplementary group ids of the child (needs root). Default: the user's groups with `uid`, else just `gid`. */
  groups?: number[];
  /** Pin the child to these CPU numbers (Linux). Default: inherit the parent's affinity. */
  cpus?: number[];
  /** Put the child in a new process group (so kill(-pid) reaches its descendants). Default false. */
  processGroup?: boolean;
  /** Signal the child gets when the parent dies (Linux PR_SET_PDEATHSIG); null for none. Default 'SIGKILL'. */
  deathSignal?: NodeJS.Signals | null;
}

export interface ExitInfo {
  /** Exit code, or null when a signal ended the child. */
  code: number | null;
  /** Name of the signal that ended the child, or null. */
  signal: NodeJS.Signals | null;
}

const OPTION_NAMES = ['file', 'args', 'env', 'cwd', 'fds', 'uid', 'gid', 'groups', 'cpus', 'processGroup', 'deathSignal'] as const;
const MAX_CHILD_FD = 1023;
const MAX_CPU = 1023; // CPU_SETSIZE - 1
const MAX_ID = 2 ** 32 - 2;

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, number]) => [number, name as NodeJS.Signals]),
);

/** Pids of the children spawn() started and has not reaped yet: theirs to reap, no one else's. */
const unreaped = new Set<number>();

/** Whether `pid` is a child of spawn()'s that its own pidfd or thread will reap. */
export function isUnreapedChild(pid: number): boolean {
  return unreaped.has(pid);
}

/** A child started by spawn(). Emits 'exit' (code, signal) once; `exited` resolves at the same time. */
export class ChildHandle extends EventEmitter {
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  /** null until the child has exited and been reaped. */
  exitInfo: ExitInfo | null = null;
  private resolveExited!: (info: ExitInfo) => void;

  constructor(pid: number, pidfd: number) {
    super();
    this.pid = pid;
    unreaped.add(pid);
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
    this.watch(pidfd);
  }

  /** Sends a signal (default SIGTERM). Returns false when the child has already exited. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    checkSignal('signal', signal);
    if (this.exitInfo !== null) return false;
    try {
      process.kill(this.pid, signal);
    } catch (error) {
      // Reaped by the waitpid thread, its exit not delivered yet: it is gone all the same.
      if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
      throw error;
    }
    return true;
  }

  private watch(pidfd: number): void {
    if (pidfd >= 0) {
      try {
        const poller = new native.Poller(pidfd, () => {
          let status: [number, number] | null;
          try {
            status = native.waitPidfd(pidfd);
          } catch {
            // waitid(P_PIDFD) needs Linux 5.4; pidfd_open came in 5.3. Wait in a thread instead.
            poller.close();
            closeSync(pidfd);
            native.waitInThread(this.pid, (code, signal) => this.onExit(code, signal));
            return;
          }
          if (status === null) return;
          poller.close();
          closeSync(pidfd);
          this.onExit(status[0], status[1]);
        });
        poller.start(READABLE);
        return;
      } catch {
        closeSync(pidfd); // cannot poll it: fall back to the thread
      }
    }
    native.waitInThread(this.pid, (code, signal) => this.onExit(code, signal));
  }

  private onExit(code: number, signal: number): void {
    unreaped.delete(this.pid);
    this.exitInfo = signal === 0 ? { code, signal: null } : { code: null, signal: signalNames.get(signal) ?? null };
    this.resolveExited(this.exitInfo);
    this.emit('exit', this.exitInfo.code, this.exitInfo.signal);
  }
}

/**
 * Starts a program with fork+execve from native code, with exactly the fds given. Throws at once when
 * the program cannot be executed (code 'ENOENT', 'EACCES'…), leaving no process behind.
 */
export function spawn(options: SpawnOptions): ChildHandle {
  if (!isMainThread) {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits: a worker_thread's children would die with it.
    throw preforkError('ERR_PREFORK_NOT_MAIN_THREAD', 'spawn() must be called on the main thread, not in a worker_thread');
  }
  checkOptionsObject('spawn()', options);
  checkOptionNames('spawn()', options, OPTION_NAMES);
  const file = checkString('file', options.file);
  if (!Array.isArray(options.args)) throw invalidType('args', 'an array of strings (argv, argv[0] included)', options.args);
  if (options.args.length === 0) throw invalidValue('args', 'must contain at least argv[0]', options.args);
  const args = options.args.map((arg, i) => checkString(`args[${i}]`, arg, { allowEmpty: true }));
  const env = environment(options.env === undefined ? process.env : options.env);
  const cwd = options.cwd === undefined ? undefined : checkString('cwd', options.cwd);
  const fds = fdMap(options.fds ?? {});
  const uid = options.uid === undefined ? -1 : checkInteger('uid', options.uid, 0, MAX_ID);
  let gid = options.gid === undefined ? -1 : checkInteger('gid', options.gid, 0, MAX_ID);
  let groups: number[] | null = null;
  if (options.groups !== undefined) {
    if (!Array.isArray(options.groups)) throw invalidType('groups', 'an array of group ids', options.groups);
    groups = options.groups.map((group, i) => checkInteger(`groups[${i}]`, group, 0, MAX_ID));
  }
  if (uid >= 0 && (gid < 0 || groups === null)) ({ gid, groups } = accountOf(uid, gid, groups));
  const cpus = cpuList(options.cpus);
  const processGroup = options.processGroup === undefined ? false : checkBoolean('processGroup', options.processGroup);
  const deathSignal =
    options.deathSignal === null ? 0 : checkSignal('deathSignal', options.deathSignal === undefined ? 'SIGKILL' : options.deathSignal);

  const pathEnv = (options.env ?? process.env).PATH ?? process.env.PATH ?? '';
  const [pid, pidfd] = native.spawn({
    file: lookupInPath(file, pathEnv),
    args,
    env,
    cwd,
    fds,
    uid,
    gid,
    groups,
    cpus,
    processGroup,
    deathSignal,
  });
  return new ChildHandle(pid, pidfd);
}

/** initgroups() for `uid`: its primary group unless `gid` is given, and its groups unless `groups` is. */
function accountOf(uid: number, gid: number, groups: number[] | null): { gid: number; groups: number[] } {
  let account: [number, number[]];
  try {
    account = native.userGroups(uid);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw cause;
    if (gid >= 0) return { gid, groups: groups ?? [gid] }; // no user entry: the group given, and only it
    throw invalidValue('gid', `is required: uid ${uid} has no entry in the user database, so it has no group of its own (it would keep root's)`, undefined);
  }
  const [primary, all] = account;
  return { gid: gid >= 0 ? gid : primary, groups: groups ?? all };
}

/** Sends a signal by name to any process, like process.kill() with the argument checks of this package. */
export function kill(pid: number, signal: NodeJS.Signals = 'SIGTERM'): void {
  checkInteger('pid', pid, 1, MAX_INT);
  checkSignal('signal', signal);
  process.kill(pid, signal);
}

function environment(env: unknown): string[] {
  if (typeof env !== 'object' || env === null || Array.isArray(env)) throw invalidType('env', 'an object', env);
  const entries: string[] = [];
  for (const key of Object.keys(env)) {
    const value = (env as Record<string, unknown>)[key];
    if (value === undefined) continue;
    const entry = `${key}=${String(value)}`;
    // One scan per entry on the hot path; the exact complaint is worked out only when there is one.
    if (key === '' || key.includes('=') || entry.includes('\0')) {
      checkString('env key', key);
      if (key.includes('=')) throw invalidValue('env key', 'must not contain "="', key);
      checkString(`env.${key}`, String(value), { allowEmpty: true });
    }
    entries.push(entry);
  }
  return entries;
}

function fdMap(fds: unknown): Array<[number, number]> {
  if (typeof fds !== 'object' || fds === null || Array.isArray(fds)) {
    throw invalidType('fds', 'an object mapping child fd numbers to parent fds', fds);
  }
  return Object.entries(fds).map(([childKey, parentFd]): [number, number] => {
    const childFd = Number(childKey);
    if (!/^\d+$/.test(childKey) || childFd > MAX_CHILD_FD) {
      throw outOfRange('fds', `keyed by child fd numbers from 0 to ${MAX_CHILD_FD}`, childKey);
    }
    checkInteger(`fds[${childKey}]`, parentFd, 0, MAX_INT);
    try {
      fstatSync(parentFd as number);
    } catch {
      throw invalidValue(`fds[${childKey}]`, 'must be an open file descriptor of this process', parentFd);
    }
    return [parentFd as number, childFd];
  });
}

function cpuList(cpus: unknown): number[] {
  if (cpus === undefined) return [];
  if (process.platform !== 'linux') throw invalidValue('cpus', `is not supported on ${process.platform}`, cpus);
  if (!Array.isArray(cpus) || cpus.length === 0) throw invalidType('cpus', 'a non-empty array of CPU numbers', cpus);
  return cpus.map((cpu, i) => checkInteger(`cpus[${i}]`, cpu, 0, MAX_CPU));
}

/** execve does not search PATH: a bare name is looked up here, before fork, as a shell would. */
function lookupInPath(file: string, pathEnv: string): string {
  if (file.includes('/')) return file;
  for (const dir of pathEnv.split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, file);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  const error = new Error(`execve ENOENT ${file} (not found in PATH)`);
  throw Object.assign(error, { errno: -osConstants.errno.ENOENT, code: 'ENOENT', syscall: 'execve', path: file });
}
