// What a prefork worker costs per connection: hello world with `Connection: close` under wrk, prefork against bare
// SO_REUSEPORT processes (no supervisor, the same app), rounds alternated; req/s and the app processes' CPU per
// request. --against DIR adds prefork from another checkout (its lib/ built), to measure a change before and after.
//
// Usage: node bench/connection-cost.js [--rounds N] [--duration S] [--warmup S] [--connections C] [--threads T]
//                                      [--workers N] [--path /|/cpu|/json] [--keepalive] [--against DIR[,DIR…]]
//                                      [--only id,id]
//   --rounds N       measured wrk runs per contender (default 6), in the order A B C … then … C B A
//   --warmup S       an unmeasured wrk run per contender first (default 5), after all have been up for 10 s
//   --only ids       contenders: bare, prefork-api, prefork-register; prefork-api@1 … for the --against checkouts
//   --against DIR    prefork supervise() and -r from DIR too (e.g. `git worktree add /tmp/before <commit>`, then
//                    build it there: `npx tsc -p tsconfig.build.json`, and link its node_modules and build/)
// Needs wrk, lib/ (npm run build) and the native addon. Prints a table and the command that made it.
'use strict';

const childProcess = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const prefork = require('../lib');
const { percentile } = require('./stats');

const ROOT = path.resolve(__dirname, '..');
const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
// V8's memory reducer runs a GC in an idle process about 8 s after its start-up allocations: measure after it.
const START_SETTLE_MS = 10_000;

