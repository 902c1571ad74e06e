// Hot upgrade of the primary (nginx's USR2), the whole dance: the old primary fork+execs a new one, as it was itself
// started, and hands it every socket and the counter store's region at fixed fds, described in PREFORK_HANDOVER.
// The two talk over a socketpair at fd 3 of the new one:
//   new → old  {type: 'upgrade-ready'}   every new worker is ready (the pid file already names the new primary)
//   old → new  {type: 'upgrade-commit'}  the old primary stepped aside (metrics port closed, MAINPID moved) and drains
//   old → new  {type: 'upgrade-released'} its workers have exited: no copy of the sockets is left but ours (then it closes)
// The old primary is the authority until the commit: if the new one exits or is not ready in time, the old one
// stops it and keeps serving (rollback). If the old one is gone before the commit, the new one takes over.
// "In time" is readyTimeout, and with readyTimeout 0 still at most UPGRADE_READY_BOUND_MS: reload, scale and
// recycling wait in the one queue behind an upgrade, so an upgrade's wait must end. A reload or scale asked for
// meanwhile ends it at once (the new primary is stopped), as it ends a reload's endless wait.
// As PID 1 the old primary does not exit after the commit: it stays as the namespace's init (pid1-init.ts).
import { closeSync } from 'node:fs';
import { native } from '../core/binding';
import { ControlChannel, createChannelPair } from '../core/channel';
import { spawn, type ChildHandle } from '../core/spawn';
import { preforkError } from '../errors';
import type { ResolvedAddress } from '../protocol/address';
import { ORPHAN_KILL_MS } from '../worker/context';
import { forwardSignals, mustStayAsInit, ServingPrimaryRecord, serveAsInit } from './pid1-init';
import { writePidFile } from './pid-file';
import type { Steering } from './steering';

export const ENV_HANDOVER = 'PREFORK_HANDOVER';
const CHANNEL_FD = 3;
const MAX_CHILD_FD = 1023;

export interface HandoverAddress extends ResolvedAddress {
  /** The one socket every slot shares (shared mode, or systemd's), or null. */
  shared: number | null;
  activated: boolean;
  /** Per-slot sockets, in the reuseport group's order when `steered`. */
  group: Array<{ slot: number; fd: number; retired: boolean }>;
}

/** What the new primary is handed; fds as numbered in the receiving process. */
export interface Handover {
  oldPid: number;
  channel: number;
  sockets: 'reuseport' | 'shared';
  /** Whether the old primary steered (listened on every socket itself, so `group` is the kernel's order). */
  steered: boolean;
  store: { fd: number; capacity: number } | null;
  addresses: HandoverAddress[];
  /** The word naming the serving primary, when PID 1 stays as an init (pid1-init.ts); else null. */
  init: number | null;
}

/** What the old primary hands over from its own state (launchSuccessor adds the rest). */
export type HandoverContents = Omit<Handover, 'channel' | 'oldPid' | 'init'>;

type UpgradeMessage = { type: 'upgrade-ready' } | { type: 'upgrade-commit' } | { type: 'upgrade-released' };

/** The old primary's side: the new primary process and the channel to it. */
interface Successor {
  child: ChildHandle;
  channel: ControlChannel;
}

/** Starts the new primary with the same Node, Node options and arguments as this one, and everything handed over. */
function launchSuccessor(handover: Omit<Handover, 'channel' | 'oldPid'>): Successor {
  if (!process.argv[1]) throw preforkError('ERR_PREFORK_UPGRADE_FAILED', 'this process was not started with a script to start again (node -e, a REPL)');
  const [ours, theirs] = createChannelPair();
  const fds: Record<number, number> = { [CHANNEL_FD]: theirs };
  let next = CHANNEL_FD + 1;
  const place = (fd: number): number => {
    if (next > MAX_CHILD_FD) throw preforkError('ERR_PREFORK_UPGRADE_FAILED', `Cannot upgrade: more than ${MAX_CHILD_FD - CHANNEL_FD} fds to hand over`);
    fds[next] = fd;
    return next++;
  };
  try {
    const described: Handover = {
      ...handover,
      oldPid: process.pid,
      channel: CHANNEL_FD,
      store: handover.store && { ...handover.store, fd: place(handover.store.fd) },
      init: handover.init === null ? null : place(handover.init),
      addresses: handover.addresses.map((address) => ({
        ...address,
        shared: address.shared === null ? null : place(address.shared),
        group: address.group.map((member) => ({ ...member, fd: place(member.fd) })),
      })),
    };
    const env: NodeJS.ProcessEnv = { ...process.env, [ENV_HANDOVER]: JSON.stringify(described) };
    delete env.WATCHDOG_PID; // systemd's watchdog will be the new main process's
    const child = spawn({
      file: process.execPath,
      args: [process.execPath, ...process.execArgv, ...process.argv.slice(1)],
      env,
      fds,
      deathSignal: null, // it outlives us
    });
    return { child, channel: new ControlChannel(ours) };
  } catch (error) {
    closeSync(ours);
    throw error;
  } finally {
    closeSync(theirs);
  }
}

