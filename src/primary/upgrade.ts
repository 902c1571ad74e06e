// Hot upgrade of the primary (nginx's USR2): the old primary fork+execs a new one, as it was itself started, and
// hands it every socket and the counter store's region at fixed fds, described in PREFORK_HANDOVER. The two talk
// over a socketpair at fd 3 of the new one:
//   new → old  {type: 'upgrade-ready'}   every new worker is ready (the pid file already names the new primary)
//   old → new  {type: 'upgrade-commit'}  the old primary stepped aside (metrics port closed, MAINPID moved) and drains
// The old primary is the authority until the commit: if the new one exits or is not ready within readyTimeout,
// the old one stops it and keeps serving. If the old one is gone before the commit, the new one takes over.
import { closeSync } from 'node:fs';
import { native } from '../core/binding';
import { ControlChannel, createChannelPair } from '../core/channel';
import { spawn, type ChildHandle } from '../core/spawn';
import { preforkError } from '../errors';
import type { ResolvedAddress } from './socket-table';

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
}

export type UpgradeMessage = { type: 'upgrade-ready' } | { type: 'upgrade-commit' };

/** The old primary's side: the new primary process and the channel to it. */
export interface Successor {
  child: ChildHandle;
  channel: ControlChannel;
}

/** Starts the new primary with the same Node, Node options and arguments as this one, and everything handed over. */
export function launchSuccessor(handover: Omit<Handover, 'channel' | 'oldPid'>): Successor {
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
    ...handover.addresses.flatMap((address) => [...(address.shared === null ? [] : [address.shared]), ...address.group.map((member) => member.fd)]),
  ];
}

/** The new primary's link to the old one: tells it we are ready, learns when it stepped aside or is gone. */
export class Predecessor {
  readonly pid: number;
  /** Resolves when the old primary has exited (its end of the channel closed): its copies of the sockets are gone. */
  readonly gone: Promise<void>;
  private readonly channel: ControlChannel;
  private readonly commit: Promise<void>;

  constructor(handover: Handover) {
    this.pid = handover.oldPid;
    this.channel = new ControlChannel(handover.channel, { ref: false });
    this.gone = new Promise((resolve) => this.channel.once('close', () => resolve()));
    this.commit = new Promise((resolve) => {
      this.channel.on('message', (message: UpgradeMessage | undefined, fds: number[]) => {
        for (const fd of fds) closeSync(fd);
        if (message?.type === 'upgrade-commit') resolve();
      });
      void this.gone.then(resolve);
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