function parseArgs(argv) {
  const options = { rounds: 6, duration: 5, warmup: 5, connections: 50, threads: 2, workers: os.availableParallelism?.() ?? os.cpus().length, path: '/', close: true, against: [], only: null };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    const number = (min) => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs a whole number ≥ ${min}`);
      return n;
    };
    if (flag === '--rounds') options.rounds = number(1);
    else if (flag === '--duration') options.duration = number(1);
    else if (flag === '--warmup') options.warmup = number(0);
    else if (flag === '--connections') options.connections = number(1);
    else if (flag === '--threads') options.threads = number(1);
    else if (flag === '--workers') options.workers = number(1);
    else if (flag === '--path') options.path = value();
    else if (flag === '--keepalive') options.close = false;
    else if (flag === '--only') options.only = value().split(',').filter(Boolean);
    else if (flag === '--against') options.against.push(...value().split(',').filter(Boolean).map((dir) => path.resolve(dir)));
    else throw new Error(`unknown argument: ${flag} (see the usage at the top of bench/connection-cost.js)`);
  }
  options.threads = Math.min(options.threads, options.connections);
  for (const dir of options.against) {
    if (!fs.existsSync(path.join(dir, 'lib', 'index.js'))) throw new Error(`--against ${dir}: no lib/index.js there (build it first)`);
  }
  return options;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values) => percentile([...values].filter(Number.isFinite).sort((a, b) => a - b), 50);

/** CPU time of every thread of `pid` so far, in ms (schedstat: nanoseconds on a CPU). */
function cpuMs(pid) {
  let total = 0;
  try {
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    // the process is gone
  }
  return total;
}

/** A free port: bound by no one when we asked (the contender binds it right after). */
async function freePort() {
  const socket = await prefork.createListenSocket({ host: HOST, port: 0, listen: false });
  fs.closeSync(socket.fd);
  return socket.port;
}

/**
 * The contenders. Each runs bench/apps/handler.js's hello world in `workers` processes; the prefork ones from ROOT
 * and from each --against checkout, with that checkout's own app files and lib/.
 */
function contenders(options) {
  const list = [{ id: 'bare', label: 'bare SO_REUSEPORT processes', bare: true, root: ROOT }];
  for (const [i, root] of [ROOT, ...options.against].entries()) {
    const where = i === 0 ? '' : ` @ ${path.relative(process.cwd(), root) || root}`;
    list.push(
      { id: `prefork-api${i ? `@${i}` : ''}`, label: `prefork supervise()${where}`, root, args: ['bench/apps/prefork-api.js'], env: {} },
      { id: `prefork-register${i ? `@${i}` : ''}`, label: `prefork -r prefork/register${where}`, root, args: ['-r', './lib/zero-code/register.js', 'bench/apps/server.js'], env: { PREFORK_WORKERS: String(options.workers) } },
    );
  }
  if (!options.only) return list;
  const unknown = options.only.filter((id) => !list.some((contender) => contender.id === id));
  if (unknown.length > 0) throw new Error(`unknown contender ${unknown.join(', ')}; known: ${list.map((contender) => contender.id).join(', ')}`);
  return list.filter((contender) => options.only.includes(contender.id));
}

class Instance {
  constructor(contender, options) {
    this.contender = contender;
    this.options = options;
    this.statsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'prefork-connection-cost-'));
    this.children = [];
    this.primary = null;
  }

  async start() {
    const { contender, options } = this;
    const env = { ...process.env, BENCH_HOST: HOST, BENCH_WORKERS: String(options.workers), BENCH_STATS_DIR: this.statsDir };
    for (const key of Object.keys(env)) if (key.startsWith('PREFORK_')) delete env[key];
    if (contender.bare) {
      const sockets = [await prefork.createListenSocket({ host: HOST, port: 0 })];
      this.port = sockets[0].port;
      for (let i = 1; i < options.workers; i++) sockets.push(await prefork.createListenSocket({ host: HOST, port: this.port }));
      for (const socket of sockets) {
        const file = process.execPath;
        this.children.push(prefork.spawn({ file, args: [file, 'bench/apps/server.js'], env: { ...env, BENCH_LISTEN_FD: '3' }, cwd: ROOT, fds: { 3: socket.fd } }));
        fs.closeSync(socket.fd);
      }
    } else {
      this.port = await freePort();
      this.primary = childProcess.spawn(process.execPath, contender.args, {
        cwd: contender.root, env: { ...env, ...contender.env, BENCH_PORT: String(this.port) }, stdio: ['ignore', 'ignore', 'pipe'],
      });
      this.stderr = '';
      this.primary.stderr.setEncoding('utf8').on('data', (chunk) => (this.stderr = (this.stderr + chunk).slice(-2000)));
    }
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (this.appPids().length < options.workers) {
      if (Date.now() > deadline || this.primary?.exitCode != null) {
        throw new Error(`${contender.id}: not every worker listened within ${START_TIMEOUT_MS} ms${this.stderr ? `; its stderr:\n${this.stderr}` : ''}`);
      }
      await sleep(20);
    }
  }

  /** The app processes, from the stats files bench/apps/handler.js writes once listening. */
  appPids() {
    return fs.readdirSync(this.statsDir).filter((name) => name.endsWith('.json')).map((name) => Number(name.slice(0, -5)));
  }

  async stop() {
    const exits = this.primary
      ? [new Promise((resolve) => (this.primary.exitCode !== null ? resolve() : this.primary.once('exit', resolve)))]
      : this.children.map((child) => child.exited);
    if (this.primary) this.primary.kill('SIGTERM');
    for (const child of this.children) child.kill('SIGTERM');
    const timer = setTimeout(() => {
      this.primary?.kill('SIGKILL');
      for (const child of this.children) child.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    await Promise.all(exits);
    clearTimeout(timer);
    fs.rmSync(this.statsDir, { recursive: true, force: true });
  }
}

function wrk(instance, seconds) {
  const { options } = instance;
  const args = ['-t', String(options.threads), '-c', String(options.connections), '-d', `${seconds}s`];
  if (options.close) args.push('-H', 'Connection: close');
  args.push(`http://${HOST}:${instance.port}${options.path}`);
  const result = childProcess.spawnSync('wrk', args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (result.status !== 0) throw new Error(`wrk ${args.join(' ')} failed: ${result.error?.message ?? result.stderr}`);
  const match = (pattern) => Number((result.stdout.match(pattern) ?? [])[1] ?? NaN);
  const errors = [/Socket errors: connect (\d+)/, /read (\d+), write/, /write (\d+), timeout/, /timeout (\d+)/, /Non-2xx or 3xx responses: (\d+)/]
    .reduce((sum, pattern) => sum + (match(pattern) || 0), 0);
  return { rps: match(/Requests\/sec:\s+([\d.]+)/), requests: match(/^\s*(\d+) requests in/m), errors, command: `wrk ${args.join(' ')}` };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const list = contenders(options);
  const instances = new Map();
  try {
    for (const contender of list) {
      const instance = new Instance(contender, options);
      instances.set(contender.id, instance);
      await instance.start();
    }
    await sleep(START_SETTLE_MS);
    if (options.warmup > 0) for (const instance of instances.values()) wrk(instance, options.warmup);
    const runs = new Map(list.map((contender) => [contender.id, []]));
    let wrkCommand = '';
    for (let round = 0; round < options.rounds; round++) {
      for (const contender of round % 2 === 0 ? list : [...list].reverse()) {
        const instance = instances.get(contender.id);
        const pids = [...instance.appPids(), ...(instance.primary ? [instance.primary.pid] : [])];
        const before = pids.map(cpuMs);
        const result = wrk(instance, options.duration);
        const cpu = pids.reduce((sum, pid, i) => sum + cpuMs(pid) - before[i], 0);
        wrkCommand = result.command.replace(/:\d+\//, ':<port>/');
        runs.get(contender.id).push({ ...result, cpuPerRequestUs: (cpu * 1000) / result.requests });
        process.stderr.write(`round ${round + 1} ${contender.id}: ${Math.round(result.rps)} req/s, ${((cpu * 1000) / result.requests).toFixed(1)} µs CPU/request\n`);
      }
    }
    const bare = runs.has('bare') ? median(runs.get('bare').map((run) => run.rps)) : NaN;
    const lines = [
      `Command: \`node bench/connection-cost.js ${process.argv.slice(2).join(' ')}\` (${os.cpus().length} CPUs, Node ${process.version}; each run: \`${wrkCommand}\`)`,
      '',
      '| contender | req/s (median) | min – max | × bare | server CPU per request (median) | errors |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
    ];
    for (const contender of list) {
      const own = runs.get(contender.id);
      const rps = own.map((run) => run.rps);
      lines.push(`| ${contender.label} | ${Math.round(median(rps))} | ${Math.round(Math.min(...rps))} – ${Math.round(Math.max(...rps))} | ` +
        `${(median(rps) / bare).toFixed(3)} | ${median(own.map((run) => run.cpuPerRequestUs)).toFixed(1)} µs | ${own.reduce((sum, run) => sum + run.errors, 0)} |`);
    }
    lines.push('', 'Server CPU per request: the app processes\' and the primary\'s CPU time (all threads, /proc schedstat) over the requests wrk counted.');
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    for (const instance of instances.values()) await instance.stop();
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exitCode = 1;
});