/**
 * The new primary's side: what the old primary handed over (null when this process is no upgrade), its fds marked
 * close-on-exec and the variable removed, so that our workers and their children see neither.
 */
export function takeHandover(env: NodeJS.ProcessEnv = process.env): Handover | null {
  const text = env[ENV_HANDOVER];
  if (text === undefined) return null;
  delete env[ENV_HANDOVER];
  let handover: Handover;
  try {
    handover = JSON.parse(text) as Handover;
    if (handover === null || typeof handover !== 'object' || !Array.isArray(handover.addresses)) throw new Error('not a handover');
  } catch (cause) {
    throw Object.assign(preforkError('ERR_PREFORK_UPGRADE_FAILED', `${ENV_HANDOVER} is malformed: ${(cause as Error).message}`), { cause });
  }
  for (const fd of handoverFds(handover)) native.setCloexec(fd);
  return handover;
}

function handoverFds(handover: Handover): number[] {
  return [
    handover.channel,
    ...(handover.store ? [handover.store.fd] : []),
    ...(typeof handover.init === 'number' ? [handover.init] : []),
    ...handover.addresses.flatMap((address) => [...(address.shared === null ? [] : [address.shared]), ...address.group.map((member) => member.fd)]),
  ];
}

/** The new primary's link to the old one: tells it we are ready, learns when it stepped aside or is gone. */
class Predecessor {
  readonly pid: number;
  /** Resolves when the old primary and its workers have exited: its copies of the sockets are gone. */
  readonly gone: Promise<void>;
  private readonly channel: ControlChannel;
  private readonly commit: Promise<void>;

  constructor(handover: Handover) {
    this.pid = handover.oldPid;
    this.channel = new ControlChannel(handover.channel, { ref: false });
    let released = false;
    const closed = new Promise<void>((resolve) => this.channel.once('close', () => resolve()));
    // Closed without saying its workers are gone (it crashed, or was killed): they are orphans, gone in time.
    this.gone = closed.then(() => (released ? undefined : orphansGone()));
    this.commit = new Promise((resolve) => {
      this.channel.on('message', (message: UpgradeMessage | undefined, fds: number[]) => {
        for (const fd of fds) closeSync(fd);
        if (message?.type === 'upgrade-commit') resolve();
        if (message?.type === 'upgrade-released') released = true;
      });
      void closed.then(resolve);
    });
  }

  /** Every new worker is ready: the old primary may step aside. */
  ready(): void {
    if (!this.channel.closed) this.channel.send({ type: 'upgrade-ready' } satisfies UpgradeMessage);
  }

  /** Resolves when the old primary stepped aside, or is gone without a word (then we serve alone all the same). */
  committed(): Promise<void> {
    return this.commit;
  }

  close(): void {
    this.channel.close();
  }
}

/** What an 'upgrade' event tells: this primary handed over, the new one rolled back, or this one took over. */
export type UpgradeEvent =
  | { outcome: 'upgraded'; pid: number }
  | { outcome: 'rolled-back'; pid: number; error: Error }
  | { outcome: 'took-over'; pid: number; previousPid: number };

/** How long an upgrade waits for the new primary's readiness when readyTimeout is 0 (no limit for a worker's). */
export const UPGRADE_READY_BOUND_MS = 300_000;
/** After its primary's death, how much later than ORPHAN_KILL_MS an orphaned worker is surely gone (its exit itself). */
const ORPHAN_EXIT_MARGIN_MS = 1000;

/** What the dance needs of the supervisor. */
export interface UpgradeHost {
  readonly readyTimeout: number;
  readonly shutdownTimeout: number;
  readonly pidFile: string | null;
  /** Whether the process ends with the supervisor (exitProcess): only then may PID 1 stay as an init. */
  readonly exitProcess: boolean;
  readonly steering: Steering | null;
  /** Whether the supervisor is serving (an upgrade starts only then). */
  running(): boolean;
  /** Whether the supervisor is still starting (a new primary takes over only then). */
  starting(): boolean;
  notRunning(what: string): Error;
  /** Our sockets and store, as an upgrade hands them over. */
  contents(): HandoverContents;
  /** The new primary serves from now on: the metrics port and systemd's MAINPID are its own. */
  stepAside(pid: number): void;
  /** The supervisor's own signal handlers removed (PID 1 forwards the signals from the commit on). */
  stopHandlingSignals(): void;
  /** Taken over: the metrics port is ours now. */
  takeBack(): Promise<void>;
  emit(event: UpgradeEvent): void;
  shutdown(): void;
}

