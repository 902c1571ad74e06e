// The primary's liveness monitor: on one timer it reads every serving worker's heartbeat (shared memory) and
// resident memory (/proc), and says which worker is stuck and which has reached a recycle limit. It only
// reports: the slots kill a stuck worker, the recycler (recycle.ts) replaces one past a limit.
import { residentSetSize } from '../core/system';
import { monotonicMs } from '../protocol/liveness-record';
import { recycleDue, type RecycleLimit, type RecycleOptions } from './recycle';
import { heartbeatInterval } from './worker-launch';
import type { WorkerProcess } from './worker-process';

export interface LivenessHandlers {
  /** Its loop has not turned for `since` ms (more than heartbeatTimeout). */
  unresponsive(worker: WorkerProcess, since: number): void;
  /** Its liveness record holds what its loop cannot have written (an erased or future beat): it hides a stuck loop. */
  misbehaved(worker: WorkerProcess, problem: string): void;
  /** It reached `limit`; reported on every check until it is replaced. */
  recycle(worker: WorkerProcess, limit: RecycleLimit): void;
}

export class LivenessMonitor {
  private timer: NodeJS.Timeout | null = null;
  private lastCheck = 0;
  private readonly interval: number;

  constructor(
    private readonly heartbeatTimeout: number,
    private readonly recycle: Required<RecycleOptions>,
    /** The workers serving now (a reload's incoming worker and draining ones are not judged). */
    private readonly serving: () => WorkerProcess[],
    private readonly handlers: LivenessHandlers,
  ) {
    this.interval = heartbeatInterval(heartbeatTimeout);
  }

  /** Starts checking, if there is anything to check. */
  start(): void {
    const { maxRequests, maxMemory, maxAge } = this.recycle;
    if (this.timer || (this.heartbeatTimeout === 0 && maxRequests === 0 && maxMemory === 0 && maxAge === 0)) return;
    this.lastCheck = monotonicMs();
    this.timer = setInterval(() => this.check(), this.interval);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private check(): void {
    const now = monotonicMs();
    // The primary itself did not run for a while (SIGSTOP of the whole group, a suspended VM): its workers'
    // beats are old for the same reason. Give them one interval to beat again before judging.
    const primaryStalled = now - this.lastCheck > this.interval + this.heartbeatTimeout / 2;
    this.lastCheck = now;
    if (primaryStalled) return;
    for (const worker of this.serving()) {
      if (worker.record.state !== 'ready') continue; // readyTimeout bounds a start; stopping workers have their deadline
      const problem = this.heartbeatTimeout > 0 ? worker.liveness.beatProblem(now) : null;
      if (problem) {
        this.handlers.misbehaved(worker, `its liveness record holds ${problem}`);
        continue;
      }
      const { beatAt, served } = worker.liveness.read();
      const since = now - beatAt;
      if (this.heartbeatTimeout > 0 && beatAt > 0 && since > this.heartbeatTimeout) {
        this.handlers.unresponsive(worker, since);
        continue;
      }
      const rss = this.recycle.maxMemory > 0 ? residentSetSize(worker.record.pid) : null;
      const limit = recycleDue(this.recycle, worker.requestLimit, { served, rss, age: Date.now() - worker.record.startedAt.getTime() });
      if (limit) this.handlers.recycle(worker, limit);
    }
  }
}
