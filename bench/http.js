// HTTP benchmark: prefork (API and `-r prefork/register`) against a single process, node:cluster
// (round-robin and SCHED_NONE) and bare SO_REUSEPORT processes with no supervisor, under wrk on 127.0.0.1.
//
// Usage: node bench/http.js [--quick] [--write] [--duration S] [--rounds N] [--warmup S] [--connections C]
//                           [--threads T] [--workers N] [--startup-rounds N] [--fault-rounds N] [--no-faults]
//                           [--only id,id] [--workloads id,id|none] [--reset-after MS] [--against DIR,…] [--verbose]
//   --quick          1 s runs, 2 rounds, 1 s warm-up, one fault run of each kind (about 2 minutes)
//   --write          also write bench/RESULTS.md (this script's section) and bench/results.svg
//   --duration S     seconds per measured wrk run (default 5)        --rounds N   measured runs per pair (default 3)
//   --workers N      workers per contender (default: available CPUs) --only ids   contenders to run (see CONTENDERS;
//                    prefork-client-ip runs only when named)
//   --workloads ids  keepalive, close, cpu, cpu-close, json (default all; `none`: start-up, memory and faults only)
//   --reset-after MS prefork's restart.resetAfter in the fault runs (default 2000; prefork's own default is 30000)
//   --against DIRS   also prefork supervise() and -r as another checkout runs them (its lib/ built and its
//                    node_modules/build present, e.g. a `git worktree add /tmp/before <commit>`): contenders
//                    prefork-api@1, prefork-register@1, … to measure a change before and after; not with --write
// Needs wrk (installed with apt-get when missing and running as root), lib/ and the native addon.
'use strict';

const { percentile } = require('./stats');

const childProcess = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const prefork = require('../lib');
const { hash } = require('./apps/handler');
const { writeSection } = require('./results-file');

const ROOT = path.resolve(__dirname, '..');
const APPS = path.join(__dirname, 'apps');
const HOST = '127.0.0.1';
const STOP_TIMEOUT_MS = 15_000;
const START_TIMEOUT_MS = 30_000;
const EVENT_TIMEOUT_MS = 60_000;
const CPU_TARGET_MS = 0.5;
const STATS_SETTLE_MS = 150; // the apps write their counters every 100 ms
// prefork restarts a crashed worker at once only after a stable run (restart.resetAfter, 30 s by default); later
// crashes back off, with the slot's socket closed meanwhile. The fault runs kill a worker every few seconds, so
// they lower it to measure what a first crash costs, not the crash-loop backoff.
const RESET_AFTER_MS = 2000; // --reset-after
// V8's memory reducer runs a GC in an idle process about 8 s after its start-up allocations (~30 ms of CPU in a
// primary): the measured runs begin once every contender has been up this long, so that it is not counted as load.
const START_SETTLE_MS = 10_000;

// ---- arguments ---------------------------------------------------------------------------------

const USAGE =
  'Usage: node bench/http.js [--quick] [--write] [--duration S] [--rounds N] [--warmup S] [--connections C]\n' +
  '                          [--threads T] [--workers N] [--startup-rounds N] [--fault-rounds N] [--no-faults]\n' +
  '                          [--only id,id] [--workloads id,id|none] [--reset-after MS] [--against DIR,…] [--verbose]\n';

function parseArgs(argv) {
  const options = {
    quick: false, write: false, faults: true, verbose: false, only: null, workloads: null, against: [],
    duration: 5, rounds: 3, warmup: 2, connections: 50, threads: 2, workers: defaultWorkers(), startupRounds: 5, faultRounds: 3,
    resetAfter: RESET_AFTER_MS,
  };
  const given = new Set();
  const numbers = {
    '--duration': ['duration', 1], '--rounds': ['rounds', 1], '--warmup': ['warmup', 0], '--connections': ['connections', 1],
    '--threads': ['threads', 1], '--workers': ['workers', 2], '--startup-rounds': ['startupRounds', 1], '--fault-rounds': ['faultRounds', 1],
    '--reset-after': ['resetAfter', 0],
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].includes('=') ? [argv[i].slice(0, argv[i].indexOf('=')), argv[i].slice(argv[i].indexOf('=') + 1)] : [argv[i], undefined];
    if (flag === '--quick') options.quick = true;
    else if (flag === '--write') options.write = true;
    else if (flag === '--no-faults') options.faults = false;
    else if (flag === '--verbose') options.verbose = true;
    else if (flag === '--only') options.only = (inline ?? argv[++i] ?? '').split(',').filter(Boolean);
    else if (flag === '--against') options.against.push(...(inline ?? argv[++i] ?? '').split(',').filter(Boolean).map((dir) => path.resolve(dir)));
    else if (flag === '--workloads') options.workloads = (inline ?? argv[++i] ?? '').split(',').filter((id) => id && id !== 'none');
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else if (numbers[flag]) {
      const [key, min] = numbers[flag];
      const value = Number(inline ?? argv[++i]);
      if (!Number.isFinite(value) || value < min) throw new Error(`${flag} needs a number ≥ ${min}`);
      if (!Number.isInteger(value)) throw new Error(`${flag} needs a whole number (wrk takes whole seconds)`);
      options[key] = value;
      given.add(key);
    } else {
      throw new Error(`unknown argument: ${argv[i]}\n${USAGE}`);
    }
  }
  if (options.quick) {
    const quick = { duration: 1, rounds: 2, warmup: 1, startupRounds: 1, faultRounds: 1 };
    for (const [key, value] of Object.entries(quick)) if (!given.has(key)) options[key] = value;
  }
  if (options.threads > options.connections) options.threads = options.connections;
  if (options.workloads) {
    const unknown = options.workloads.filter((id) => !WORKLOADS.some((workload) => workload.id === id));
    if (unknown.length > 0) throw new Error(`unknown workload ${unknown.join(', ')}; known: ${WORKLOADS.map((w) => w.id).join(', ')}`);
  }
  for (const dir of options.against) {
    if (!fs.existsSync(path.join(dir, 'lib', 'index.js'))) throw new Error(`--against ${dir}: no lib/index.js there (build it first: npx tsc -p tsconfig.build.json)`);
  }
  if (options.against.length > 0 && options.write) throw new Error('--against measures another checkout: not with --write (RESULTS.md is this checkout\'s)');
  if (options.only) {
    const known = contenderList(options);
    const unknown = options.only.filter((id) => !known.some((contender) => contender.id === id));
    if (unknown.length > 0) throw new Error(`unknown contender ${unknown.join(', ')}; known: ${known.map((c) => c.id).join(', ')}`);
  }
  return options;
}

function defaultWorkers() {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

// ---- small helpers -----------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

const median = (values) => percentile([...values].filter(Number.isFinite).sort((a, b) => a - b), 50);
const sum = (values) => values.reduce((total, value) => total + value, 0);

function log(line) {
  process.stderr.write(`${line}\n`);
}

async function waitFor(check, timeoutMs, what, intervalMs = 5) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// ---- /proc: CPU time and memory ----------------------------------------------------------------

const CLK_TCK = (() => {
  try {
    return Number(childProcess.execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** The process's state and start time (clock ticks since boot), or null when there is no such process. */
function procStat(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0], start: Number(fields[19]) };
  } catch {
    return null;
  }
}

/** Whether the process an app's stats entry describes still runs: same pid and start time (pids get reused), not a zombie. */
function alive(entry) {
  const stat = procStat(entry.pid);
  return stat !== null && stat.state !== 'Z' && (entry.start === null || entry.start === stat.start);
}

/** CPU time of a whole process in ms: the threads' schedstat (ns), else utime + stime (clock ticks). */
function cpuMs(pid) {
  if (!pid) return null;
  try {
    let total = 0;
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
      } catch {
        // the thread ended meanwhile
      }
    }
    return total;
  } catch {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
    } catch {
      return null;
    }
  }
}

/** The machine's CPU counters (ticks): total, idle (idle + iowait), softirq. */
function machineCpu() {
  const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { total: sum(fields.slice(0, 8)), idle: fields[3] + fields[4], softirq: fields[6] };
}

function rssMb(pid) {
  try {
    const kb = /^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? null : Number(kb) / 1024;
  } catch {
    return null;
  }
}

// ---- wrk ---------------------------------------------------------------------------------------

function haveWrk() {
  return childProcess.spawnSync('wrk', ['--version'], { stdio: 'ignore', timeout: 5000 }).error === undefined;
}

/** A tool the benchmark cannot run without: reported as one line, without a stack. */
class MissingTool extends Error {}