/** One supervisor's part in hot upgrades: as the old primary of each upgrade it starts, and as the new one of the upgrade that started it. */
export class HotUpgrade {
  /** The old primary, when this one was started by a hot upgrade and has not taken over yet. */
  private readonly predecessor: Predecessor | null = null;
  /** The new primary of an upgrade that took over: our exit must not touch what is now its own. */
  private successor: Successor | null = null;
  /** An upgrade asked for and not settled yet. */
  private running = false;
  /** Ends a wait on the other primary of an upgrade (its readiness, or its commit) when we shut down meanwhile. */
  private endWait: (() => void) | null = null;
  /** Ends the wait for the new primary's readiness when a reload or scale is asked for meanwhile. */
  private supersedeWait: (() => void) | null = null;
  /** Under a PID 1 that stays as an init: the word naming the serving primary (pid1-init.ts). */
  private record: ServingPrimaryRecord | null = null;

  constructor(private readonly host: UpgradeHost, handover: Handover | null) {
    if (!handover) return;
    if (typeof handover.init === 'number') this.record = ServingPrimaryRecord.adopt(handover.init);
    // Until the old primary is gone, it holds copies of these sockets; until it steps aside, it steers.
    this.predecessor = new Predecessor(handover);
    host.steering?.shareWithPeer(this.predecessor.gone, { blockJoins: false });
    host.steering?.setAuthority(false);
  }

  /** Started by an upgrade and not taken over yet: the pid file, the metrics port and systemd's READY wait for it. */
  get takingOver(): boolean {
    return this.predecessor !== null;
  }

  /** Handed over to a new primary: the service goes on under it. */
  get handedOver(): boolean {
    return this.successor !== null;
  }

  /** Whether our exit must not end the process: PID 1 stays as the init of the primary it handed over to. */
  get staysAsInit(): boolean {
    return this.successor !== null && this.record !== null && mustStayAsInit();
  }

  /** An upgrade, run by `enqueue` (the supervisor's one queue of operations); one at a time. */
  request(enqueue: (operation: () => Promise<{ pid: number }>) => Promise<{ pid: number }>): Promise<{ pid: number }> {
    if (this.running) {
      return Promise.reject(preforkError('ERR_PREFORK_UPGRADE_RUNNING', 'Cannot upgrade: an upgrade is already running; wait for its outcome (the \'upgrade\' event)'));
    }
    this.running = true;
    return enqueue(() => this.perform()).finally(() => (this.running = false));
  }

  /** A reload or scale was asked for: a wait for the new primary's readiness ends (it is rolled back). */
  supersede(): void {
    this.supersedeWait?.();
  }

  /** We are shutting down: a wait on the other primary ends. */
  interrupt(): void {
    this.endWait?.();
  }

  /** Our workers are gone: the other primary hears that no copies of the sockets are left but its own. */
  close(): void {
    const channel = this.successor?.channel;
    if (channel && !channel.closed) channel.send({ type: 'upgrade-released' } satisfies UpgradeMessage);
    channel?.close();
    this.predecessor?.close();
  }

  /** The supervisor's end: `exit` the process, or (PID 1 after an upgrade) stay as the init. */
  finish(exit: () => void): void {
    if (this.staysAsInit) serveAsInit(this.record!, this.successor!.child);
    else exit();
  }

  private async perform(): Promise<{ pid: number }> {
    if (!this.host.running()) throw this.host.notRunning('upgrade');
    const steering = this.host.steering;
    if (!this.record && this.host.exitProcess && mustStayAsInit()) this.record = ServingPrimaryRecord.create();
    let successor: Successor;
    try {
      successor = launchSuccessor({ ...this.host.contents(), init: this.record?.fd ?? null });
    } catch (cause) {
      throw Object.assign(preforkError('ERR_PREFORK_UPGRADE_FAILED', `Upgrade failed: cannot start a new primary: ${(cause as Error).message}; this one keeps serving`), { cause });
    }
    const { child, channel } = successor;
    process.stderr.write(`prefork: upgrading: new primary pid ${child.pid} is starting\n`);
    steering?.shareWithPeer(untilCopiesReleased(child), { blockJoins: true });
    const problem = await this.untilSuccessorReady(successor);
    if (problem === null) {
      this.commit(successor);
      return { pid: child.pid };
    }
    // Roll back: the new primary drains what its workers took and exits; ours never stopped serving.
    child.kill('SIGTERM');
    const kill = setTimeout(() => child.kill('SIGKILL'), this.host.shutdownTimeout + 1000);
    await child.exited;
    clearTimeout(kill);
    channel.close();
    if (this.host.pidFile && this.host.running()) writePidFile(this.host.pidFile); // it may have written its own
    const error = preforkError('ERR_PREFORK_UPGRADE_FAILED', `Upgrade failed: the new primary (pid ${child.pid}) ${problem}; the old one (pid ${process.pid}) keeps serving`);
    process.stderr.write(`prefork: ${error.message}\n`);
    this.host.emit({ outcome: 'rolled-back', pid: child.pid, error });
    throw error;
  }

