// The apps' own prom-client metrics, gathered from every worker and merged the way prom-client's
// AggregatorRegistry merges node:cluster workers' (sum by default, or each metric's `aggregator`). Counters and
// histograms of workers that exited are kept, so a total never goes down when a worker is replaced; of series no
// live worker reports, only the most recently retired MAX_RETIRED_SAMPLES samples are (the primary is never recycled).
import { createRequire } from 'node:module';
import { MAX_METRICS_BYTES, MAX_RETIRED_SAMPLES, MAX_WARNED_METRIC_NAMES } from '../limits';

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

const sortedLabels = (labels: MetricValue['labels']) => JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
/** One sample: a counter's value, or one bucket, the sum or the count of a histogram. */
const labelKey = (value: MetricValue) => `${value.metricName ?? ''}|${sortedLabels(value.labels)}`;
/** One series: a metric and its labels, a histogram's buckets, sum and count together (they are kept or dropped as one). */
const seriesKey = (name: string, { labels: { le, ...labels } }: MetricValue) => `${name}|${sortedLabels(labels)}`;

/** The kept samples of one exited series, by labelKey. */
interface RetiredSeries {
  name: string;
  samples: Map<string, MetricValue>;
}

export class AppMetrics {
  /** Each exited counter's and histogram's name, help, type and aggregator, and how many of its series are kept. */
  private readonly retiredFamilies = new Map<string, { family: Omit<MetricJSON, 'values'>; series: number }>();
  /** Exited workers' series, summed, by seriesKey, the least recently retired first. */
  private readonly retiredSeries = new Map<string, RetiredSeries>();
  private retiredSamples = 0;
  private warnedRetiredDropped = false;
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

  /**
   * An exited worker's last metrics join the kept totals (gauges and summaries cannot be carried over). `live`: the
   * other workers' last answers. Past MAX_RETIRED_SAMPLES kept samples of series none of them reports, the least
   * recently retired of those are dropped (said once): a series a live worker reports keeps its total.
   */
  retire(slot: number, metrics: MetricJSON[] | null, live: Array<{ slot: number; metrics: MetricJSON[] }> = []): void {
    for (const metric of this.labelled(slot, metrics ?? [])) {
      if (metric.type !== 'counter' && metric.type !== 'histogram') continue;
      const { values, ...family } = metric;
      if (values.length === 0) continue;
      const kept = this.retiredFamilies.get(metric.name) ?? { family, series: 0 };
      if (kept.family.type !== metric.type) continue; // the same name with another type: not summable
      this.retiredFamilies.set(metric.name, kept);
      for (const value of values) {
        const key = seriesKey(metric.name, value);
        let series = this.retiredSeries.get(key);
        if (series) this.retiredSeries.delete(key); // re-inserted: now the most recently retired
        else {
          series = { name: metric.name, samples: new Map() };
          kept.series += 1;
        }
        this.retiredSeries.set(key, series);
        const sampleKey = labelKey(value);
        const sum = series.samples.get(sampleKey);
        if (!sum) this.retiredSamples += 1;
        series.samples.set(sampleKey, { ...value, value: (sum?.value ?? 0) + (value.value ?? 0) });
      }
    }
    this.dropRetired(live);
  }

  /** Drops the least recently retired series no live worker reports until those keep at most MAX_RETIRED_SAMPLES samples. */
  private dropRetired(live: Array<{ slot: number; metrics: MetricJSON[] }>): void {
    if (this.retiredSamples <= MAX_RETIRED_SAMPLES) return;
    const reported = new Set<string>();
    for (const { slot, metrics } of live) for (const metric of this.labelled(slot, metrics)) for (const value of metric.values) reported.add(seriesKey(metric.name, value));
    let unreported = 0;
    for (const [key, series] of this.retiredSeries) if (!reported.has(key)) unreported += series.samples.size;
    let dropped = 0;
    for (const [key, series] of this.retiredSeries) {
      if (unreported <= MAX_RETIRED_SAMPLES) break;
      if (reported.has(key)) continue;
      this.retiredSeries.delete(key);
      this.retiredSamples -= series.samples.size;
      unreported -= series.samples.size;
      dropped += 1;
      const family = this.retiredFamilies.get(series.name)!;
      if (--family.series === 0) this.retiredFamilies.delete(series.name);
    }
    if (dropped > 0 && !this.warnedRetiredDropped) {
      this.warnedRetiredDropped = true;
      process.stderr.write(`prefork: exited workers' counters and histograms hold more than ${MAX_RETIRED_SAMPLES} samples of series no live worker reports (a label value per worker lifetime?): dropping the least recently retired of them, ${dropped} series now and more later without a word\n`);
    }
  }

  /** The kept totals of exited workers, as metrics. */
  private retired(): MetricJSON[] {
    const values = new Map<string, MetricValue[]>();
    for (const { name, samples } of this.retiredSeries.values()) {
      const list = values.get(name);
      if (list) list.push(...samples.values());
      else values.set(name, [...samples.values()]);
    }
    return [...this.retiredFamilies.values()].map(({ family }) => ({ ...family, values: values.get(family.name) ?? [] }));
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
    add('exited workers', this.retired());
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