/** apt-get, bounded (no prompt, no stdin, at most APT_TIMEOUT_MS), so a broken mirror cannot hang the benchmark. */
const APT_TIMEOUT_MS = 300000;
function aptGet(...args) {
  return childProcess.spawnSync('apt-get', args, {
    stdio: ['ignore', 'inherit', 'inherit'], timeout: APT_TIMEOUT_MS, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

/** wrk, or an explanation of how to get it. As root on Debian/Ubuntu it installs the `wrk` package. */
function ensureWrk() {
  if (haveWrk()) return;
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const apt = childProcess.spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
  if (root && apt) {
    log('bench: wrk is missing; installing it: apt-get install -y wrk');
    if (aptGet('install', '-y', '-qq', 'wrk').status !== 0) {
      log('bench: apt-get install failed; running apt-get update first');
      aptGet('update', '-qq');
      aptGet('install', '-y', '-qq', 'wrk');
    }
    if (haveWrk()) return;
  }
  throw new MissingTool(
    'wrk (the HTTP load generator) is not installed. Install it and re-run: `sudo apt-get install wrk` (Debian, Ubuntu), ' +
      '`sudo dnf install wrk` (Fedora), `brew install wrk` (macOS), or build it from its source.',
  );
}

function wrkArgs({ path: urlPath, close, seconds, port, threads, connections }) {
  const args = ['-t', String(threads), '-c', String(connections), '-d', `${seconds}s`, '--latency', '-s', rel(path.join(__dirname, 'wrk-latency.lua'))];
  if (close) args.push('-H', 'Connection: close');
  args.push(`http://${HOST}:${port}${urlPath}`);
  return args;
}

function shellQuote(arg) {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

const toMs = (value, unit) => Number(value) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000 }[unit] ?? NaN);

function parseWrk(output) {
  const number = (re) => {
    const match = re.exec(output);
    return match ? Number(match[1]) : 0;
  };
  const latency = (p) => {
    const match = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(output);
    return match ? toMs(match[1], match[2]) : NaN;
  };
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  if (!rps) throw new Error(`could not read wrk's output:\n${output}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const errors = {
    connect: socket ? Number(socket[1]) : 0,
    read: socket ? Number(socket[2]) : 0,
    write: socket ? Number(socket[3]) : 0,
    timeout: socket ? Number(socket[4]) : 0,
    non2xx: number(/Non-2xx or 3xx responses:\s+(\d+)/),
  };
  return {
    rps: Number(rps[1]),
    requests: number(/^\s*(\d+) requests in/m),
    p50: latency(50),
    p99: latency(99),
    // from bench/wrk-latency.lua (wrk's --latency stops at 99%)
    p999: number(/^PERCENTILE 99\.9 (\d+)$/m) / 1000,
    errors,
    failed: errors.connect + errors.read + errors.write + errors.timeout + errors.non2xx,
  };
}

/** Starts wrk. `stop()` ends an open-ended run with SIGINT (wrk then prints its summary as usual). */
function startWrk(spec) {
  const args = wrkArgs(spec);
  const child = childProcess.spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.wrk.add(child);
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const done = new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      live.wrk.delete(child);
      if (code !== 0) reject(new Error(`wrk ${args.join(' ')} exited with ${signal ?? code}:\n${output}`));
      else resolve(parseWrk(output));
    });
  });
  done.catch(() => {});
  const guard = setTimeout(() => child.kill('SIGKILL'), (spec.seconds + 20) * 1000);
  done.finally(() => clearTimeout(guard)).catch(() => {});
  return {
    pid: child.pid,
    args,
    done,
    stop() {
      child.kill('SIGINT');
      return done;
    },
  };
}

// ---- the CPU-heavy handler's calibration -------------------------------------------------------

/**
 * Hash iterations that take CPU_TARGET_MS of CPU here, measured once: 200 ms of warm-up, then the median CPU time
 * (not wall time: another process taking the core does not count) of 12 batches.
 */
function calibrateHash() {
  const warmUntil = Date.now() + 200;
  while (Date.now() < warmUntil) hash(20);
  const batch = 200;
  const perIteration = [];
  for (let i = 0; i < 12; i++) {
    const before = process.cpuUsage();
    hash(batch);
    const used = process.cpuUsage(before);
    perIteration.push((used.user + used.system) / 1000 / batch);
  }
  const ms = median(perIteration);
  return { iterations: Math.max(1, Math.round(CPU_TARGET_MS / ms)), perIterationUs: ms * 1000 };
}

// ---- contenders --------------------------------------------------------------------------------

const node = process.execPath;
const rel = (file) => path.relative(ROOT, file);

/**
 * Each contender: how to start it (a command, or the bare processes' own spawning), whether it has a primary
 * and a supervisor that handles kill -9 / SIGHUP / SIGTTIN / SIGTTOU.
 */
/** prefork through supervise() with a `balance` mode (PREFORK_BALANCE), so reuseport sockets; no fault runs. */
function balanceContender(mode, color, { optIn = false } = {}) {
  return {
    id: `prefork-${mode}`, label: `prefork supervise(), balance: '${mode}'`, short: `prefork ${mode}`, color, primary: true, faults: [], optIn, balance: mode,
    command: (workers, options) => ({ args: [rel(path.join(APPS, 'prefork-api.js'))], env: { BENCH_RESET_AFTER: String(options.resetAfter), PREFORK_BALANCE: mode } }),
  };
}

const CONTENDERS = [
  {
    id: 'single', label: 'single process', short: 'single', color: '#9e9e9e', single: true, primary: false, faults: [],
    command: () => ({ args: [rel(path.join(APPS, 'server.js'))], env: {} }),
  },
  {
    id: 'cluster-rr', label: 'node:cluster round-robin', short: 'cluster RR', color: '#e57373', primary: true, faults: ['kill'],
    command: () => ({ args: [rel(path.join(APPS, 'cluster.js'))], env: { BENCH_SCHED: 'rr' } }),
  },
  {
    id: 'cluster-none', label: 'node:cluster SCHED_NONE', short: 'cluster NONE', color: '#ffb74d', primary: true, faults: [],
    command: () => ({ args: [rel(path.join(APPS, 'cluster.js'))], env: { BENCH_SCHED: 'none' } }),
  },
  // The defaults: one accept queue every worker takes from when it is ready (sockets: 'shared').
  {
    id: 'prefork-api', label: 'prefork supervise()', short: 'prefork API', color: '#1e88e5', primary: true, faults: ['kill', 'reload', 'scale'],
    command: (workers, options) => ({ args: [rel(path.join(APPS, 'prefork-api.js'))], env: { BENCH_RESET_AFTER: String(options.resetAfter) } }),
  },
  // A socket per worker, each connection given to one by the kernel's hash on its SYN (the default before 0.2):
  // what per-worker queues cost in the tail, and what they save in CPU per connection with many workers.
  balanceContender('hash', '#00acc1'),
  // Only with --only: from 127.0.0.1 alone 'client-ip' sends every connection to one worker (one client address),
  // which measures nothing but that.
  balanceContender('client-ip', '#8e24aa', { optIn: true }),
  {
    id: 'prefork-register', label: 'prefork -r prefork/register', short: 'prefork -r', color: '#3949ab', primary: true, faults: ['kill', 'reload', 'scale'],
    command: (workers, options) => ({
      args: ['-r', 'prefork/register', rel(path.join(APPS, 'server.js'))],
      env: { PREFORK_WORKERS: String(workers), PREFORK_RESTART_RESET_AFTER: String(options.resetAfter) },
    }),
  },
  {
    id: 'bare', label: 'bare SO_REUSEPORT processes', short: 'bare reuseport', color: '#43a047', primary: false, faults: [], bare: true,
    command: () => ({ args: [rel(path.join(APPS, 'server.js'))], env: { BENCH_LISTEN_FD: '3' } }),
  },
];

/** prefork-api and prefork-register as each --against checkout runs them: its own bench apps and lib/. */
function contenderList(options) {
  const fromCheckouts = options.against.flatMap((dir, i) => ['prefork-api', 'prefork-register'].map((id) => {
    const own = CONTENDERS.find((contender) => contender.id === id);
    return { ...own, id: `${id}@${i + 1}`, label: `${own.label} @ ${dir}`, short: `${own.short} @${i + 1}`, color: '#757575', faults: [], root: dir };
  }));
  return [...CONTENDERS, ...fromCheckouts];
}

const WORKLOADS = [
  { id: 'keepalive', label: 'hello world, keep-alive', short: 'hello world, keep-alive', path: '/', close: false },
  { id: 'close', label: 'hello world, `Connection: close`', short: 'hello world, Connection: close', path: '/', close: true },
  { id: 'cpu', label: 'CPU-heavy (~0.5 ms of SHA-256), keep-alive', short: 'CPU-heavy (0.5 ms/request)', path: '/cpu', close: false },
  { id: 'cpu-close', label: 'CPU-heavy (~0.5 ms of SHA-256), `Connection: close`', short: 'CPU-heavy, Connection: close', path: '/cpu', close: true },
  { id: 'json', label: '4 KB JSON, keep-alive', short: '4 KB JSON, keep-alive', path: '/json', close: false },
];

// Everything started, so that an error or Ctrl-C still stops it all.
const live = { instances: new Set(), wrk: new Set() };

let statsRoot = null;
let instanceCounter = 0;

class Instance {
  constructor(contender, options, hashIterations) {
    this.contender = contender;
    this.options = options;
    this.workers = contender.single ? 1 : options.workers;
    this.statsDir = path.join(statsRoot, `${contender.id}-${++instanceCounter}`);
    fs.mkdirSync(this.statsDir);
    this.env = {
      ...baseEnv(),
      BENCH_HOST: HOST,
      BENCH_WORKERS: String(this.workers),
      BENCH_STATS_DIR: this.statsDir,
      BENCH_HASH_ITERATIONS: String(hashIterations),
    };
    this.events = [];
    this.eventWaiters = new Set();
    this.stderrTail = [];
    this.child = null; // the process we started (primary or single process)
    this.bareChildren = [];
    this.exited = null;
    this.loadEndedAt = 0;
  }

  get primaryPid() {
    return this.contender.primary ? this.child.pid : null;
  }

  /** Spawns the contender and resolves with the ms until every worker answered (distinct pids on /pid). */
  async start() {
    const { contender } = this;
    const { args, env } = contender.command(this.workers, this.options);
    Object.assign(this.env, env);
    live.instances.add(this);
    if (contender.bare) {
      // No supervisor: one SO_REUSEPORT socket per process, made here, each mapped as fd 3 into its process.
      const began = nowMs();
      const sockets = [await prefork.createListenSocket({ host: HOST, port: 0 })];
      this.port = sockets[0].port;
      for (let i = 1; i < this.workers; i++) sockets.push(await prefork.createListenSocket({ host: HOST, port: this.port }));
      for (const socket of sockets) {
        this.bareChildren.push(prefork.spawn({ file: node, args: [node, ...args], env: { ...this.env }, cwd: ROOT, fds: { 3: socket.fd } }));
        fs.closeSync(socket.fd); // the processes hold the only copies: nothing else is in the way
      }
      this.exited = Promise.all(this.bareChildren.map((child) => child.exited));
      return this.waitForWorkers(began);
    }
    this.port = await freePort();
    this.env.BENCH_PORT = String(this.port);
    const began = nowMs();
    this.child = childProcess.spawn(node, args, { cwd: this.contender.root ?? ROOT, env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exitInfo = null;
    this.exited.then((info) => (this.exitInfo = info));
    let buffer = '';
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        this.onLine(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
      }
    });
    return this.waitForWorkers(began);
  }

  commandLine() {
    const { args, env } = this.contender.command(this.workers, this.options);
    if (this.contender.bare) {
      return `${this.workers} × \`BENCH_LISTEN_FD=3 node ${args.join(' ')}\`, each spawned with prefork.spawn() holding its own ` +
        'prefork.createListenSocket() socket as fd 3 (their parent, the harness, does nothing else: no supervisor)';
    }
    const vars = Object.entries({ ...env, BENCH_WORKERS: this.contender.single ? undefined : String(this.workers) })
      .filter(([, value]) => value !== undefined)
      .map(([key, value]) => `${key}=${value}`);
    return `\`${[...vars, 'BENCH_PORT=<port>', 'node', ...args].join(' ')}\`${this.contender.root ? ` in ${this.contender.root}` : ''}`;
  }

  onLine(line) {
    this.stderrTail.push(line);
    if (this.stderrTail.length > 50) this.stderrTail.shift();
    if (this.options.verbose) log(`[${this.contender.id}] ${line}`);
    let event = null;
    let match;
    if ((match = /^bench-event (.*)$/.exec(line))) event = JSON.parse(match[1]);
    else if (/^prefork: reload done/.test(line)) event = { event: 'reload' };
    else if ((match = /^prefork: scaled from (\d+) to (\d+) workers/.exec(line))) event = { event: 'scale', from: Number(match[1]), to: Number(match[2]) };
    else if ((match = /^prefork: worker \d+ restarted as pid (\d+)/.exec(line))) event = { event: 'restart', pid: Number(match[1]) };
    if (!event) return;
    event.at = nowMs();
    this.events.push(event);
    for (const waiter of this.eventWaiters) waiter(event);
  }

  /** Resolves with the first event after `since` that `test` accepts. */
  waitEvent(test, since, what) {
    const found = this.events.find((event) => event.at >= since && test(event));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.eventWaiters.delete(waiter);
        reject(new Error(`${this.contender.id}: no ${what} within ${EVENT_TIMEOUT_MS} ms; its stderr (last lines):\n${this.stderrTail.slice(-12).join('\n')}`));
      }, EVENT_TIMEOUT_MS);
      const waiter = (event) => {
        if (event.at < since || !test(event)) return;
        clearTimeout(timer);
        this.eventWaiters.delete(waiter);
        resolve(event);
      };
      this.eventWaiters.add(waiter);
      this.exited.then((info) => {
        if (!this.eventWaiters.delete(waiter)) return;
        clearTimeout(timer);
        reject(new Error(`${this.contender.id} exited (${JSON.stringify(info)}) while waiting for ${what}; its stderr (last lines):\n${this.stderrTail.slice(-12).join('\n')}`));
      });
    });
  }

  /** Probes /pid over new connections (two at a time) until `workers` distinct pids answered. */
  async waitForWorkers(began) {
    const seen = new Set();
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (seen.size < this.workers) {
      if (this.exitInfo) throw new Error(`${this.contender.id} exited (${JSON.stringify(this.exitInfo)}) while starting:\n${this.stderrTail.join('\n')}`);
      if (Date.now() > deadline) throw new Error(`${this.contender.id}: not all ${this.workers} workers answered within ${START_TIMEOUT_MS} ms (saw ${seen.size})`);
      const answers = await Promise.all([this.probe(), this.probe()]);
      for (const pid of answers) if (pid) seen.add(pid);
      if (answers.includes(null)) await sleep(2);
    }
    return nowMs() - began;
  }

  probe() {
    return new Promise((resolve) => {
      const request = http.get({ host: HOST, port: this.port, path: '/pid', agent: false, timeout: 2000 }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve(Number(body) || null));
        response.on('error', () => resolve(null));
      });
      request.on('timeout', () => request.destroy());
      request.on('error', () => resolve(null));
    });
  }

  /** The counters every app process of this instance wrote, by pid. */
  readStats() {
    const stats = new Map();
    let files = [];
    try {
      files = fs.readdirSync(this.statsDir);
    } catch {
      return stats;
    }
    for (const file of files) {
      if (!file.endsWith('.json')) continue;
      try {
        const entry = JSON.parse(fs.readFileSync(path.join(this.statsDir, file), 'utf8'));
        stats.set(entry.pid, entry);
      } catch {
        // being replaced this instant: the next read has it
      }
    }
    return stats;
  }

  /** Pids of the app processes alive now (workers; the single process itself). */
  workerPids() {
    return this.liveWorkers().map((entry) => entry.pid);
  }

  /** Stats entries of the app processes alive now. */
  liveWorkers() {
    return [...this.readStats().values()].filter(alive);
  }

  /** Graceful stop: SIGTERM to the primary (or to each process), SIGKILL after STOP_TIMEOUT_MS. Nothing may survive. */
  async stop() {
    const workers = this.liveWorkers();
    const targets = this.contender.bare ? this.bareChildren : [this.child];
    for (const target of targets) target.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const target of targets) target.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
    // Workers go with their primary (prefork drains them; cluster's disconnect). Make sure, then clean up.
    try {
      await waitFor(() => workers.every((entry) => !alive(entry)), 5000, 'workers to exit', 20);
    } catch {
      for (const entry of workers) if (alive(entry)) process.kill(entry.pid, 'SIGKILL');
    }
    live.instances.delete(this);
    fs.rmSync(this.statsDir, { recursive: true, force: true });
  }

  /** Kills everything at once (on an error or Ctrl-C). */
  killNow() {
    for (const pid of this.workerPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    for (const child of this.bareChildren) child.kill('SIGKILL');
  }
}

