// Metrics: the primary's Prometheus endpoint with the supervisor's prefork_* metrics and the apps' own
// prom-client metrics merged over workers (real prom-client, an unchanged app under register mode), totals
// that survive a reload and a kill -9, valid exposition text, and bad input.
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { supervise, type Supervisor, type Worker } from '../src';
import { childrenOf, fixture, get, isDead, waitFor } from './helpers';

const REGISTER = join(__dirname, '..', 'lib', 'zero-code', 'register.js');
let supervisor: Supervisor | null = null;

afterEach(async () => {
  await supervisor?.shutdown({ timeout: 1000 });
  supervisor = null;
  await waitFor(() => childrenOf().length === 0 || undefined, 3000, 'no child left').catch(() => {});
  expect(childrenOf()).toEqual([]);
});

function startApp(app: string, metrics: unknown = '127.0.0.1:0', env: NodeJS.ProcessEnv = {}): Supervisor {
  supervisor = supervise({
    script: fixture(`apps/${app}`), args: [], execArgv: ['--require', REGISTER], workers: 2, listen: '127.0.0.1:0',
    metrics: metrics as never, env,
  });
  return supervisor;
}

function scrape(path = '/metrics'): Promise<{ status: number; type: string; body: string }> {
  const { port } = supervisor!.metricsAddress!;
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, type: String(response.headers['content-type']), body }));
    }).on('error', reject);
  });
}

/**
 * Checks every line against the text exposition format's grammar and returns name → samples; a separate parser
 * (parse-prometheus-text-format) must read the same families with the types declared.
 */
function parseExposition(text: string): Map<string, Array<{ labels: Record<string, string>; value: string }>> {
  const types = new Map<string, string>();
  const samples = new Map<string, Array<{ labels: Record<string, string>; value: string }>>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      types.set(type[1], type[2]);
      continue;
    }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*)\})? (-?[0-9.e+-]+|[+-]Inf|NaN)$/.exec(line);
    expect({ line, valid: sample !== null }).toEqual({ line, valid: true });
    const [, name, labelText = '', number] = sample!;
    const family = name.replace(/_(bucket|sum|count)$/, '');
    expect({ line, typed: types.has(name) || types.has(family) }).toEqual({ line, typed: true });
    const labels = Object.fromEntries([...labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((match) => [match[1], match[2]]));
    samples.set(name, [...(samples.get(name) ?? []), { labels, value: number }]);
  }
  const parsed = parsePrometheusTextFormat(text);
  expect(new Map(parsed.map((family) => [family.name, family.type.toLowerCase()]))).toEqual(types);
  return samples;
}

const value = (samples: ReturnType<typeof parseExposition>, name: string, labels: Record<string, string> = {}) =>
  Number(samples.get(name)?.find((sample) => Object.entries(labels).every(([key, v]) => sample.labels[key] === v))?.value);

