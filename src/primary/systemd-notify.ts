// sd_notify for the primary: when systemd (or another service manager) set NOTIFY_SOCKET, it is told when
// the service is ready, reloading and stopping, how the workers are, and, with WatchdogSec=, that the
// service is alive. Sent through the native core (Node has no datagram Unix sockets); a failed send is
// reported once and never stops the service. Most of it follows the supervisor's events (observe()).
import { native } from '../core/binding';
import { debug } from '../debug';
import { monotonicMs } from '../protocol/liveness-record';
import type { WorkerSlots } from './slots';
import type { Supervisor } from './supervisor';

/** The variables systemd sets for the main process; workers must not see them (they are not the main process). */
export const SYSTEMD_VARIABLES = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES'];

export class SystemdNotifier {
  private watchdogTimer: NodeJS.Timeout | null = null;
  private failed = false;

  private constructor(
    private readonly socket: string,
    /** Half of WATCHDOG_USEC, in ms; 0 when no watchdog is asked for. */
    private readonly watchdogInterval: number,
  ) {}

  /** A notifier when NOTIFY_SOCKET names a socket, else null. */
  static fromEnvironment(env: NodeJS.ProcessEnv = process.env): SystemdNotifier | null {
    const socket = env.NOTIFY_SOCKET;
    if (!socket || (!socket.startsWith('/') && !socket.startsWith('@'))) return null;
    const usec = Number(env.WATCHDOG_USEC);
    const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
    const interval = forUs && Number.isInteger(usec) && usec > 0 ? Math.max(1, Math.floor(usec / 2000)) : 0;
    return new SystemdNotifier(socket, interval);
  }

  /**
   * Follows the supervisor: READY=1 once all its first workers are ready, then the watchdog; RELOADING=1 when a
   * reload begins and READY=1 when it ends (done, or failed with the old workers serving); a new STATUS= line
   * when the workers change. The upgrade and the shutdown send MAINPID= and STOPPING=1 themselves.
   */
  observe(supervisor: Supervisor, slots: WorkerSlots, heartbeatTimeout: number): void {
    supervisor.ready().then(() => {
      if (supervisor.shuttingDown) return;
      this.ready(statusLine(slots));
      this.startWatchdog(() => heartbeatsHealthy(slots, heartbeatTimeout));
    }, () => {}); // a failed start is the supervisor's to report
    supervisor.on('reloading', () => this.reloading());
    for (const event of ['reload', 'reloadfailed'] as const) {
      supervisor.on(event, () => {
        if (!supervisor.shuttingDown) this.ready(statusLine(slots));
      });
    }
    for (const event of ['restart', 'unresponsive', 'recycle', 'scale', 'giveup'] as const) supervisor.on(event, () => this.status(statusLine(slots)));
  }

  /** All first workers are ready (also after a reload): READY=1, our pid, and a status line. */
  ready(status: string): void {
    this.send(`READY=1\nMAINPID=${process.pid}\nSTATUS=${status}`);
  }

  /** A reload begins (Type=notify-reload wants the monotonic time with it); ready() follows when it ends. */
  reloading(): void {
    this.send(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`);
  }

  /** A hot upgrade's new primary serves now: it becomes the service's main process. */
  mainPid(pid: number, status: string): void {
    this.stopWatchdog();
    this.send(`MAINPID=${pid}\nSTATUS=${status}`);
  }

  stopping(): void {
    this.stopWatchdog();
    this.send('STOPPING=1');
  }

  status(status: string): void {
    this.send(`STATUS=${status}`);
  }

  /** WATCHDOG=1 every half of WATCHDOG_USEC, from the primary's own loop, only while `healthy()` says so. */
  startWatchdog(healthy: () => boolean): void {
    if (this.watchdogInterval === 0 || this.watchdogTimer) return;
    this.watchdogTimer = setInterval(() => {
      if (healthy()) this.send('WATCHDOG=1');
      else debug('primary: not sending WATCHDOG=1: a worker is unresponsive');
    }, this.watchdogInterval);
    this.watchdogTimer.unref();
  }

  stopWatchdog(): void {
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    this.watchdogTimer = null;
  }

  private send(message: string): void {
    try {
      native.notify(this.socket, message);
      debug('primary: sd_notify %s', message.replace(/\n/g, ' '));
    } catch (error) {
      if (!this.failed) process.stderr.write(`prefork: cannot notify the service manager at NOTIFY_SOCKET=${this.socket}: ${(error as Error).message}\n`);
      this.failed = true;
    }
  }
}

/** systemd's STATUS= line. */
function statusLine(slots: WorkerSlots): string {
  const ready = slots.list.filter((slot) => slot.worker?.record.state === 'ready').length;
  const restarts = slots.list.reduce((sum, slot) => sum + slot.restarts, 0);
  return `${ready} of ${slots.list.length} workers ready, ${restarts} restarts`;
}

/**
 * Whether every serving worker's event loop beat within half of heartbeatTimeout (systemd's watchdog asks):
 * a worker that late is no longer healthy, though it is killed only at the full timeout.
 */
function heartbeatsHealthy(slots: WorkerSlots, heartbeatTimeout: number): boolean {
  const timeout = heartbeatTimeout / 2;
  if (timeout === 0) return true;
  return slots.list.every((slot) => {
    const worker = slot.worker;
    if (!worker || worker.record.state !== 'ready') return true;
    const { beatAt } = worker.liveness.read();
    return beatAt === 0 || monotonicMs() - beatAt <= timeout;
  });
}