function baseEnv() {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('PREFORK_') || key.startsWith('BENCH_') || key === 'NODE_CLUSTER_SCHED_POLICY') delete env[key];
  return env;
}

// ---- measured runs -----------------------------------------------------------------------------

/** One wrk run against an instance, with the spread over its workers and the CPU of everyone involved. */
async function measure(instance, workload, seconds, options) {
  await sleep(instance.loadEndedAt + STATS_SETTLE_MS - nowMs()); // its counters must show its last run
  const before = instance.readStats();
  const workers = instance.workerPids();
  const cpuBefore = { primary: cpuMs(instance.primaryPid), workers: sum(workers.map((pid) => cpuMs(pid) ?? 0)), machine: machineCpu() };
  const began = nowMs();
  const wrk = startWrk({ path: workload.path, close: workload.close, seconds, port: instance.port, threads: options.threads, connections: options.connections });
  const wrkCpuAt = (async () => {
    // wrk's own CPU, read just before it exits (its counters vanish with it)
    await sleep(Math.max(0, seconds * 1000 - 150));
    return cpuMs(wrk.pid);
  })();
  const result = await wrk.done;
  const elapsed = nowMs() - began;
  const cpuAfter = { primary: cpuMs(instance.primaryPid), workers: sum(workers.map((pid) => cpuMs(pid) ?? 0)), machine: machineCpu() };
  const wrkCpu = await wrkCpuAt;
  instance.loadEndedAt = nowMs();
  await sleep(STATS_SETTLE_MS);
  const after = instance.readStats();
  const perWorker = workers.map((pid) => ({
    pid,
    requests: (after.get(pid)?.requests ?? 0) - (before.get(pid)?.requests ?? 0),
    connections: (after.get(pid)?.connections ?? 0) - (before.get(pid)?.connections ?? 0),
  }));
  const ticks = cpuAfter.machine.total - cpuBefore.machine.total;
  const cores = os.cpus().length;
  const measured = {
    ...result,
    perWorker,
    cpu: {
      primary: instance.primaryPid ? (cpuAfter.primary - cpuBefore.primary) / elapsed : null,
      workers: (cpuAfter.workers - cpuBefore.workers) / elapsed,
      // from wrk's start to the sample just before its end: the same rate over (nearly) the same time
      wrk: wrkCpu === null ? null : wrkCpu / Math.max(1, seconds * 1000 - 150),
      idle: ticks > 0 ? ((cpuAfter.machine.idle - cpuBefore.machine.idle) / ticks) * cores : null,
      softirq: ticks > 0 ? ((cpuAfter.machine.softirq - cpuBefore.machine.softirq) / ticks) * cores : null,
    },
  };
  const { cpu } = measured;
  // Whatever else ran meanwhile (another test suite…): busy time that is not ours, nor softirq. Approximate (kernel
  // threads, the harness itself), but a large figure means the run was disturbed.
  cpu.rest = cpu.idle === null ? null : Math.max(0, cores - cpu.idle - cpu.workers - (cpu.primary ?? 0) - (cpu.wrk ?? 0) - cpu.softirq);
  return measured;
}

