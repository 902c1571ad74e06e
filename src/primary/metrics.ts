// The primary's Prometheus metrics: the supervisor's own (prefork_*), read from its tables, the workers'
// liveness records and the listen sockets, followed by the apps' prom-client metrics merged over all workers.
// What the tables do not keep (restarts, reloads, what exited workers served) is counted from the events.
import { native } from '../core/binding';
import { formatAddress } from '../protocol/address';
import { AppMetrics } from './app-metrics';
import type { SupervisorConfig } from './options';
import type { Slot, WorkerSlots } from './slots';
import type { Supervisor } from './supervisor';
import type { ExitReason, Worker, WorkerProcess, WorkerState } from './worker-process';

const STATES: WorkerState[] = ['starting', 'online', 'listening', 'ready', 'stopping'];
const RESTART_REASONS: ExitReason[] = ['crash', 'signal', 'unresponsive', 'recycle-requests', 'recycle-memory', 'recycle-age', 'reload', 'not-ready', 'protocol'];

/** One metric family in the text exposition format. */
function family(name: string, type: 'gauge' | 'counter', help: string, samples: Array<[labels: Record<string, string | number>, value: number]>): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const [labels, value] of samples) {
    const text = Object.entries(labels).map(([label, v]) => `${label}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');
    lines.push(`${name}${text ? `{${text}}` : ''} ${Number.isFinite(value) ? value : 0}`);
  }
  return `${lines.join('\n')}\n`;
}

export class SupervisorMetrics {
  private readonly restarts = new Map<ExitReason, number>(RESTART_REASONS.map((reason) => [reason, 0]));
  private reloads = 0;
  /** Every worker started and not exited yet, by the record the events carry. */
  private readonly running = new Map<Worker, WorkerProcess>();
  /** Requests served by the exited workers of each slot. */
  private readonly exitedRequests = new Map<number, number>();
  private readonly app: AppMetrics;
  /** The collection in flight, which scrapes arriving meanwhile share. */
  private collecting: Promise<string> | null = null;

  constructor(
    config: SupervisorConfig,
    private readonly slots: WorkerSlots,
  ) {
    this.app = new AppMetrics(config.script, config.metrics?.workerLabel ?? false);
  }

  /** Counts from the supervisor's events. Called in its constructor: these listeners come before any of its user's. */
  observe(supervisor: Supervisor): void {
    supervisor.on('fork', (worker) => this.started(worker));
    supervisor.on('exit', (worker) => this.exited(worker));
    supervisor.on('reload', () => (this.reloads += 1));
  }

  /** A worker started; one that replaces another is a restart, by why the other left. Its process is kept until it exits. */
  private started(worker: Worker): void {
    const { replaced } = worker;
    if (replaced) this.restarts.set(replaced, (this.restarts.get(replaced) ?? 0) + 1);
    const running = this.slots.processOf(worker);
    if (running) this.running.set(worker, running);
  }

  /** A worker exited, its last messages read: its served requests and its app counters are kept with its slot's totals. */
  private exited(record: Worker): void {
    const worker = this.running.get(record);
    if (!worker) return;
    this.running.delete(record);
    const { id } = record;
    this.exitedRequests.set(id, (this.exitedRequests.get(id) ?? 0) + worker.liveness.read().served);
    const others = this.slots.live().flatMap((other) => (other !== worker && other.lastMetrics ? [{ slot: other.record.id, metrics: other.lastMetrics }] : []));
    this.app.retire(id, worker.lastMetrics, others);
  }

  /**
   * The exposition text: prefork_* first, then the apps' metrics. A scrape that arrives while one is being collected
   * shares its answer: 25 at once asked every worker 25 times, and an app's collect() may be slow or costly.
   */
  render(): Promise<string> {
    this.collecting ??= this.collect().finally(() => {
      this.collecting = null;
    });
    return this.collecting;
  }

  private async collect(): Promise<string> {
    const live = this.slots.live();
    const serving = this.slots.list.flatMap((slot) => (slot.worker ? [slot.worker] : []));
    const [stats, appMetrics] = await Promise.all([
      Promise.all(serving.map((worker) => worker.askStats())),
      Promise.all(live.map(async (worker) => ({ worker, metrics: await worker.askMetrics() }))),
    ]);
    const text = [
      family('prefork_workers', 'gauge', 'Worker processes by state (draining ones are stopping).',
        STATES.map((state) => [{ state }, live.filter((worker) => worker.record.state === state).length])),
      family('prefork_restarts_total', 'counter', 'Workers started to replace another, by why the other left.',
        [...this.restarts].map(([reason, count]) => [{ reason }, count])),
      family('prefork_reloads_total', 'counter', 'Rolling reloads completed.', [[{}, this.reloads]]),
      family('prefork_worker_resident_memory_bytes', 'gauge', 'Resident memory of each serving worker.',
        stats.flatMap((worker) => (worker.rss === null ? [] : [[{ slot: worker.id }, worker.rss]]))),
      family('prefork_worker_heap_used_bytes', 'gauge', 'V8 heap used by each serving worker.',
        stats.flatMap((worker) => (worker.memory ? [[{ slot: worker.id }, worker.memory.heapUsed]] : []))),
      family('prefork_worker_event_loop_lag_seconds', 'gauge', "How late each serving worker's last heartbeat fired.",
        stats.map((worker) => [{ slot: worker.id }, worker.loopLag / 1000])),
      family('prefork_worker_open_connections', 'gauge', 'Open connections of each serving worker.',
        stats.flatMap((worker) => (worker.connections === null ? [] : [[{ slot: worker.id }, worker.connections]]))),
      family('prefork_listen_queue_length', 'gauge', 'Connections waiting in the accept queue of each slot and address (TCP_INFO).', this.listenQueues(0)),
      family('prefork_listen_queue_limit', 'gauge', 'The accept queue limit (backlog) of each slot and address.', this.listenQueues(1)),
      family('prefork_slot_requests_total', 'counter', 'Requests (connections, for a plain net.Server) served on each slot, by all its workers so far.',
        this.slots.list.map((slot) => [{ slot: slot.id }, this.slotRequests(slot)])),
      family('prefork_slot_steering_share', 'gauge', "The share of new connections the balance program gives each slot now (0: steered around; absent when the kernel's hash decides alone).",
        this.slots.list.flatMap((slot) => {
          const share = this.slots.steering?.share(slot.id) ?? null;
          return share === null ? [] : [[{ slot: slot.id }, share]];
        })),
    ].join('');
    // Workers that exited while we asked are in the kept totals now: only the ones still alive count as live.
    const stillLive = appMetrics.filter(({ worker, metrics }) => worker.record.state !== 'exited' && metrics !== null);
    // The prefork_* metrics answer whatever the apps' merge does: it is built from what workers say.
    try {
      return text + (await this.app.render(stillLive.map(({ worker, metrics }) => ({ slot: worker.record.id, metrics: metrics! }))));
    } catch (error) {
      process.stderr.write(`prefork: cannot merge the workers' prom-client metrics (${(error as Error).message}); serving prefork's own alone\n`);
      return text;
    }
  }

  /** Requests served on the slot by all its workers so far (its exited ones' kept with the slot). */
  slotRequests(slot: Slot): number {
    return (this.exitedRequests.get(slot.id) ?? 0) + (slot.worker?.liveness.read().served ?? 0) + (slot.incoming?.liveness.read().served ?? 0);
  }

  /** Each slot's sockets' accept queue length (field 0) or limit (field 1), by slot and address. */
  private listenQueues(field: 0 | 1): Array<[Record<string, string | number>, number]> {
    const samples: Array<[Record<string, string | number>, number]> = [];
    const seen = new Set<number>(); // shared mode: one socket serves every slot
    for (const slot of this.slots.list) {
      this.slots.sockets.socketsOf(slot.id).forEach((socket, index) => {
        if (seen.has(socket.fd)) return;
        seen.add(socket.fd);
        const { host, port } = this.slots.sockets.addresses[index];
        try {
          samples.push([{ slot: this.slots.sockets.mode === 'shared' ? 'shared' : slot.id, address: formatAddress(host, port) }, native.listenQueue(socket.fd)[field]]);
        } catch {
          // not on Linux, or not listening yet
        }
      });
    }
    return samples;
  }
}