test("an app's prom-client counter reads exactly N after N requests, across a reload and a kill -9", async () => {
  startApp('prom-client.js');
  await supervisor!.ready();
  const { port } = supervisor!.addresses[0];
  const requests = async (count: number) => {
    for (let i = 0; i < count; i++) await get(port);
  };
  const total = async () => value(parseExposition((await scrape()).body), 'app_requests_total', { route: 'root' });

  await requests(40);
  const first = await scrape();
  expect(first.status).toBe(200);
  expect(first.type).toBe('text/plain; version=0.0.4; charset=utf-8');
  const samples = parseExposition(first.body);
  expect(value(samples, 'app_requests_total', { route: 'root' })).toBe(40);
  expect(value(samples, 'app_request_seconds_count')).toBe(40);
  expect(value(samples, 'app_request_seconds_bucket', { le: '+Inf' })).toBe(40);
  expect(value(samples, 'app_worker_up')).toBe(2); // a gauge, summed as prom-client's default aggregator does
  expect(value(samples, 'prefork_workers', { state: 'ready' })).toBe(2);
  expect(value(samples, 'prefork_slot_requests_total', { slot: '0' }) + value(samples, 'prefork_slot_requests_total', { slot: '1' })).toBe(40);

  await supervisor!.reload();
  expect(await total()).toBe(40); // the old workers' counts, sent as they drained, are kept
  await requests(10);
  expect(await total()).toBe(50);

  const [victim] = supervisor!.workers;
  const restarted = new Promise<Worker>((resolve) => supervisor!.once('restart', (_old: Worker, next: Worker) => resolve(next)));
  process.kill(victim.pid, 'SIGKILL');
  const next = await restarted;
  await waitFor(() => next.state === 'ready' || undefined, 5000, 'the replacement ready');
  expect(isDead(victim.pid)).toBe(true);
  expect(await total()).toBe(50); // counted at the last scrape: a SIGKILLed worker cannot send more
  await requests(10);
  const after = parseExposition((await scrape()).body);
  expect(value(after, 'app_requests_total', { route: 'root' })).toBe(60);
  expect(value(after, 'prefork_restarts_total', { reason: 'reload' })).toBe(2);
  expect(value(after, 'prefork_restarts_total', { reason: 'crash' })).toBe(1);
  expect(value(after, 'prefork_reloads_total')).toBe(1);
  expect(value(after, 'prefork_slot_requests_total', { slot: '0' }) + value(after, 'prefork_slot_requests_total', { slot: '1' })).toBe(60);
  for (const name of ['prefork_worker_resident_memory_bytes', 'prefork_worker_heap_used_bytes', 'prefork_worker_event_loop_lag_seconds', 'prefork_worker_open_connections']) {
    expect(after.get(name)?.map((sample) => sample.labels.slot).sort()).toEqual(['0', '1']);
  }
  const queues = after.get('prefork_listen_queue_limit')!;
  expect(queues.map((sample) => [sample.labels.slot, sample.value]).sort()).toEqual([['shared', '511']]); // the default: one queue
  expect(queues[0].labels.address).toBe(`127.0.0.1:${port}`);
  expect(await supervisor!.metrics()).toContain('app_requests_total{route="root"} 60');
  expect((await scrape('/other')).status).toBe(404);
});

test('workerLabel: one series per worker slot, continued by its replacement', async () => {
  startApp('prom-client.js', { host: '127.0.0.1', port: 0, path: '/m', workerLabel: true });
  await supervisor!.ready();
  for (let i = 0; i < 20; i++) await get(supervisor!.addresses[0].port);
  const samples = parseExposition((await scrape('/m')).body);
  const bySlot = samples.get('app_requests_total')!.map((sample) => [sample.labels.worker, Number(sample.value)]);
  expect(bySlot.map(([worker]) => worker).sort()).toEqual(['0', '1']);
  expect(bySlot.reduce((sum, [, count]) => sum + (count as number), 0)).toBe(20);
  await supervisor!.reload();
  const reloaded = parseExposition((await scrape('/m')).body).get('app_requests_total')!;
  expect(new Map(reloaded.map((sample) => [sample.labels.worker, Number(sample.value)]))).toEqual(new Map(bySlot as Array<[string, number]>));
});

