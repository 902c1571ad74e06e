// The apps' own prom-client metrics, gathered from every worker and merged the way prom-client's
// AggregatorRegistry merges node:cluster workers' (sum by default, or each metric's `aggregator`). Counters and
// histograms of workers that exited are kept, so a total never goes down when a worker is replaced.
import { createRequire } from 'node:module';
import { MAX_METRICS_BYTES } from '../limits';

export interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** One metric as prom-client's getMetricsAsJSON() gives it. */
export interface MetricJSON {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary';
  values: MetricValue[];
  aggregator?: string;
}

interface PromClient {
  AggregatorRegistry: { aggregate(metrics: MetricJSON[][]): { metrics(): Promise<string> } };
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary']);
const AGGREGATORS = new Set(['sum', 'first', 'min', 'max', 'average', 'omit']);
const MAX_METRICS = 100_000;

/** A worker's metrics, checked field by field (workers may run someone else's code); a string says what is wrong. */
export function parseWorkerMetrics(json: string): MetricJSON[] | string {
  if (json.length > MAX_METRICS_BYTES) return `metrics larger than ${MAX_METRICS_BYTES} bytes`;
  let metrics: unknown;
  try {
    metrics = JSON.parse(json);
  } catch {
    return 'metrics that are not JSON';
  }
  if (!Array.isArray(metrics) || metrics.length > MAX_METRICS) return 'metrics that are not a list';
  for (const metric of metrics as Array<Record<string, unknown>>) {
    if (typeof metric !== 'object' || metric === null || typeof metric.name !== 'string' || !NAME.test(metric.name) ||
      typeof metric.help !== 'string' || !TYPES.has(metric.type as string) || !Array.isArray(metric.values) ||
      (metric.aggregator !== undefined && !AGGREGATORS.has(metric.aggregator as string))) {
      return `a malformed metric ${JSON.stringify((metric as { name?: unknown })?.name)?.slice(0, 60)}`;
    }
    for (const value of metric.values as Array<Record<string, unknown>>) {
      const labels = value?.labels;
      if (typeof value !== 'object' || value === null || (typeof value.value !== 'number' && value.value !== null) ||
        typeof labels !== 'object' || labels === null || Array.isArray(labels) ||
        !Object.entries(labels).every(([name, label]) => NAME.test(name) && (typeof label === 'string' || typeof label === 'number')) ||
        (value.metricName !== undefined && (typeof value.metricName !== 'string' || !NAME.test(value.metricName)))) {
        return `a malformed value of metric ${metric.name}`;
      }
    }
  }
  return metrics as MetricJSON[];
}

/** prom-client as the app sees it (resolved from its script), else prefork's own; null when there is none. */
function loadPromClient(script: string): PromClient | null {
  for (const from of [script, __filename]) {
    try {
      return createRequire(from)('prom-client') as PromClient;
    } catch {
      // not installed there
    }
  }
  return null;
}

const labelKey = (value: MetricValue) => `${value.metricName ?? ''}|${JSON.stringify(Object.entries(value.labels).sort(([a], [b]) => (a < b ? -1 : 1)))}`;

export class AppMetrics {
  /** Counters and histograms of exited workers, summed; they only grow. */
  private retired = new Map<string, MetricJSON>();
  private warnedNoPromClient = false;
  /** Loaded at the first merge, not at start: most apps report no metrics, and prom-client would add about 4 MB to the
   *  idle primary's RSS and 50 ms to its start. undefined: not tried yet. */
  private promClient: PromClient | null | undefined = undefined;

  /** `script`: the app's, from where prom-client is resolved as the app sees it. */
  constructor(
    private readonly script: string,
    private readonly workerLabel: boolean,
  ) {}

  /** An exited worker's last metrics join the kept totals (gauges and summaries cannot be carried over). */
  retire(slot: number, metrics: MetricJSON[] | null): void {
    for (const metric of this.labelled(slot, metrics ?? [])) {
      if (metric.type !== 'counter' && metric.type !== 'histogram') continue;
      const kept = this.retired.get(metric.name) ?? { ...metric, values: [] };
      if (kept.type !== metric.type) continue; // the same name with another type: not summable
      const byLabels = new Map(kept.values.map((value) => [labelKey(value), value]));
      for (const value of metric.values) {
        const key = labelKey(value);
        const sum = byLabels.get(key);
        byLabels.set(key, { ...value, value: (sum?.value ?? 0) + (value.value ?? 0) });
      }
      this.retired.set(metric.name, { ...kept, values: [...byLabels.values()] });
    }
  }

  /** The merged exposition text of the live workers' metrics and the kept totals; '' without prom-client. */
  async render(live: Array<{ slot: number; metrics: MetricJSON[] }>): Promise<string> {
    const lists = live.map(({ slot, metrics }) => this.labelled(slot, metrics));
    if (this.retired.size > 0) lists.push([...this.retired.values()]);
    if (lists.every((list) => list.length === 0)) return '';
    if (this.promClient === undefined) this.promClient = loadPromClient(this.script);
    if (!this.promClient) {
      if (!this.warnedNoPromClient) process.stderr.write('prefork: workers report prom-client metrics, but the primary cannot load prom-client to merge them; leaving them out\n');
      this.warnedNoPromClient = true;
      return '';
    }
    return this.promClient.AggregatorRegistry.aggregate(lists).metrics();
  }

  /** With `workerLabel`, every value gets worker="<slot>" (a replacement continues its slot's series). */
  private labelled(slot: number, metrics: MetricJSON[]): MetricJSON[] {
    if (!this.workerLabel) return metrics;
    return metrics.map((metric) => ({ ...metric, values: metric.values.map((value) => ({ ...value, labels: { ...value.labels, worker: String(slot) } })) }));
  }
}