/** Fault runs under open-ended `Connection: close` (or keep-alive) load, stopped 1 s (--quick: 0.5 s) after the fault settled. */
async function faultRun(instance, kind, close, options) {
  const wrk = startWrk({ path: '/', close, seconds: 300, port: instance.port, threads: options.threads, connections: options.connections });
  const figures = {};
  const settle = options.quick ? 500 : 1000; // load before the fault and after it has settled
  try {
    await sleep(settle);
    if (kind === 'kill') {
      // The longest-lived worker (stable for more than --reset-after), checked just now: its pid and start time.
      const [victim] = instance.liveWorkers().sort((a, b) => a.start - b.start).map((entry) => entry.pid);
      const killedAt = Date.now();
      process.kill(victim, 'SIGKILL');
      const replacement = await waitFor(
        () => [...instance.readStats().values()].find((entry) => entry.pid !== victim && entry.listeningAt !== null && entry.listeningAt >= killedAt),
        EVENT_TIMEOUT_MS,
        `a replacement for pid ${victim}`,
      );
      figures.respawnMs = replacement.listeningAt - killedAt;
    } else if (kind === 'reload') {
      const began = nowMs();
      process.kill(instance.primaryPid, 'SIGHUP');
      const done = await instance.waitEvent((event) => event.event === 'reload', began, 'reload');
      figures.durationMs = done.at - began;
    } else if (kind === 'scale') {
      const workers = instance.workers;
      let began = nowMs();
      process.kill(instance.primaryPid, 'SIGTTIN');
      let done = await instance.waitEvent((event) => event.event === 'scale' && event.to === workers + 1, began, `scale to ${workers + 1}`);
      figures.upMs = done.at - began;
      await sleep(1000);
      began = nowMs();
      process.kill(instance.primaryPid, 'SIGTTOU');
      done = await instance.waitEvent((event) => event.event === 'scale' && event.to === workers, began, `scale to ${workers}`);
      figures.downMs = done.at - began;
    }
    await sleep(settle);
  } catch (error) {
    await wrk.stop().catch(() => {});
    throw error;
  }
  const result = await wrk.stop();
  return { ...figures, requests: result.requests, failed: result.failed, errors: result.errors, p99: result.p99 };
}

function memory(instance) {
  const primary = instance.primaryPid ? rssMb(instance.primaryPid) : null;
  const workers = instance.workerPids().map(rssMb).filter((value) => value !== null);
  return { primary, workerMean: workers.length ? sum(workers) / workers.length : null, total: (primary ?? 0) + sum(workers), count: workers.length };
}

// ---- the run -----------------------------------------------------------------------------------

async function run(options) {
  const contenders = contenderList(options).filter((contender) => (options.only ? options.only.includes(contender.id) : !contender.optIn));
  const workloads = WORKLOADS.filter((workload) => !options.workloads || options.workloads.includes(workload.id));
  const calibration = calibrateHash();
  log(`bench: ${contenders.length} contenders × ${workloads.length} workloads, ${options.workers} workers each; ` +
    `${options.rounds} rounds of ${options.duration} s; /cpu hashes ${calibration.iterations} × SHA-256 (~${CPU_TARGET_MS} ms)`);

  const startup = new Map(contenders.map((contender) => [contender.id, []]));
  // Order A B C … then … C B A, so that drift over the run hits every contender alike.
  const order = (round) => (round % 2 === 0 ? contenders : [...contenders].reverse());

  // Start-up alone, before the load: start, every worker answers, stop.
  for (let round = 0; round < options.startupRounds - 1; round++) {
    for (const contender of order(round)) {
      const instance = new Instance(contender, options, calibration.iterations);
      startup.get(contender.id).push(await instance.start());
      await instance.stop();
    }
  }
  log(`bench: start-up measured (${options.startupRounds - 1} separate rounds); starting every contender for the load runs`);

  const instances = new Map();
  for (const contender of order(options.startupRounds - 1)) {
    const instance = new Instance(contender, options, calibration.iterations);
    startup.get(contender.id).push(await instance.start());
    instances.set(contender.id, instance);
  }
  const settledAt = nowMs() + START_SETTLE_MS; // the last contender has just started
  await sleep(1000);
  const idleMemory = new Map(contenders.map((contender) => [contender.id, memory(instances.get(contender.id))]));

  const results = new Map(); // workload id -> contender id -> runs
  for (const workload of workloads) {
    const byContender = new Map(contenders.map((contender) => [contender.id, []]));
    results.set(workload.id, byContender);
    if (options.warmup > 0) {
      for (const contender of contenders) {
        const instance = instances.get(contender.id);
        await startWrk({ path: workload.path, close: workload.close, seconds: options.warmup, port: instance.port, threads: options.threads, connections: options.connections }).done;
        instance.loadEndedAt = nowMs();
      }
    }
    await sleep(settledAt - nowMs());
    for (let round = 0; round < options.rounds; round++) {
      for (const contender of order(round)) {
        const result = await measure(instances.get(contender.id), workload, options.duration, options);
        byContender.get(contender.id).push(result);
        log(`bench: ${workload.id} round ${round + 1} ${contender.id}: ${Math.round(result.rps)} req/s, p99 ${result.p99.toFixed(1)} ms, ` +
          `failed ${result.failed}, primary CPU ${result.cpu.primary === null ? '-' : `${(result.cpu.primary * 100).toFixed(2)}%`}`);
      }
    }
  }
  const loadedMemory = new Map(contenders.map((contender) => [contender.id, memory(instances.get(contender.id))]));

  const faults = new Map(contenders.map((contender) => [contender.id, { kill: [], reloadClose: [], reloadKeepalive: [], scale: [] }]));
  const data = { faultErrors: [] };
  if (options.faults) {
    for (let round = 0; round < options.faultRounds; round++) {
      for (const contender of order(round)) {
        const instance = instances.get(contender.id);
        const into = faults.get(contender.id);
        const runs = [];
        if (contender.faults.includes('kill')) runs.push(['kill', true, into.kill]);
        if (contender.faults.includes('reload')) runs.push(['reload', true, into.reloadClose], ['reload', false, into.reloadKeepalive]);
        if (contender.faults.includes('scale')) runs.push(['scale', true, into.scale]);
        for (const [kind, close, list] of runs) {
          let result;
          try {
            result = await faultRun(instance, kind, close, options);
          } catch (error) {
            // A fault run that did not finish is a finding, not the end of the benchmark: recorded, reported, and on.
            list.push({ error: error.message });
            data.faultErrors.push(`${contender.label}, ${kind} (${close ? '`Connection: close`' : 'keep-alive'}): ${error.message}`);
            log(`bench: fault ${kind} ${contender.id} did not finish: ${error.message}`);
            continue;
          }
          list.push(result);
          log(`bench: fault ${kind} (${close ? 'close' : 'keep-alive'}) ${contender.id}: failed ${result.failed} of ${result.requests} ${JSON.stringify(result.errors)} ` +
            `${JSON.stringify({ respawnMs: result.respawnMs, durationMs: result.durationMs, upMs: result.upMs, downMs: result.downMs })}`);
        }
      }
    }
  }

  const commands = new Map(contenders.map((contender) => [contender.id, instances.get(contender.id).commandLine()]));
  for (const instance of instances.values()) await instance.stop();
  return Object.assign(data, { contenders, workloads, calibration, startup, idleMemory, loadedMemory, results, faults, commands });
}