// kept: a metric without an aggregator is summed, as prom-client documents (its aggregate() threw instead).
test.each([
  ['constructor', 'constructor', false],
  ['toString', 'toString', false],
  ['no-aggregator', 'app_no_aggregator_total', true],
  ['prefork-name', 'prefork_workers', false],
])("a worker's metric %p cannot take /metrics down, while it lives or after it exits", async (lie, name, kept) => {
  const claim = join(mkdtempSync(join(tmpdir(), 'prefork-metrics-')), 'liar');
  const stderr = jest.spyOn(process.stderr, 'write');
  try {
    startApp('prom-client-adversary.js', '127.0.0.1:0', { BAD_METRIC: lie, BAD_METRIC_CLAIM: claim });
    await supervisor!.ready();
    const { port } = supervisor!.addresses[0];
    for (let i = 0; i < 10; i++) await get(port);
    const liar = supervisor!.workers.find((worker) => worker.pid === Number(readFileSync(claim, 'utf8')))!;
    const healthy = async (requests: number) => {
      const answer = await scrape();
      expect({ status: answer.status, body: answer.body.slice(0, 200) }).toEqual({ status: 200, body: expect.stringContaining('# HELP prefork_workers') });
      const samples = parseExposition(answer.body);
      expect(value(samples, 'prefork_workers', { state: 'ready' })).toBe(2);
      expect(value(samples, 'app_requests_total')).toBe(requests);
      expect(answer.body.split('\n').filter((line) => line.startsWith(`# TYPE ${name} `))).toHaveLength(kept || name.startsWith('prefork_') ? 1 : 0);
      if (kept) expect(value(samples, name)).toBe(1);
    };
    await healthy(10);
    await healthy(10);
    const drops = stderr.mock.calls.map(([text]) => String(text)).filter((text) => text.includes(`"${name}"`));
    expect(drops).toEqual(kept ? [] : [expect.stringMatching(new RegExp(`^prefork: worker \\d \\(pid ${liar.pid}\\) sent metrics the primary drops: "${name}" \\(`))]);

    const restarted = new Promise<Worker>((resolve) => supervisor!.once('restart', (_old: Worker, next: Worker) => resolve(next)));
    process.kill(liar.pid, 'SIGKILL'); // its last metrics are kept, as an exited worker's are
    const next = await restarted;
    await waitFor(() => next.state === 'ready' || undefined, 5000, 'the replacement ready');
    await healthy(10);
    await get(port);
    await healthy(11);
  } finally {
    stderr.mockRestore();
    rmSync(dirname(claim), { recursive: true, force: true });
  }
});

test("exited workers' series that no live worker reports are bounded: 3 reloads of workers with 2,500 per-lifetime label values each", async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { MAX_RETIRED_SAMPLES } = require('../src/limits') as typeof import('../src/limits');
  const perLifetime = 2500;
  const stderr = jest.spyOn(process.stderr, 'write');
  try {
    startApp('prom-client-per-lifetime.js', '127.0.0.1:0', { LIFETIME_SERIES: String(perLifetime) });
    let exited = 0;
    supervisor!.on('exit', () => exited++);
    await supervisor!.ready();
    const { port } = supervisor!.addresses[0];
    let served = 0;
    for (let reload = 0; reload < 3; reload++) {
      for (let i = 0; i < 5; i++, served++) await get(port);
      const samples = parseExposition((await scrape()).body);
      expect(value(samples, 'app_requests_total')).toBe(served); // the series every worker continues never goes down
      await supervisor!.reload();
    }
    // reload() ends when the last new worker is ready; the old one may still be draining, its series still live.
    await waitFor(() => exited === 6 || undefined, 10000, 'the 6 old workers to exit');
    const samples = parseExposition((await scrape()).body);
    expect(value(samples, 'app_requests_total')).toBe(served);
    const series = samples.get('app_lifetime_total')!;
    const livePids = supervisor!.workers.map((worker) => String(worker.pid));
    // Every live worker's series, and at most MAX_RETIRED_SAMPLES of the 6 exited workers' 15,000.
    expect(series.filter((sample) => livePids.includes(sample.labels.lifetime.split('-')[0]))).toHaveLength(2 * perLifetime);
    expect(series.length).toBeLessThanOrEqual(2 * perLifetime + MAX_RETIRED_SAMPLES);
    const warnings = stderr.mock.calls.map(([text]) => String(text)).filter((text) => text.includes('series no live worker reports'));
    expect(warnings).toHaveLength(1);
  } finally {
    stderr.mockRestore();
  }
}, 90000);

