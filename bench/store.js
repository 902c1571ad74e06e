// Benchmark: prefork's shared CounterStore (increments per second from JavaScript) against
// express-rate-limit's MemoryStore (in-process, not shared) and Redis INCR over loopback (shared).
//
// Usage: node bench/store.js [--quick] [--write]
//   --quick  1 s per measurement instead of 3 s
//   --write  also rewrite this benchmark's section of bench/RESULTS.md
// Needs lib/ (npm run build). Redis figures need redis-server and redis-cli (Debian's redis-server package);
// without them, or when Redis does not answer within 5 s, the Redis rows are left out with one line saying why.
'use strict';

const childProcess = require('node:child_process');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const prefork = require('../lib');
const { writeSection } = require('./results-file');

const quick = process.argv.includes('--quick');
const write = process.argv.includes('--write');
const MS = quick ? 1000 : 3000;

/** Increments per second of `step` (which does 1,000 increments per call) over MS. */
async function rate(step) {
  const warm = Date.now() + 300; // long enough for the optimising compiler
  while (Date.now() < warm) await step();
  const started = process.hrtime.bigint();
  const deadline = Date.now() + MS;
  let done = 0;
  while (Date.now() < deadline) {
    await step();
    done += 1000;
  }
  return done / (Number(process.hrtime.bigint() - started) / 1e9);
}