// ---- summaries and goals -----------------------------------------------------------------------

function summarize(runs) {
  const rps = runs.map((r) => r.rps);
  const perPid = new Map();
  for (const r of runs) {
    for (const w of r.perWorker) {
      const entry = perPid.get(w.pid) ?? { requests: 0, connections: 0 };
      entry.requests += w.requests;
      entry.connections += w.connections;
      perPid.set(w.pid, entry);
    }
  }
  const totals = [...perPid.values()];
  const requestTotal = sum(totals.map((t) => t.requests));
  const connectionTotal = sum(totals.map((t) => t.connections));
  const shares = (key, total) => (total > 0 ? totals.map((t) => t[key] / total) : []);
  const cpu = (key) => median(runs.map((r) => r.cpu[key]).filter((value) => value !== null));
  const perRequestUs = median(runs.map((r) => (r.rps > 0 ? ((r.cpu.workers + (r.cpu.primary ?? 0)) / r.rps) * 1e6 : NaN)));
  return {
    n: runs.length,
    rps: median(rps),
    min: Math.min(...rps),
    max: Math.max(...rps),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    p999: median(runs.map((r) => r.p999)),
    failed: sum(runs.map((r) => r.failed)),
    requests: sum(runs.map((r) => r.requests)),
    requestShares: shares('requests', requestTotal),
    connectionShares: shares('connections', connectionTotal),
    cpu: { primary: cpu('primary'), workers: cpu('workers'), wrk: cpu('wrk'), idle: cpu('idle'), softirq: cpu('softirq'), rest: cpu('rest'), perRequestUs },
  };
}

function goals(summaries, faults) {
  const rps = (workload, id) => summaries.get(workload)?.get(id)?.rps;
  const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN);
  const list = [];
  for (const id of ['prefork-api', 'prefork-register']) {
    const name = id === 'prefork-api' ? 'prefork supervise()' : 'prefork -r';
    list.push({ key: 'close-vs-rr', id, text: `\`Connection: close\`: ${name} / cluster RR`, target: '≥ 2', value: ratio(rps('close', id), rps('close', 'cluster-rr')), met: (v) => v >= 2, digits: 2 });
    list.push({ key: 'close-vs-bare', id, text: `\`Connection: close\`: ${name} / bare SO_REUSEPORT`, target: '≥ 0.98', value: ratio(rps('close', id), rps('close', 'bare')), met: (v) => v >= 0.98, digits: 2 });
    list.push({ key: 'keepalive-vs-rr', id, text: `keep-alive: ${name} / cluster RR`, target: '≥ 1', value: ratio(rps('keepalive', id), rps('keepalive', 'cluster-rr')), met: (v) => v >= 1, digits: 2 });
    list.push({ key: 'cpu-vs-single', id, text: `CPU-heavy: ${name} / single process`, target: '≥ 1.85', value: ratio(rps('cpu', id), rps('cpu', 'single')), met: (v) => v >= 1.85, digits: 2 });
    const primaryCpu = Math.max(...[...summaries.values()].map((byId) => byId.get(id)?.cpu.primary).filter(Number.isFinite));
    list.push({ key: 'primary-cpu', id, text: `${name}: primary's CPU under load (highest workload median, % of one core)`, target: '< 1%', value: primaryCpu * 100, met: (v) => v < 1, digits: 3, unit: '%' });
    const reloads = [...(faults.get(id)?.reloadClose ?? []), ...(faults.get(id)?.reloadKeepalive ?? [])];
    const unfinished = reloads.filter((r) => r.error).length;
    list.push({
      key: 'reload-failed', id, text: `${name}: failed requests during rolling reloads (${reloads.length} runs)`, target: '0',
      value: reloads.length ? sum(reloads.map((r) => r.failed ?? 0)) : NaN, met: (v) => v === 0 && unfinished === 0, digits: 0,
      unit: unfinished ? ` (${unfinished} reload${unfinished > 1 ? 's' : ''} did not finish)` : '',
    });
  }
  // Tail latency with a CPU-heavy handler and a connection per request, against node:cluster: the defaults (one
  // shared queue) must match the better cluster mode. The reuseport modes are shown for what they cost, with no goal.
  const p99 = (id) => summaries.get('cpu-close')?.get(id)?.p99;
  const bestCluster = Math.min(p99('cluster-rr') ?? NaN, p99('cluster-none') ?? NaN);
  for (const contender of CONTENDERS.filter((c) => c.id === 'prefork-api' || c.id === 'prefork-register' || c.balance)) {
    const { id } = contender;
    if (contender.optIn && !summaries.get('cpu-close')?.has(id)) continue;
    const name = contender.balance ? contender.label : `${contender.label} (defaults)`;
    const [target, met] = contender.balance ? ['(none: the cost of per-worker sockets)', () => true] : ['≤ 1.05', (v) => v <= 1.05];
    list.push({ key: 'cpu-close-p99', id, text: `CPU-heavy, \`Connection: close\`: ${name} p99 / the better cluster p99`, target, value: ratio(p99(id), bestCluster), met, digits: 2 });
    list.push({ key: 'cpu-close-vs-bare', id, text: `CPU-heavy, \`Connection: close\`: ${name} / bare SO_REUSEPORT`, target: '≥ 0.98', value: ratio(rps('cpu-close', id), rps('cpu-close', 'bare')), met: (v) => v >= 0.98, digits: 2 });
  }
  for (const goal of list) goal.ok = Number.isFinite(goal.value) ? goal.met(goal.value) : null;
  return list;
}

// ---- report ------------------------------------------------------------------------------------