  /** Step aside: the metrics port, MAINPID, the steering (and as PID 1 the signals) are the new primary's from now on. */
  private commit(successor: Successor): void {
    const { child, channel } = successor;
    this.successor = successor;
    this.host.steering?.handOver();
    this.host.stepAside(child.pid);
    if (this.record) this.record.pid = child.pid; // before the commit: PID 1 follows it from here
    if (this.staysAsInit) {
      this.host.stopHandlingSignals();
      forwardSignals(this.record!);
    }
    channel.send({ type: 'upgrade-commit' } satisfies UpgradeMessage);
    const then = this.staysAsInit ? 'stays as PID 1 (an init)' : 'exits';
    process.stderr.write(`prefork: upgraded: new primary pid ${child.pid} serves now; this one (pid ${process.pid}) drains and ${then}\n`);
    this.host.emit({ outcome: 'upgraded', pid: child.pid });
    this.host.shutdown();
  }

  /** null once the new primary says it is ready; else what went wrong first. */
  private untilSuccessorReady({ child, channel }: Successor): Promise<string | null> {
    const { readyTimeout } = this.host;
    let timer: NodeJS.Timeout | undefined;
    return new Promise<string | null>((resolve) => {
      timer = setTimeout(
        () => resolve(readyTimeout > 0
          ? `was not ready within readyTimeout (${readyTimeout} ms)`
          : `was not ready within ${UPGRADE_READY_BOUND_MS} ms (an upgrade's bound when readyTimeout is 0)`),
        readyTimeout > 0 ? readyTimeout : UPGRADE_READY_BOUND_MS,
      );
      this.endWait = () => resolve('was stopped: this primary is shutting down');
      this.supersedeWait = () => resolve('was superseded by a later reload or scale before it was ready');
      channel.on('message', (message: UpgradeMessage | undefined, fds: number[]) => {
        for (const fd of fds) closeSync(fd);
        resolve(message?.type === 'upgrade-ready' ? null : 'sent a message it should not have');
      });
      void child.exited.then(({ code, signal }) => resolve(`exited (${signal ? `signal ${signal}` : `code ${code}`}) before it was ready`));
    }).finally(() => {
      clearTimeout(timer);
      this.endWait = null;
      this.supersedeWait = null;
    });
  }

  /** Started by an upgrade, all our workers ready: take over from the old primary (unless we stopped meanwhile). */
  async takeOver(): Promise<void> {
    const predecessor = this.predecessor;
    if (!predecessor) return;
    if (this.host.pidFile) writePidFile(this.host.pidFile);
    predecessor.ready();
    await Promise.race([predecessor.committed(), new Promise<void>((resolve) => (this.endWait = resolve))]);
    this.endWait = null;
    if (!this.host.starting()) return;
    this.host.steering?.setAuthority(true);
    await this.host.takeBack();
    process.stderr.write(`prefork: took over from the old primary (pid ${predecessor.pid})\n`);
    this.host.emit({ outcome: 'took-over', pid: process.pid, previousPid: predecessor.pid });
  }
}

/**
 * The old primary's wait (Predecessor.gone is the new one's): resolves when no process holds the copies of our
 * sockets the new primary had, that is when it has exited and so have its workers. After a drain (exit code 0) they
 * exited before it. Else (a crash, our SIGKILL) they are orphans that drain by themselves, and each one's native
 * watchdog SIGKILLs it ORPHAN_KILL_MS after its primary's death at the latest. Until then a close of ours would not
 * take a socket out of its group, and a socket we opened would join behind theirs: the steering's mirror of each
 * group's order would drift from the kernel's.
 */
function untilCopiesReleased(child: ChildHandle): Promise<void> {
  return child.exited.then(({ code }) => (code === 0 ? undefined : orphansGone()));
}

/** Resolves when the orphaned workers of a primary that just died are surely gone (see untilCopiesReleased). */
function orphansGone(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ORPHAN_KILL_MS + ORPHAN_EXIT_MARGIN_MS));
}