const keys = Array.from({ length: 1000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);

async function inProcess(keyCount) {
  const store = new prefork.CounterStore({ prefix: `single-${keyCount}:` });
  return rate(() => {
    for (let i = 0; i < 1000; i++) store.increment(keyCount === 1 ? 'hot' : keys[i], 600000);
  });
}

async function memoryStore(keyCount) {
  const { MemoryStore } = require('express-rate-limit');
  const store = new MemoryStore();
  store.init({ windowMs: 600000 });
  const result = await rate(async () => {
    for (let i = 0; i < 1000; i++) await store.increment(keyCount === 1 ? 'hot' : keys[i]);
  });
  store.shutdown();
  return result;
}

/** Seconds a Redis step may take before the benchmark gives up on Redis (it never waits without a deadline). */
const REDIS_DEADLINE_MS = 5000;

/** Why Redis cannot be measured here, or null when redis-server and redis-cli both run. */
function redisMissing() {
  const missing = ['redis-server', 'redis-cli'].filter((command) => {
    const probe = childProcess.spawnSync(command, ['--version'], { stdio: 'ignore', timeout: REDIS_DEADLINE_MS });
    return probe.error !== undefined || probe.status !== 0;
  });
  return missing.length === 0 ? null : `${missing.join(' and ')} not found (Debian's redis-server package: apt-get install redis-server)`;
}

/** A redis-server on a free loopback port, answering PING within the deadline; throws (and stops it) otherwise. */
async function startRedis() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = probe.address().port;
  await new Promise((resolve) => probe.close(resolve));
  const server = childProcess.spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const deadline = Date.now() + REDIS_DEADLINE_MS;
  while (Date.now() < deadline && server.exitCode === null) {
    const ping = childProcess.spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8', timeout: 1000 });
    if (ping.stdout?.trim() === 'PONG') return { server, port };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  server.kill('SIGKILL');
  throw new Error(`redis-server did not answer PING within ${REDIS_DEADLINE_MS} ms`);
}

async function redis(clients) {
  const { server, port } = await startRedis();
  try {
    const { createClient } = require('redis');
    // One bounded attempt per client: no endless reconnect if the server goes away.
    const options = { url: `redis://127.0.0.1:${port}`, socket: { connectTimeout: REDIS_DEADLINE_MS, reconnectStrategy: false } };
    const connections = await Promise.all(Array.from({ length: clients }, () => createClient(options).on('error', () => {}).connect()));
    let done = 0;
    const deadline = Date.now() + MS;
    const started = process.hrtime.bigint();
    await Promise.all(connections.map(async (client) => {
      while (Date.now() < deadline) {
        await client.incr('hot'); // one round trip per increment, as a rate limiter does per request
        done += 1;
      }
    }));
    const result = done / (Number(process.hrtime.bigint() - started) / 1e9);
    await Promise.all(connections.map((client) => client.quit()));
    return result;
  } finally {
    server.kill('SIGTERM');
  }
}
async function main() {
  const rows = [];
  const add = (contender, setting, perSecond) => rows.push({ contender, setting, perSecond });
  add('prefork CounterStore, 1 process', 'one key', await inProcess(1));
  add('prefork CounterStore, 1 process', '1,000 keys', await inProcess(1000));
  for (const keyMode of ['one', 'distinct']) {
    const counts = await workerRate(2, keyMode);
    add('prefork CounterStore, 2 workers (shared)', keyMode === 'one' ? 'one key' : '1,000 keys each', counts);
  }
  add('express-rate-limit MemoryStore, 1 process (not shared)', 'one key', await memoryStore(1));
  add('express-rate-limit MemoryStore, 1 process (not shared)', '1,000 keys', await memoryStore(1000));
  let redisOne = null;
  let redisTwo = null;
  let redisSkipped = redisMissing();
  if (redisSkipped === null) {
    try {
      redisOne = await redis(1);
      redisTwo = await redis(2);
      add('Redis INCR over loopback, 1 client (shared)', 'one key', redisOne);
      add('Redis INCR over loopback, 2 clients (shared)', 'one key', redisTwo);
    } catch (error) {
      redisSkipped = error.message;
    }
  }
  if (redisSkipped !== null) console.error(`bench/store.js: Redis skipped: ${redisSkipped}`);
  const fmt = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} M/s` : `${(n / 1e3).toFixed(1)} k/s`);
  const single = rows.find((row) => row.contender.includes('1 process') && row.contender.startsWith('prefork') && row.setting === 'one key').perSecond;
  const pair = rows.find((row) => row.contender.includes('2 workers') && row.setting === 'one key').perSecond;
  const lines = [
    '## Shared counter store: increments per second',
    '',
    `- Command (from the package root): \`node bench/store.js${quick ? ' --quick' : ''} --write\``,
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${os.cpus()[0].model.trim()}, ${os.cpus().length} CPUs, ${os.platform()} ${os.release()}; Node ${process.version}`,
    `- Each figure: increments for ${MS / 1000} s after a warm-up; workers start together (a barrier on the store).`,
    '',
    '| contender | keys | increments per second |',
    '| --- | --- | ---: |',
    ...rows.map((row) => `| ${row.contender} | ${row.setting} | ${fmt(row.perSecond)} |`),
    '',
    `Goals: ≥ 5 M/s in one process — **${fmt(single)}** (${single >= 5e6 ? 'met' : 'missed'}).`,
    redisOne ? `≥ 50× Redis round trips from the same client count — 1 process: **${(single / redisOne).toFixed(0)}×**, 2 workers against 2 clients: **${(pair / redisTwo).toFixed(0)}×**.` : `Redis was not measured in this run (${redisSkipped}): the table has no Redis rows.`,
    '',
    'Two workers on one key contend for one cache line (every increment is a compare-and-swap on it), so they add',
    'less than a second process would on distinct keys. MemoryStore is per process: its counts are not shared.',
  ];
  const text = lines.join('\n');
  console.log(text);
  if (write) console.log(`\nwritten to ${writeSection('store', text)}`);
}

/** Total increments per second of `count` workers incrementing together for MS. */
async function workerRate(count, keyMode) {
  const run = childProcess.spawnSync(process.execPath, ['-e', `
    const prefork = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
    const supervisor = prefork.supervise({ script: ${JSON.stringify(path.join(__dirname, 'store-worker.js'))}, args: [], execArgv: [],
      workers: ${count}, waitReady: true, readyTimeout: 60000, signals: false, exitProcess: false,
      env: { BENCH_MS: '${MS}', BENCH_KEYS: '${keyMode}', BENCH_WORKERS: '${count}', BENCH_RUN: '${keyMode}-' + Date.now() } });
    supervisor.ready().then(() => supervisor.shutdown());
  `], { encoding: 'utf8', timeout: 120000 });
  const totals = [...run.stdout.matchAll(/DONE (\d+)/g)].map((match) => Number(match[1]));
  if (totals.length !== count) throw new Error(`workers reported ${totals.length} of ${count}: ${run.stderr}`);
  return totals.reduce((sum, n) => sum + n, 0) / (MS / 1000);
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