const fmtInt = (value) => (Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : 'n/a');
const fmt = (value, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');
const pct = (value, digits = 0) => (Number.isFinite(value) ? `${(value * 100).toFixed(digits)}%` : 'n/a');
const ms = (value) => (Number.isFinite(value) ? `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value)} ms` : 'n/a');
const mb = (value) => (Number.isFinite(value) ? `${value.toFixed(1)} MB` : '—');

function spread(shares) {
  if (shares.length <= 1) return '—';
  return `${pct(Math.min(...shares))} / ${pct(Math.max(...shares))}`;
}

function throughputTable(data, summaries) {
  const lines = [
    '| workload | contender | req/s (median) | min – max of runs | p50 | p99 | p99.9 | spread: min / max share | primary CPU | failed |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const workload of data.workloads) {
    data.contenders.forEach((contender, i) => {
      const s = summaries.get(workload.id).get(contender.id);
      lines.push(
        `| ${i === 0 ? workload.label : ''} | ${contender.label} | **${fmtInt(s.rps)}** | ${fmtInt(s.min)} – ${fmtInt(s.max)} | ` +
          `${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.p999)} | ${spread(s.requestShares)} | ${contender.primary ? pct(s.cpu.primary, 2) : '—'} | ${s.failed} |`,
      );
    });
  }
  return lines.join('\n');
}

function cpuTable(data, summaries) {
  const cores = (value) => (Number.isFinite(value) ? value.toFixed(2) : '—');
  const lines = [
    '| workload | contender | app processes | primary | wrk | softirq | other processes | idle | server CPU per request | all CPU per request | connection share min / max |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const workload of data.workloads) {
    data.contenders.forEach((contender, i) => {
      const s = summaries.get(workload.id).get(contender.id);
      lines.push(
        `| ${i === 0 ? workload.label : ''} | ${contender.label} | ${cores(s.cpu.workers)} | ${contender.primary ? cores(s.cpu.primary) : '—'} | ` +
          `${cores(s.cpu.wrk)} | ${cores(s.cpu.softirq)} | ${cores(s.cpu.rest)} | ${cores(s.cpu.idle)} | ${fmt(s.cpu.perRequestUs, 0)} µs | ` +
          `${fmt(totalCpuPerRequestUs(s), 0)} µs | ${spread(s.connectionShares)} |`,
      );
    });
  }
  return lines.join('\n');
}

function lifecycleTable(data) {
  const done = (list) => list.filter((r) => !r.error);
  const medianOf = (list, key) => median(done(list).map((r) => r[key]));
  const failed = (list) => {
    const errors = list.length - done(list).length;
    const text = done(list).length ? `${sum(done(list).map((r) => r.failed))} of ${fmtInt(sum(done(list).map((r) => r.requests)))}` : list.length ? '' : '—';
    return errors ? `${text}${text ? ', ' : ''}**${errors} run${errors > 1 ? 's' : ''} did not finish**` : text;
  };
  const lines = [
    '| contender | start-up: all workers answer | respawn after `kill -9` | failed during `kill -9` | rolling reload | failed during reload (close) | failed during reload (keep-alive) | scale up / down | failed during scale up + down |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const contender of data.contenders) {
    const f = data.faults.get(contender.id);
    const reloads = [...f.reloadClose, ...f.reloadKeepalive];
    lines.push(
      `| ${contender.label} | ${ms(median(data.startup.get(contender.id)))} | ${f.kill.length ? ms(medianOf(f.kill, 'respawnMs')) : '—'} | ${failed(f.kill)} | ` +
        `${reloads.length ? ms(medianOf(reloads, 'durationMs')) : '—'} | ${failed(f.reloadClose)} | ${failed(f.reloadKeepalive)} | ` +
        `${f.scale.length ? `${ms(medianOf(f.scale, 'upMs'))} / ${ms(medianOf(f.scale, 'downMs'))}` : '—'} | ${failed(f.scale)} |`,
    );
  }
  return lines.join('\n');
}

function memoryTable(data) {
  const bare = data.idleMemory.get('single')?.workerMean;
  const lines = [
    '| contender | primary RSS (idle) | per app process (idle) | primary RSS (after load) | per app process (after load) | total after load | total / single process |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const singleLoaded = data.loadedMemory.get('single')?.total;
  for (const contender of data.contenders) {
    const idle = data.idleMemory.get(contender.id);
    const loaded = data.loadedMemory.get(contender.id);
    lines.push(
      `| ${contender.label} | ${mb(idle.primary)} | ${mb(idle.workerMean)} | ${mb(loaded.primary)} | ${mb(loaded.workerMean)} | ${mb(loaded.total)} | ` +
        `${Number.isFinite(singleLoaded) ? `${fmt(loaded.total / singleLoaded, 2)}×` : 'n/a'} |`,
    );
  }
  if (Number.isFinite(bare)) lines.push('', `The bare app (one plain process, idle) takes ${mb(bare)}.`);
  return lines.join('\n');
}

function goalsTable(list) {
  const lines = ['| goal | target | this run | |', '| --- | ---: | ---: | --- |'];
  for (const goal of list) {
    lines.push(`| ${goal.text} | ${goal.target} | ${Number.isFinite(goal.value) ? `${goal.value.toFixed(goal.digits)}${goal.unit ?? ''}` : 'n/a'} | ${goal.ok === null ? 'not measured' : goal.ok ? 'met' : '**missed**'} |`);
  }
  return lines.join('\n');
}

function commandLine() {
  const script = path.relative(ROOT, process.argv[1]) || process.argv[1];
  return ['node', ...process.execArgv, script, ...process.argv.slice(2)].join(' ');
}

function machine() {
  const cpus = os.cpus();
  let kernelFacts = '';
  try {
    const migrate = fs.readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').trim();
    kernelFacts = `; net.ipv4.tcp_migrate_req=${migrate}`;
  } catch {
    // not Linux ≥ 5.14
  }
  return `${cpus.length > 0 ? cpus[0].model.trim() : 'unknown CPU'}, ${cpus.length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
    `${os.platform()} ${os.release()} (${os.arch()})${kernelFacts}`;
}

function wrkVersion() {
  const result = childProcess.spawnSync('wrk', ['--version'], { encoding: 'utf8' });
  return (`${result.stdout}${result.stderr}`.split('\n')[0] || 'wrk').replace(/\s*Copyright.*$/, '').trim();
}

/** CPU per request of everything that serves it on this machine: the contender's processes, wrk, the kernel's softirq. */
function totalCpuPerRequestUs(s) {
  if (!s || !(s.rps > 0)) return NaN;
  const or0 = (value) => (Number.isFinite(value) ? value : 0);
  return ((s.cpu.workers + or0(s.cpu.primary) + or0(s.cpu.wrk) + or0(s.cpu.softirq)) / s.rps) * 1e6;
}

/** Median CPU (cores) that other processes took during the measured runs: how disturbed this run was. */
function disturbance(summaries) {
  return median([...summaries.values()].flatMap((byId) => [...byId.values()].map((s) => s.cpu.rest)));
}

/**
 * What bounds the numbers, computed from this run's CPU accounting. Notes on missed goals are shown when missed.
 * The machine is CPU-bound in every hello-world run (idle ≈ 0): throughput is then the CPU left for the server over
 * the CPU one request costs, and the load generator's share of each request is paid by every contender alike.
 */
function analysis(goalList, summaries, data) {
  const missed = new Set(goalList.filter((goal) => goal.ok === false).map((goal) => goal.key));
  const s = (workload, id) => summaries.get(workload)?.get(id);
  const cores = (value) => (Number.isFinite(value) ? value.toFixed(2) : 'n/a');
  const us = (value) => (Number.isFinite(value) ? `${Math.round(value)} µs` : 'n/a');
  const serverUs = (x) => x?.cpu.perRequestUs;
  const cpuCount = os.cpus().length;
  const notes = [];
  const other = disturbance(summaries);
  if (Number.isFinite(other) && other > 0.1) {
    notes.push(
      `- **This run was disturbed.** Other processes on the machine took ${cores(other)} cores in the median run ` +
        '(column *other processes*): every contender got less CPU than the machine has, by a different amount in ' +
        'each run, so ratios of req/s carry that noise (see min – max). The CPU per request figures are much less ' +
        'sensitive to it; the notes below lean on them.',
    );
  }
  const api = 'prefork-api';
  const close = (id) => s('close', id);
  if (close(api)) {
    notes.push(
      `- **Everything shares ${cpuCount} cores.** wrk runs on the same machine as the servers: in the \`Connection: close\` ` +
        `runs against prefork it took ${cores(close(api).cpu.wrk)} cores and the kernel's softirq time (loopback TCP) ` +
        `${cores(close(api).cpu.softirq)}, with ${cores(close(api).cpu.idle)} cores idle. So hello world on every core is ` +
        'far from 2× one process here (the workers cannot have the cores the client needs), and the CPU-heavy workload, ' +
        'where wrk needs little, is the one that shows the cores. With the load coming from another machine the ' +
        'multi-process contenders gain more.',
    );
  }
  if (close('cluster-rr') && close(api)) {
    const rr = close('cluster-rr');
    const pf = close(api);
    notes.push(
      '- **node:cluster round-robin pays per connection.** Its primary accepts every connection and passes it to a worker ' +
        `over IPC: with \`Connection: close\` the primary used ${pct(rr.cpu.primary)} of a core (prefork's: ` +
        `${pct(pf.cpu.primary, 2)}; it is not on a connection's path at all), and its workers pay to receive each handle too. ` +
        `A request cost ${us(serverUs(rr))} of server CPU under cluster RR against ${us(serverUs(pf))} under prefork ` +
        `(${fmt(serverUs(rr) / serverUs(pf), 2)}×). With keep-alive only 50 connections are handed over per run, and ` +
        `the two meet (${us(serverUs(s('keepalive', 'cluster-rr')))} against ${us(serverUs(s('keepalive', api)))}).`,
    );
    if (missed.has('close-vs-rr')) {
      const allRatio = totalCpuPerRequestUs(rr) / totalCpuPerRequestUs(pf);
      const measured = pf.rps / rr.rps;
      notes.push(
        '- **`Connection: close` ≥ 2× cluster round-robin: missed here; on this machine it hinges on the client.** ' +
          `The server side of a request costs ${fmt(serverUs(rr) / serverUs(pf), 2)}× as much CPU under cluster RR as under ` +
          'prefork. But the machine is CPU-bound and wrk and the kernel\'s softirq share its two cores, and they cost ' +
          'every contender about the same per request; counting them, a request costs everyone ' +
          `${us(totalCpuPerRequestUs(rr))} under cluster RR and ${us(totalCpuPerRequestUs(pf))} under prefork ` +
          `(${fmt(allRatio, 2)}×). The measured ratio was ${fmt(measured, 2)}×` +
          `${measured >= Math.min(allRatio, serverUs(rr) / serverUs(pf)) && measured <= Math.max(allRatio, serverUs(rr) / serverUs(pf)) ? ', between the two' : ''}. With the load ` +
          'generator on other cores the ratio tends to the server-side one. cluster RR also varies most from run to ' +
          'run (min – max): its primary is a single point every connection goes through.',
      );
    }
  }
  // How far one run of a contender strays from its median: the resolution of this run's req/s ratios.
  const stray = (x) => (x && x.rps > 0 ? Math.max(x.max - x.rps, x.rps - x.min) / x.rps : NaN);
  const abCommand = (ids, workload) =>
    `\`node bench/http.js --only ${ids.join(',')} --workloads ${workload} --rounds 8 --duration 3 --no-faults\``;
  if (missed.has('close-vs-bare') && close('bare') && close(api)) {
    notes.push(
      '- **`Connection: close` ≥ 0.98× bare SO_REUSEPORT: missed in this run.** The hot path is the same: prefork\'s ' +
        'primary is idle under load, its workers accept from the same kind of per-process SO_REUSEPORT socket and do ' +
        "nothing per connection; the one per-request addition (a `request` listener that counts served requests, one " +
        `atomic add: about 30 ns) costs no measurable CPU. Server CPU per request: prefork ${us(serverUs(close(api)))}, prefork -r ` +
        `${us(serverUs(close('prefork-register')))}, bare ${us(serverUs(close('bare')))}. Single runs strayed up to ` +
        `${pct(stray(close(api)))} (prefork) and ${pct(stray(close('bare')))} (bare) from their medians, more than the ` +
        `gap; more rounds of just these settle it: ${abCommand(['prefork-api', 'prefork-register', 'bare'], 'close')} ` +
        '(add `--against DIR` to measure another checkout alongside, before and after a change).',
    );
  }
  if (missed.has('keepalive-vs-rr')) {
    const ka = (id) => s('keepalive', id);
    notes.push(
      '- **keep-alive ≥ cluster round-robin: missed in this run.** Once the 50 connections are handed out, cluster ' +
        'RR has no primary on the path either, so it sits at the same ceiling as bare SO_REUSEPORT: ' +
        `${fmtInt(ka('cluster-rr')?.rps)} req/s against ${fmtInt(ka('bare')?.rps)} bare, ${fmtInt(ka(api)?.rps)} prefork, ` +
        `${fmtInt(ka('prefork-register')?.rps)} prefork -r; server CPU per request ${us(serverUs(ka('cluster-rr')))}, ` +
        `${us(serverUs(ka('bare')))}, ${us(serverUs(ka(api)))}, ${us(serverUs(ka('prefork-register')))}. Single runs strayed ` +
        `up to ${pct(stray(ka('cluster-rr')))} (cluster RR) and ${pct(stray(ka(api)))} (prefork) from their medians: ` +
        `which of them comes out ahead is within that. More rounds: ${abCommand(['cluster-rr', 'prefork-api', 'prefork-register', 'bare'], 'keepalive')}.`,
    );
  }
  const single = s('cpu', 'single');
  if (single && s('cpu', api)) {
    const pf = s('cpu', api);
    const left = cpuCount - (pf.cpu.wrk ?? 0) - (pf.cpu.softirq ?? 0);
    const bound = (left / single.cpu.workers) * (serverUs(single) / serverUs(pf));
    const text =
      `the single process had ${cores(single.cpu.workers)} cores (one is its limit), while wrk and softirq took ` +
      `${cores((pf.cpu.wrk ?? 0) + (pf.cpu.softirq ?? 0))} of the ${cpuCount} during prefork's runs, leaving ` +
      `${cores(left)} for its workers. With the CPU per request measured (${us(serverUs(single))} single, ${us(serverUs(pf))} ` +
      `prefork), that allows about ${fmt(bound, 2)}× here, before other processes take their share ` +
      `(${cores(pf.cpu.rest)} cores in the median prefork run); measured: ${fmt(pf.rps / single.rps, 2)}×.` +
      (single.cpu.rest > 0.1
        ? ` The single process's runs were disturbed (other processes took ${cores(single.cpu.rest)} cores and it got ` +
          `${cores(single.cpu.workers)}), which flatters the ratio; undisturbed, 2× is the limit.`
        : '') +
      (missed.has('cpu-vs-single') ? ' Getting near 2× needs the client on other cores.' : '');
    notes.push(
      missed.has('cpu-vs-single')
        ? `- **CPU-heavy ≥ 1.85× a single process: missed in this run.** ${text[0].toUpperCase()}${text.slice(1)}`
        : `- **CPU-heavy: the cores show.** ${text[0].toUpperCase()}${text.slice(1)}`,
    );
  }
  if (missed.has('primary-cpu')) {
    notes.push(
      "- **The primary's CPU went over 1% in this run.** It does no work per request or per connection (it only " +
        'answers its control channels and timers); see the *primary CPU* column for the run.',
    );
  }
  if (missed.has('reload-failed')) {
    notes.push('- **Requests failed during a rolling reload, or a reload did not finish.** The wrk error classes are in the log of the run (read: reset; connect: refused); unfinished runs are listed below.');
  }
  for (const error of data.faultErrors) notes.push(`- **A fault run did not finish:** ${error.replace(/\n/g, ' ⏎ ')}`);
  const scaleFailures = ['prefork-api', 'prefork-register'].map((id) => sum((data.faults.get(id)?.scale ?? []).map((r) => r.failed ?? 0)));
  if (scaleFailures.some((n) => n > 0)) {
    notes.push(
      "- **Scaling down resets the connections queued on the removed slot's socket** when the kernel does not migrate " +
        'them: once the leaving worker and the primary have closed it, connections the kernel had already queued there ' +
        'are reset, unless `net.ipv4.tcp_migrate_req=1` (Linux ≥ 5.14) moves them to the sockets that stay. It is 0 on ' +
        'this machine (see *Machine*). In a network namespace with it on, the same scale runs failed no request: ' +
        "`unshare -n sh -c 'ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && node bench/http.js --quick " +
        "--only prefork-api,prefork-register --workloads none'` (as root). A `kill -9` or a reload keeps the socket open, " +
        'so nothing queued there is lost; a `kill -9` loses the requests the killed worker had accepted.',
    );
  }
  return notes.join('\n');
}

