// The one loader of the native addon, and the private types of what it exports.
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { preforkError } from '../errors';

/** Poller.start() event bits. */
export const READABLE = 1;
export const WRITABLE = 2;

export interface NativePoller {
  start(events: number): void;
  stop(): void;
  ref(): void;
  unref(): void;
  close(): void;
}

export interface NativeSpawnRequest {
  file: string;
  args: string[];
  env: string[];
  cwd: string | undefined;
  fds: Array<[parentFd: number, childFd: number]>;
  uid: number;
  gid: number;
  /** The supplementary groups to set (root only); null: leave them (or, with uid/gid, just gid). */
  groups: number[] | null;
  cpus: number[];
  processGroup: boolean;
  deathSignal: number;
}

/** What native/binding.cc exports. Errors carry errno, code and syscall. */
export interface NativeBinding {
  /** `reusePort: false` makes a probe: it fails EADDRINUSE where any other socket is bound (TIME_WAIT aside). */
  createListenSocket(host: string, family: 4 | 6, port: number, ipv6Only: boolean, backlog: number, reusePort?: boolean): [fd: number, port: number];
  /** A user's primary gid and all its gids (initgroups); throws ENOENT for an unknown uid. */
  userGroups(uid: number): [gid: number, groups: number[]];
  spawn(request: NativeSpawnRequest): [pid: number, pidfd: number];
  waitPidfd(pidfd: number): [code: number, signal: number] | null;
  waitInThread(pid: number, callback: (code: number, signal: number) => void): void;
  socketPair(): [number, number];
  channelSend(fd: number, buffer: Buffer, offset: number, fds: number[]): number;
  /** Installs at most maxFds fds per read (0: the kernel drops every fd the peer sends); `truncated` says some were dropped. */
  channelRecv(fd: number, buffer: Buffer, maxFds: number): [bytes: number, fds: number[], truncated: boolean] | null;
  setCloexec(fd: number): void;
  dupCloexec(fd: number): number;
  /** Pid of the process that created the peer end of a Unix socket, or -errno. */
  peerPid(fd: number): number;
  /** A thread that SIGKILLs this process graceMs after the peer of the Unix socket fd is gone. */
  startOrphanWatchdog(fd: number, graceMs: number): void;
  /** A zero-filled shared memory region (memfd), as a CLOEXEC fd. */
  createSharedRegion(bytes: number): number;
  /** The region mapped MAP_SHARED, as an ArrayBuffer (unmapped when collected). */
  mapSharedRegion(fd: number, bytes: number): ArrayBuffer;
  /** What a socket is (for sockets systemd hands over): family 4, 6 or 0 (not IP), listening, its address. */
  inspectSocket(fd: number): { family: 0 | 4 | 6; stream: boolean; listening: boolean; reusePort: boolean; host: string; port: number; connected: boolean };
  /** A listening TCP socket's accept queue (TCP_INFO): connections waiting, and the backlog. Linux only. */
  listenQueue(fd: number): [length: number, limit: number];
  /** listen(2) on a bound socket: it joins its reuseport group now, after the current members. */
  startListening(fd: number, backlog: number): void;
  /** Sets the socket's reuseport group's classic BPF program: [code, jt, jf, k] per instruction. */
  attachReuseportProgram(fd: number, program: Uint32Array): void;
  /** Removes the group's program (Linux 5.8+): the kernel's hash again. */
  detachReuseportProgram(fd: number): void;
  /** One datagram to an AF_UNIX socket path ("@name": abstract): sd_notify. */
  notify(path: string, message: string): void;
  /** Reaps pid if it has exited: null while it runs. For PID 1's orphans, never for workers. */
  reapExited(pid: number): [code: number, signal: number] | null;
  Poller: new (fd: number, callback: (status: number, events: number) => void) => NativePoller;
  buildSystem: 'node-gyp' | 'cmake-js';
}

const packageRoot = resolve(__dirname, '..', '..');

function candidatePaths(): string[] {
  const paths = [join(packageRoot, 'build', 'Release', 'prefork.node'), join(packageRoot, 'build', 'Debug', 'prefork.node')];
  const prebuilds = join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
  const shipped = existsSync(prebuilds) ? readdirSync(prebuilds).filter((name) => name.endsWith('.node')) : [];
  paths.push(...(shipped.length > 0 ? shipped.map((name) => join(prebuilds, name)) : [join(prebuilds, '*.node')]));
  return paths;
}

/** Whether prefork can run here at all (it needs fork/exec and SO_REUSEPORT: Linux, macOS, the BSDs). */
export function platformSupported(platform: NodeJS.Platform = process.platform): boolean {
  return platform !== 'win32';
}

export function unsupportedPlatformError(): Error {
  return preforkError(
    'ERR_PREFORK_UNSUPPORTED_PLATFORM',
    `prefork does not run on ${process.platform}: it needs fork/exec and SO_REUSEPORT (Linux or macOS). Use node:cluster there.`,
  );
}

/** linux-x64 (glibc), darwin-arm64: what a prebuild is chosen by. */
function platformName(): string {
  const name = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux') return name;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return `${name} (${header?.glibcVersionRuntime ? `glibc ${header.glibcVersionRuntime}` : 'musl'})`;
}

function load(): NativeBinding {
  if (!platformSupported()) throw unsupportedPlatformError();
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require('node-gyp-build')(packageRoot) as NativeBinding;
  } catch (cause) {
    const tried = candidatePaths()
      .map((path) => `  ${path}${existsSync(path) ? '' : ' (missing)'}`)
      .join('\n');
    const error = preforkError(
      'ERR_PREFORK_NATIVE_LOAD',
      `prefork could not load its native addon for ${platformName()}, Node ${process.version}: ` +
        `${(cause as Error).message.split('\n')[0]}\n` +
        `Paths tried:\n${tried}\n` +
        'No prebuilt binary fits, and none was built. To build one from source (needs python3, make and a C++17 compiler):\n' +
        '  npm rebuild prefork\n' +
        'If install scripts were off, allow prefork\'s first: `npm install-scripts approve prefork` (npm 11), ' +
        '`pnpm approve-builds` (pnpm). In a clone of prefork: `npm run build:native` or `npm run build:cmake`.',
    );
    throw Object.assign(error, { cause });
  }
}

let loaded: NativeBinding | undefined;

/**
 * The addon, loaded at first use: importing prefork (for isWorker(), say) works everywhere, and where the
 * addon cannot load, the first call that needs it throws why.
 */
export const native = new Proxy({} as NativeBinding, {
  get: (_target, name) => (loaded ??= load())[name as keyof NativeBinding],
});
