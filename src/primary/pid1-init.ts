// A hot upgrade when the primary is PID 1 (a container started without --init): the old primary stays as a thin init.
//
// When a PID namespace's PID 1 exits, the kernel SIGKILLs every other process in it. An upgrade ends with the old
// primary's exit, so as PID 1 it would kill the new primary it just handed over to. Instead, PID 1 drains its
// workers and lets go of every socket, the counter store and the metrics port as always, and then stays, doing only
// what an init does (tini's job):
//   - it forwards the primary's signals (TERM, INT, HUP, TTIN, TTOU, USR2) to the primary that serves now, from the
//     moment of the commit (a `docker stop` during its own drain reaches the new primary);
//   - it reaps every zombie child (orphans reparented to it, the primaries of later upgrades among them);
//   - it exits with the serving primary's exit status (a signal: 128 + its number) once that one is gone, so a
//     `docker stop` is: SIGTERM forwarded, the primary drains (shutdownTimeout, 10 s by default, Docker's own wait)
//     and exits 0, PID 1 exits 0.
// Later upgrades happen between its descendants (the primary serving now launches the next and exits), so PID 1
// learns which primary serves from a shared 4-byte word (a memfd) that every upgrade hands on: the primary that
// commits an upgrade writes its successor's pid there first. A primary's parent exits only after that write, so when
// PID 1 reaps a primary that is no longer the one named there, the named one is already reparented to it.
// The cost is one idle Node process (about 50 MB resident). Re-executing in place (HAProxy's way) would keep the pid
// without it, but then a new build that fails cannot be rolled back: its image would have replaced the old one's.
import { closeSync } from 'node:fs';
import { constants } from 'node:os';
import { native } from '../core/binding';
import type { ChildHandle } from '../core/spawn';
import { reapOrphans } from './orphan-reaper';
import { SIGNALS } from './signals';

const RECORD_BYTES = 4;

/** Whether a committed upgrade must leave this process running as the PID namespace's init. */
export function mustStayAsInit(): boolean {
  return process.pid === 1 && process.platform === 'linux';
}

/** The shared word that names the primary serving now; every primary of the chain holds the fd. */
export class ServingPrimaryRecord {
  private readonly word: Int32Array;

  private constructor(readonly fd: number) {
    this.word = new Int32Array(native.mapSharedRegion(fd, RECORD_BYTES));
  }

  /** PID 1 before its first upgrade. */
  static create(): ServingPrimaryRecord {
    return new ServingPrimaryRecord(native.createSharedRegion(RECORD_BYTES));
  }

  /** A primary started by an upgrade under such an init: the fd it was handed. */
  static adopt(fd: number): ServingPrimaryRecord {
    return new ServingPrimaryRecord(fd);
  }

  get pid(): number {
    return Atomics.load(this.word, 0);
  }

  set pid(pid: number) {
    Atomics.store(this.word, 0, pid);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** From the commit on (the supervisor's own handlers removed): the primary's signals go to the one serving now. */
export function forwardSignals(record: ServingPrimaryRecord): void {
  for (const signal of SIGNALS) {
    process.on(signal, () => {
      try {
        process.kill(record.pid, signal);
      } catch {
        // gone: its exit ends this init
      }
    });
  }
}

/**
 * After our own drain: stay as the init until the serving primary is gone, then exit with its status. `first` is the
 * primary we started (spawn()'s child, reaped through its handle); later ones are reaped here by pid.
 */
export function serveAsInit(record: ServingPrimaryRecord, first: ChildHandle): void {
  process.stderr.write(`prefork: staying as PID 1 (an init) for the new primary, pid ${record.pid}\n`);
  const keepAlive = setInterval(() => check(), 60_000); // signal handlers alone do not keep a process alive
  const exitAs = (code: number, signal: number) => {
    clearInterval(keepAlive);
    process.exit(signal ? 128 + signal : code);
  };
  const check = () => {
    const serving = record.pid;
    if (serving === first.pid && first.exitInfo) {
      const { code, signal } = first.exitInfo;
      return exitAs(code ?? 0, signal ? constants.signals[signal] : 0);
    }
    try {
      process.kill(serving, 0);
    } catch {
      // Gone without our seeing its status: it was not our child yet (its parent reaped it).
      process.stderr.write(`prefork: the serving primary (pid ${serving}) is gone\n`);
      exitAs(1, 0);
    }
  };
  reapOrphans((pid, code, signal) => {
    if (pid === record.pid) exitAs(code, signal);
  });
  void first.exited.then(check);
  process.on('SIGCHLD', check);
  check();
}