function report(data, options, seconds) {
  const summaries = new Map(data.workloads.map((w) => [w.id, new Map(data.contenders.map((c) => [c.id, summarize(data.results.get(w.id).get(c.id))]))]));
  const goalList = goals(summaries, data.faults);
  const wrkCommand = (workload) => `\`wrk ${wrkArgs({ ...workload, seconds: options.duration, port: '<port>', threads: options.threads, connections: options.connections }).map(shellQuote).join(' ')}\``;
  const text = [
    '## HTTP: prefork against node:cluster, a single process and bare SO_REUSEPORT',
    '',
    'Produced by `bench/http.js`; do not edit by hand, re-run the command below instead. Chart: [results.svg](results.svg).',
    '',
    `- Command (from the package root): \`${commandLine()}\`${options.quick ? ' (quick mode: short runs, expect more noise)' : ''}`,
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${machine()}`,
    `- Node: ${process.version}; load generator: ${wrkVersion()} on the same machine, over 127.0.0.1`,
    `- Each contender runs ${options.workers} app processes (1 for the single process). Runs: ${options.rounds} measured wrk runs of ` +
      `${options.duration} s per contender and workload after one ${options.warmup} s warm-up, contenders alternated ` +
      `(A B C … then … C B A); start-up over ${options.startupRounds} starts; fault figures over ${options.faultRounds} run(s) each. ` +
      `Total time ${seconds.toFixed(0)} s.`,
    `- The CPU-heavy handler hashes ${data.calibration.iterations} × SHA-256 of 16 KB per request, calibrated once at start ` +
      `(${fmt(data.calibration.perIterationUs, 2)} µs of CPU each: ${CPU_TARGET_MS} ms).`,
    ...(Number.isFinite(disturbance(summaries)) && disturbance(summaries) > 0.1
      ? [`- **Disturbed:** other processes took ${disturbance(summaries).toFixed(2)} of the ${os.cpus().length} cores in the median run (see *Where the CPU went*); re-run on a quiet machine for clean ratios.`]
      : []),
    '',
    '### Goals',
    '',
    goalsTable(goalList),
    '',
    '### Throughput and latency',
    '',
    throughputTable(data, summaries),
    '',
    'req/s is the median of the runs; p50 / p99 / p99.9 are wrk\'s latency percentiles (p99.9 through bench/wrk-latency.lua), ' +
      'median of the runs. *Spread* is the smallest ' +
      'and largest share of the requests any one app process served (50% / 50% is even for two). *Primary CPU* is the ' +
      "primary process's CPU time during the runs (all its threads, from /proc) over the wall time, in % of one core. " +
      '*Failed* counts wrk\'s socket errors (connect, read, write, timeout) and non-2xx responses over all runs.',
    '',
    '### Where the CPU went (cores, median of the runs)',
    '',
    cpuTable(data, summaries),
    '',
    'Cores used during the runs, from /proc: the contender\'s app processes (all threads), its primary, wrk, the ' +
      "kernel's softirq time (most of loopback TCP's work), *other processes* (busy time left over: other work on the " +
      'machine, approximate) and idle time. *Server CPU per request* is (app processes + primary) ÷ req/s; *all CPU per ' +
      'request* adds wrk and softirq: on a CPU-bound machine throughput ratios follow it.',
    '',
    '### Start-up, faults and rolling reload',
    '',
    lifecycleTable(data),
    '',
    'Start-up: from spawning the command to every worker having answered `GET /pid` (distinct pids over new connections). ' +
      'The fault runs put the same `Connection: close` load as above (50 connections) on the contender (and a keep-alive ' +
      `load for the second reload column); ${options.quick ? '0.5' : '1'} s in, a worker is \`kill -9\`ed (respawn: from the kill to the replacement ` +
      'listening), or the primary gets `SIGHUP` (rolling reload: until the supervisor reports it done), or `SIGTTIN` then ' +
      `1 s later \`SIGTTOU\` (scale: until the supervisor reports each done); the load goes on ${options.quick ? '0.5' : '1'} s after that. *Failed* is ` +
      "wrk's socket errors plus non-2xx responses of the whole run, of all its requests. node:cluster's primary refills a " +
      'killed worker with `cluster.fork()` (as cluster apps do); it has no reload or scaling of its own. The prefork ' +
      `contenders run with \`restart.resetAfter\` = ${options.resetAfter} ms (\`PREFORK_RESTART_RESET_AFTER\`) so that each ` +
      'kill, seconds apart, is a first crash (restarted at once on the same socket) rather than a crash loop (backoff, ' +
      'socket closed meanwhile); the longest-running worker is the one killed.',
    '',
    '### Memory',
    '',
    memoryTable(data),
    '',
    'RSS from /proc/PID/status; idle: 1 s after start-up; after load: after the throughput runs, before the fault runs.',
    '',
    '### What bounds these numbers',
    '',
    analysis(goalList, summaries, data),
    '',
    '### Commands',
    '',
    ...data.contenders.map((contender) => `- ${contender.label}: ${data.commands.get(contender.id)}`),
    '',
    `Every contender also gets \`BENCH_HOST=${HOST}\`, \`BENCH_HASH_ITERATIONS=${data.calibration.iterations}\` and ` +
      '`BENCH_STATS_DIR` (where each app process writes its counters). ' +
      'Every app process serves [bench/apps/handler.js](apps/handler.js) (`/`, `/cpu`, `/json`, `/pid`). ' +
      'wrk, per workload (`<port>`: the contender\'s):',
    '',
    ...data.workloads.map((workload) => `- ${workload.label}: ${wrkCommand(workload)}`),
    '',
  ].join('\n');
  return { text, summaries, goalList };
}