test("past the cap, an exited series a live worker still reports keeps its total however long ago it was retired", async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { AppMetrics } = require('../src/primary/app-metrics') as typeof import('../src/primary/app-metrics');
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    const merge = new AppMetrics(fixture('apps/prom-client.js'), false);
    const counter = (name: string, values: Array<[Record<string, string>, number]>) =>
      ({ name, help: 'h', type: 'counter' as const, aggregator: 'sum', values: values.map(([labels, count]) => ({ labels, value: count })) });
    const steady = [counter('app_requests_total', [[{ route: '/' }, 1]])];
    merge.retire(0, [counter('app_requests_total', [[{ route: '/' }, 5]])]); // slot 0's first worker
    for (let lifetime = 0; lifetime < 3; lifetime++) {
      const unique = Array.from({ length: 6000 }, (_, i): [Record<string, string>, number] => [{ id: `${lifetime}-${i}` }, 1]);
      merge.retire(1, [counter('app_unique_total', unique)], [{ slot: 0, metrics: steady }]);
    }
    const samples = parseExposition(await merge.render([{ slot: 0, metrics: steady }]));
    expect(value(samples, 'app_requests_total', { route: '/' })).toBe(6);
    expect(samples.get('app_unique_total')!.length).toBeLessThanOrEqual(10_000);
    expect(samples.get('app_unique_total')!.map((sample) => sample.labels.id)).toContain('2-5999'); // the newest kept
  } finally {
    stderr.mockRestore();
  }
});

test('25 scrapes at once make every worker collect once or twice, not 25 times: they share a collection in flight', async () => {
  const log = join(mkdtempSync(join(tmpdir(), 'prefork-metrics-')), 'collections');
  try {
    writeFileSync(log, '');
    startApp('prom-client-slow-collect.js', '127.0.0.1:0', { COLLECT_LOG: log });
    await supervisor!.ready();
    const answers = await Promise.all(Array.from({ length: 25 }, () => scrape()));
    expect(answers.map(({ status }) => status)).toEqual(Array(25).fill(200));
    for (const { body } of answers) expect(value(parseExposition(body), 'prefork_workers', { state: 'ready' })).toBe(2);
    const byWorker = new Map<string, number>();
    for (const pid of readFileSync(log, 'utf8').split('\n').filter(Boolean)) byWorker.set(pid, (byWorker.get(pid) ?? 0) + 1);
    expect([...byWorker.keys()].sort()).toEqual(supervisor!.workers.map((worker) => String(worker.pid)).sort());
    for (const [pid, collections] of byWorker) expect({ pid, collections: Math.min(collections, 2) }).toEqual({ pid, collections });
  } finally {
    await supervisor?.shutdown({ timeout: 1000 }); // draining workers collect once more, into the log
    rmSync(dirname(log), { recursive: true, force: true });
  }
});

test('an app without prom-client: the prefork_* metrics alone, and no warning', async () => {
  const stderr = jest.spyOn(process.stderr, 'write');
  startApp('plain-http.js');
  await supervisor!.ready();
  const samples = parseExposition((await scrape()).body);
  expect(stderr.mock.calls.filter(([text]) => String(text).includes('prom-client'))).toEqual([]);
  stderr.mockRestore();
  expect([...samples.keys()].every((name) => name.startsWith('prefork_'))).toBe(true);
  expect(value(samples, 'prefork_workers', { state: 'ready' })).toBe(2);
});

test('a metrics port in use fails the start with a clear error, and nothing is left', async () => {
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  const { port } = taken.address() as net.AddressInfo;
  try {
    startApp('plain-http.js', `127.0.0.1:${port}`);
    await expect(supervisor!.ready()).rejects.toMatchObject({
      code: 'EADDRINUSE', message: expect.stringContaining(`The metrics endpoint cannot listen on 127.0.0.1:${port}`),
    });
    expect(childrenOf()).toEqual([]);
  } finally {
    await new Promise((resolve) => taken.close(resolve));
  }
});

test.each([
  ['host:port', /"metrics" option must be a port, "host:port"/],
  [{ port: 70000 }, /"metrics.port" option must be an integer from 0 to 65535/],
  [{ port: 9100, path: 'metrics' }, /"metrics.path" option must start with "\/"/],
  [{ port: 9100, workerLabels: true }, /Unknown option "workerLabels" for the "metrics" option. Did you mean "workerLabel"\?/],
])('bad metrics option %p', (metrics, message) => {
  expect(() => supervise({ script: fixture('apps/plain-http.js'), metrics: metrics as never })).toThrow(message);
  expect(childrenOf()).toEqual([]);
});

