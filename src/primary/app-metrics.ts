// The apps' own prom-client metrics, gathered from every worker and merged the way prom-client's
// AggregatorRegistry merges node:cluster workers' (sum by default, or each metric's `aggregator`). Counters and
// histograms of workers that exited are kept, so a total never goes down when a worker is replaced.
import { createRequire } from 'node:module';
import { MAX_METRICS_BYTES, MAX_WARNED_METRIC_NAMES } from '../limits';

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

/** Prometheus' metric names; label names are the same without colons, and `__` begins only its own. */
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary']);
/** prom-client's aggregators (metricAggregators.js); a metric without one is summed, as prom-client documents. */
const AGGREGATORS = new Set(['sum', 'first', 'min', 'max', 'average', 'omit']);
/** Names prom-client's registry (a plain object keyed by name) mistakes for a metric it already has. */
const PROTOTYPE_NAMES = new Set(Object.getOwnPropertyNames(Object.prototype));
/** The primary's own metrics; an app's metric of that name would make the exposition name one family twice. */
const RESERVED_PREFIX = 'prefork_';
/** The sample names a metric may use: its own, and a histogram's or summary's parts. */
const SAMPLE_SUFFIXES = ['', '_bucket', '_sum', '_count'];
const MAX_METRICS = 100_000;

/** A worker's answer: the metrics the primary can merge, and what it dropped and why (`"name" (why)`). */
export interface WorkerMetrics {
  metrics: MetricJSON[];
  dropped: Array<{ name: string; why: string }>;
}

/** Why the primary cannot take this metric (workers may run someone else's code), or the metric rebuilt from the fields it knows. */
function checkMetric(metric: unknown): { why: string } | { metric: MetricJSON } {
  if (typeof metric !== 'object' || metric === null || Array.isArray(metric)) return { why: 'not an object' };
  const { name, help, type, values, aggregator = 'sum' } = metric as Record<string, unknown>;
  if (typeof name !== 'string' || !NAME.test(name)) return { why: 'not a Prometheus metric name' };
  if (PROTOTYPE_NAMES.has(name)) return { why: 'named like an Object.prototype member, which prom-client cannot merge' };
  if (name.startsWith(RESERVED_PREFIX)) return { why: `the ${RESERVED_PREFIX}* names are the primary's own` };
  if (typeof help !== 'string' || !TYPES.has(type as string) || !Array.isArray(values)) return { why: 'malformed' };
  if (typeof aggregator !== 'string' || !AGGREGATORS.has(aggregator)) return { why: `an aggregator prom-client does not have (${JSON.stringify(aggregator)?.slice(0, 40)})` };
  const checked: MetricValue[] = [];
  for (const value of values as unknown[]) {
    const { value: number, labels, metricName } = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
    if ((typeof number !== 'number' && number !== null) || typeof labels !== 'object' || labels === null || Array.isArray(labels) ||
      !Object.entries(labels).every(([label, text]) => LABEL_NAME.test(label) && !label.startsWith('__') && (typeof text === 'string' || typeof text === 'number')) ||
      (metricName !== undefined && !SAMPLE_SUFFIXES.some((suffix) => metricName === name + suffix))) {
      return { why: 'a malformed value' };
    }
    checked.push({ value: number as number, labels: labels as MetricValue['labels'], ...(metricName === undefined ? {} : { metricName: metricName as string }) });
  }
  return { metric: { name, help, type: type as MetricJSON['type'], values: checked, aggregator } };
}

/**
 * A worker's metrics, checked field by field. A string (not JSON, not a list, too large) is a broken protocol; a
 * metric the primary cannot merge is dropped alone, so one bad metric costs neither the worker nor the endpoint.
 */
export function parseWorkerMetrics(json: string): WorkerMetrics | string {
  if (json.length > MAX_METRICS_BYTES) return `metrics larger than ${MAX_METRICS_BYTES} bytes`;
  let list: unknown;
  try {
    list = JSON.parse(json);
  } catch {
    return 'metrics that are not JSON';
  }
  if (!Array.isArray(list) || list.length > MAX_METRICS) return 'metrics that are not a list';
  const metrics: MetricJSON[] = [];
  const dropped: WorkerMetrics['dropped'] = [];
  const names = new Set<string>();
  for (const metric of list as unknown[]) {
    const checked = checkMetric(metric);
    const name = String((metric as { name?: unknown } | null)?.name).slice(0, 60);
    if ('why' in checked) dropped.push({ name, why: checked.why });
    else if (names.has(checked.metric.name)) dropped.push({ name, why: 'a second metric of that name' });
    else {
      names.add(checked.metric.name);
      metrics.push(checked.metric);
    }
  }
  return { metrics, dropped };
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
  /** Metric names a warning was written for. */
  private readonly warned = new Set<string>();
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

  /**
   * The merged exposition text of the live workers' metrics and the kept totals; '' without prom-client. Each name
   * is merged on its own: one that prom-client cannot merge is left out (said once), never the whole answer.
   */
  async render(live: Array<{ slot: number; metrics: MetricJSON[] }>): Promise<string> {
    const byName = new Map<string, Array<{ from: string; metric: MetricJSON }>>();
    const add = (from: string, metrics: MetricJSON[]) => {
      for (const metric of metrics) {
        const group = byName.get(metric.name);
        if (group) group.push({ from, metric });
        else byName.set(metric.name, [{ from, metric }]);
      }
    };
    for (const { slot, metrics } of live) add(`worker ${slot}`, this.labelled(slot, metrics));
    add('exited workers', [...this.retired.values()]);
    if (byName.size === 0) return '';
    if (this.promClient === undefined) this.promClient = loadPromClient(this.script);
    if (!this.promClient) {
      if (!this.warnedNoPromClient) process.stderr.write('prefork: workers report prom-client metrics, but the primary cannot load prom-client to merge them; leaving them out\n');
      this.warnedNoPromClient = true;
      return '';
    }
    const texts: string[] = [];
    for (const [name, group] of byName) {
      const { type } = group[0].metric;
      const others = group.filter(({ metric }) => metric.type !== type);
      if (others.length > 0) this.warnOnce(name, `prefork: metric "${name}" is a ${type} for ${group[0].from} but a ${others[0].metric.type} for ${others[0].from}; leaving out the ${others[0].metric.type}s\n`);
      try {
        const text = await this.promClient.AggregatorRegistry.aggregate([group.filter(({ metric }) => metric.type === type).map(({ metric }) => metric)]).metrics();
        if (text.trim() !== '') texts.push(text); // the 'omit' aggregator leaves nothing
      } catch (error) {
        this.warnOnce(name, `prefork: cannot merge metric "${name}" (from ${[...new Set(group.map(({ from }) => from))].join(', ')}): ${(error as Error).message}; leaving it out\n`);
      }
    }
    return texts.join('\n');
  }

  /** One line per metric name, however often it is scraped. */
  private warnOnce(name: string, line: string): void {
    if (this.warned.has(name) || this.warned.size >= MAX_WARNED_METRIC_NAMES) return;
    this.warned.add(name);
    process.stderr.write(line);
  }

  /** With `workerLabel`, every value gets worker="<slot>" (a replacement continues its slot's series). */
  private labelled(slot: number, metrics: MetricJSON[]): MetricJSON[] {
    if (!this.workerLabel) return metrics;
    return metrics.map((metric) => ({ ...metric, values: metric.values.map((value) => ({ ...value, labels: { ...value.labels, worker: String(slot) } })) }));
  }
}