// ---- the chart ---------------------------------------------------------------------------------

function escapeXml(text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** One panel per workload (each its own scale): median req/s bars, min – max whiskers, the value above each bar. */
function chart(data, summaries, options) {
  const panelWidth = 250;
  const panelHeight = 260;
  const left = 20;
  const top = 100;
  const gap = 25;
  const barArea = panelWidth - 50;
  const workloads = data.workloads;
  const width = left * 2 + Math.max(1, workloads.length) * panelWidth + Math.max(0, workloads.length - 1) * gap;
  const height = top + panelHeight + 110;
  const contenders = data.contenders;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${left}" y="28" font-size="18" font-weight="bold">HTTP requests per second on ${os.cpus().length} cores (median of ${options.rounds} run${options.rounds > 1 ? 's' : ''}; whiskers: min – max)</text>`);
  out.push(`<text x="${left}" y="50" font-size="12" fill="#555">${escapeXml(`${machine()}, Node ${process.version}, wrk -t${options.threads} -c${options.connections} on the same machine. ${new Date().toISOString().slice(0, 10)}`)}</text>`);
  const other = disturbance(summaries);
  const note = `Each panel has its own scale; higher is better. ${options.workers} processes per contender; numbers and method: bench/RESULTS.md.` +
    (Number.isFinite(other) && other > 0.1 ? ` Disturbed run: other processes took ${other.toFixed(2)} cores.` : '');
  out.push(`<text x="${left}" y="68" font-size="12" fill="#555">${escapeXml(note)}</text>`);
  workloads.forEach((workload, w) => {
    const x0 = left + w * (panelWidth + gap);
    const stats = contenders.map((contender) => summaries.get(workload.id).get(contender.id));
    const maxValue = Math.max(...stats.map((s) => s.max).filter(Number.isFinite), 1);
    const scale = (panelHeight - 40) / (maxValue * 1.12);
    const baseY = top + panelHeight;
    const slot = barArea / contenders.length;
    out.push(`<text x="${x0 + panelWidth / 2}" y="${top - 4}" font-size="13" font-weight="bold" text-anchor="middle">${escapeXml(workload.short)}</text>`);
    out.push(`<line x1="${x0 + 25}" y1="${baseY}" x2="${x0 + 25 + barArea}" y2="${baseY}" stroke="#333"/>`);
    stats.forEach((s, c) => {
      const bx = x0 + 25 + c * slot + slot * 0.12;
      const bw = slot * 0.76;
      const h = Number.isFinite(s.rps) ? s.rps * scale : 0;
      out.push(`<rect x="${bx.toFixed(1)}" y="${(baseY - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${contenders[c].color}"><title>${escapeXml(`${contenders[c].label}: ${fmtInt(s.rps)} req/s (${fmtInt(s.min)} – ${fmtInt(s.max)})`)}</title></rect>`);
      if (Number.isFinite(s.min) && Number.isFinite(s.max)) {
        const cx = bx + bw / 2;
        const y1 = baseY - s.max * scale;
        const y2 = baseY - s.min * scale;
        out.push(`<line x1="${cx.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${cx.toFixed(1)}" y2="${y2.toFixed(1)}" stroke="#222" stroke-width="1"/>`);
        out.push(`<line x1="${(cx - 4).toFixed(1)}" y1="${y1.toFixed(1)}" x2="${(cx + 4).toFixed(1)}" y2="${y1.toFixed(1)}" stroke="#222"/>`);
        out.push(`<line x1="${(cx - 4).toFixed(1)}" y1="${y2.toFixed(1)}" x2="${(cx + 4).toFixed(1)}" y2="${y2.toFixed(1)}" stroke="#222"/>`);
      }
      const label = Number.isFinite(s.rps) ? (s.rps >= 10000 ? `${(s.rps / 1000).toFixed(1)}k` : `${(s.rps / 1000).toFixed(2)}k`) : 'n/a';
      const labelY = baseY - Math.max(h, Number.isFinite(s.max) ? s.max * scale : 0) - 5;
      out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${labelY.toFixed(1)}" font-size="10" text-anchor="middle">${label}</text>`);
    });
  });
  const legendY = top + panelHeight + 35;
  const columns = 3;
  contenders.forEach((contender, c) => {
    const x = left + (c % columns) * 330;
    const y = legendY + Math.floor(c / columns) * 22;
    out.push(`<rect x="${x}" y="${y - 11}" width="14" height="14" fill="${contender.color}"/>`);
    out.push(`<text x="${x + 20}" y="${y}" font-size="13">${escapeXml(contender.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

// ---- main --------------------------------------------------------------------------------------

function cleanupNow() {
  for (const child of live.wrk) child.kill('SIGKILL');
  for (const instance of live.instances) instance.killNow();
  if (statsRoot) fs.rmSync(statsRoot, { recursive: true, force: true });
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (process.platform !== 'linux') throw new Error('bench/http.js reads /proc and needs SO_REUSEPORT balancing: Linux only');
  ensureWrk();
  statsRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'prefork-bench-'));
  process.on('exit', cleanupNow);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      log(`bench: ${signal}: stopping everything`);
      cleanupNow();
      process.exit(130);
    });
  }
  const began = nowMs();
  const data = await run(options);
  const { text, summaries } = report(data, options, (nowMs() - began) / 1000);
  process.stdout.write(`${text}\n`);
  if (options.write) {
    const target = writeSection('http', text);
    const svg = path.join(__dirname, 'results.svg');
    fs.writeFileSync(svg, chart(data, summaries, options));
    process.stdout.write(`Wrote ${path.relative(process.cwd(), target) || target} and ${path.relative(process.cwd(), svg) || svg}\n`);
  }
  fs.rmSync(statsRoot, { recursive: true, force: true });
}

main().catch((error) => {
  const shown = error instanceof MissingTool ? error.message : error && error.stack ? error.stack : error;
  process.stderr.write(`bench/http.js failed: ${shown}\n`);
  cleanupNow();
  process.exitCode = 1;
});