test("a worker's metrics answer is checked before it is used: garbage is refused, a metric the primary cannot merge is dropped alone", () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { parseWorkerMetrics } = require('../src/primary/app-metrics') as typeof import('../src/primary/app-metrics');
  expect(parseWorkerMetrics('not json')).toBe('metrics that are not JSON');
  expect(parseWorkerMetrics('{"a":1}')).toBe('metrics that are not a list');
  const ok = { name: 'ok', help: 'h', type: 'counter', values: [{ value: 3, labels: { route: '/' } }] };
  const dropped = (metric: object) => {
    const parsed = parseWorkerMetrics(JSON.stringify([metric, ok]));
    expect(typeof parsed === 'object' && parsed.metrics).toEqual([{ ...ok, aggregator: 'sum' }]);
    return typeof parsed === 'object' && parsed.dropped.map(({ why }) => why);
  };
  expect(dropped({ ...ok, name: 'bad name' })).toEqual(['not a Prometheus metric name']);
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) expect(dropped({ ...ok, name })).toEqual([expect.stringMatching(/Object.prototype/)]);
  expect(dropped({ ...ok, name: 'prefork_workers' })).toEqual([expect.stringMatching(/prefork_\* names are the primary's own/)]);
  expect(dropped({ ...ok, name: 'x', aggregator: 'constructor' })).toEqual([expect.stringMatching(/an aggregator prom-client does not have/)]);
  expect(dropped({ ...ok, name: 'x', values: [{ value: '1', labels: {} }] })).toEqual(['a malformed value']);
  expect(dropped({ ...ok, name: 'x', values: [{ value: 1, labels: { 'a b': 'x' } }] })).toEqual(['a malformed value']);
  expect(dropped({ ...ok, name: 'x', values: [{ value: 1, labels: { __name__: 'x' } }] })).toEqual(['a malformed value']);
  expect(dropped({ ...ok, name: 'x', values: [{ value: 1, labels: {}, metricName: 'prefork_workers' }] })).toEqual(['a malformed value']);
  expect(dropped(ok)).toEqual(['a second metric of that name']);
  expect(parseWorkerMetrics(JSON.stringify([{ ...ok, aggregator: 'max', extra: 1 }]))).toEqual({ metrics: [{ ...ok, aggregator: 'max' }], dropped: [] });
});

test('a metric the merge cannot take (one that got past the checks, or two types under one name) is left out alone, said once', async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { AppMetrics } = require('../src/primary/app-metrics') as typeof import('../src/primary/app-metrics');
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    const merge = new AppMetrics(fixture('apps/prom-client.js'), false);
    const metric = (name: string, type: 'counter' | 'histogram' | 'gauge', extra = {}) => ({ name, help: 'h', type, aggregator: 'sum', values: [{ value: 1, labels: {}, ...extra }] });
    const live = [
      { slot: 0, metrics: [metric('a', 'counter'), metric('constructor', 'counter'), metric('ok', 'gauge')] },
      { slot: 1, metrics: [metric('a', 'histogram', { metricName: 'a_bucket' }), metric('ok', 'gauge')] },
    ];
    const samples = parseExposition(await merge.render(live));
    expect([...samples].map(([name, values]) => [name, values.map((sample) => Number(sample.value))])).toEqual([['a', [1]], ['ok', [2]]]);
    await merge.render(live);
    expect(stderr.mock.calls.map(([text]) => String(text))).toEqual([
      'prefork: metric "a" is a counter for worker 0 but a histogram for worker 1; leaving out the histograms\n',
      expect.stringMatching(/^prefork: cannot merge metric "constructor" \(from worker 0\): .*; leaving it out\n$/),
    ]);
  } finally {
    stderr.mockRestore();
  }
});
