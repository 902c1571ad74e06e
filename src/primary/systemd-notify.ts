// sd_notify for the primary: when systemd (or another service manager) set NOTIFY_SOCKET, it is told when
// the service is ready, reloading and stopping, how the workers are, and, with WatchdogSec=, that the
// service is alive. Sent through the native core (Node has no datagram Unix sockets); a failed send is
// reported once and never stops the service.
import { native } from '../core/binding';
import { debug } from '../debug';

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
