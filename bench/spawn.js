// Benchmark: prefork's native spawn() and createListenSocket() against child_process.spawn() and net.Server.listen().
//
// Usage: node bench/spawn.js [--runs N] [--quick] [--write]
//   --runs N   spawn runs per contender for `node -e 0` (default 40; /bin/true gets 5 × N)
//   --quick    15 runs per contender, fewer socket iterations
//   --write    also write the report to its section of bench/RESULTS.md (bench/http.js writes the other one)
// Needs lib/ (npx tsc -p tsconfig.build.json) and the native addon (build/Release).
'use strict';

const { percentile } = require('./stats');

const childProcess = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const prefork = require('../lib');
const { writeSection } = require('./results-file');

const CHILD_TIMEOUT_MS = 30_000;
const SPAWN_WARMUP = 3;
const SOCKET_WARMUP = 100;
// /bin/true takes ~2 ms against ~100 ms for `node -e 0`: it gets this many times more runs to tame the noise.
const TRUE_RUNS_FACTOR = 5;

function parseArgs(argv) {
  const options = { runs: 40, socketIterations: 2000, write: false, quick: false };
  let runsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--write') options.write = true;
    else if (arg === '--quick') options.quick = true;
    else if (arg === '--runs' || arg.startsWith('--runs=')) {
      const value = arg === '--runs' ? argv[++i] : arg.slice('--runs='.length);
      const runs = Number(value);
      if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs needs a positive integer, got ${value}`);
      options.runs = runs;
      runsGiven = true;
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write('Usage: node bench/spawn.js [--runs N] [--quick] [--write]\n');
      process.exit(0);
    } else {
      throw new Error(`unknown argument: ${arg} (usage: node bench/spawn.js [--runs N] [--quick] [--write])`);
    }
  }
  if (options.quick) {
    if (!runsGiven) options.runs = 15;
    options.socketIterations = 500;
  }
  return options;
}

// ---- statistics ------------------------------------------------------------------------------


function summarize(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return { n: sorted.length, median: percentile(sorted, 50), p10: percentile(sorted, 10), p90: percentile(sorted, 90) };
}

const nowNs = () => process.hrtime.bigint();
const elapsedMs = (start) => Number(nowNs() - start) / 1e6;
const elapsedUs = (start) => Number(nowNs() - start) / 1e3;

// ---- contenders: spawn-to-exit ---------------------------------------------------------------

/** Awaits `exit` but kills the child (and still awaits it) if it runs past the timeout. */
async function awaitWithTimeout(exit, kill, what) {
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), CHILD_TIMEOUT_MS);
  });
  const result = await Promise.race([exit, timedOut]);
  clearTimeout(timer);
  if (result === 'timeout') {
    kill();
    await exit;
    throw new Error(`${what} did not exit within ${CHILD_TIMEOUT_MS} ms`);
  }
  return result;
}

function checkExit(what, code, signal) {
  if (code !== 0) throw new Error(`${what} exited with code ${code}, signal ${signal}`);
}

/** prefork: native fork+execve, exit seen through a pidfd on the event loop. Returns ms. */
async function preforkSpawn(argv) {
  const start = nowNs();
  const child = prefork.spawn({ file: argv[0], args: argv });
  const info = await awaitWithTimeout(child.exited, () => child.kill('SIGKILL'), 'prefork child');
  const ms = elapsedMs(start);
  checkExit(`prefork ${argv.join(' ')}`, info.code, info.signal);
  return ms;
}

/** child_process: libuv uv_spawn, exit seen through SIGCHLD. Returns ms. */
async function childProcessSpawn(argv) {
  const start = nowNs();
  const child = childProcess.spawn(argv[0], argv.slice(1), { stdio: 'inherit' });
  const exit = new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const info = await awaitWithTimeout(exit, () => child.kill('SIGKILL'), 'child_process child');
  const ms = elapsedMs(start);
  checkExit(`child_process ${argv.join(' ')}`, info.code, info.signal);
  return ms;
}

/** Runs the two contenders alternately (A B A B …) after a few unrecorded warm-up pairs. */
async function alternate(contenders, runs, warmup) {
  const samples = contenders.map(() => []);
  for (let i = 0; i < warmup + runs; i++) {
    for (let c = 0; c < contenders.length; c++) {
      const value = await contenders[c].run();
      if (i >= warmup) samples[c].push(value);
    }
  }
  return contenders.map((contender, c) => ({ name: contender.name, ...summarize(samples[c]) }));
}

// ---- contenders: listen socket ---------------------------------------------------------------

/** prefork: one native socket+setsockopt+bind+listen, then close. Returns µs. */
async function preforkListen() {
  const start = nowNs();
  const socket = await prefork.createListenSocket({ host: '127.0.0.1', port: 0 });
  fs.closeSync(socket.fd);
  return elapsedUs(start);
}

/** net: createServer().listen(0, '127.0.0.1') until 'listening', then close until its callback. Returns µs. */
async function netListen() {
  const start = nowNs();
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  await new Promise((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
  return elapsedUs(start);
}

// ---- report ----------------------------------------------------------------------------------

function fmt(value, digits) {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
}

function table(sections) {
  const lines = [
    '| benchmark | contender | n | median | p10 | p90 | median ratio prefork / baseline |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const section of sections) {
    const [ours, theirs] = section.results;
    const ratio = ours.median / theirs.median;
    lines.push(
      `| ${section.title} | ${ours.name} | ${ours.n} | ${fmt(ours.median, section.digits)} ${section.unit} | ` +
        `${fmt(ours.p10, section.digits)} ${section.unit} | ${fmt(ours.p90, section.digits)} ${section.unit} | **${fmt(ratio, 2)}** |`,
    );
    lines.push(
      `| | ${theirs.name} | ${theirs.n} | ${fmt(theirs.median, section.digits)} ${section.unit} | ` +
        `${fmt(theirs.p10, section.digits)} ${section.unit} | ${fmt(theirs.p90, section.digits)} ${section.unit} | |`,
    );
  }
  return lines.join('\n');
}

function commandLine() {
  const script = path.relative(path.resolve(__dirname, '..'), process.argv[1]) || process.argv[1];
  return ['node', ...process.execArgv, script, ...process.argv.slice(2)].join(' ');
}

function report(sections, options, totalSeconds) {
  const cpus = os.cpus();
  return [
    '## Spawn-to-exit and listen sockets',
    '',
    'Produced by `bench/spawn.js`; do not edit by hand, re-run the command below instead.',
    '',
    `- Command (from the package root): \`${commandLine()}\``,
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${cpus.length > 0 ? cpus[0].model.trim() : 'unknown CPU'}, ${cpus.length} CPUs, ` +
      `${os.platform()} ${os.release()} (${os.arch()})`,
    `- Node: ${process.version}`,
    `- Runs: ${options.runs} per contender for \`node -e 0\` and ${options.runs * TRUE_RUNS_FACTOR} for \`/bin/true\`, ` +
      `each after ${SPAWN_WARMUP} warm-up runs, alternated A B A B; ` +
      `${options.socketIterations} socket iterations per contender after ${SOCKET_WARMUP} warm-up, alternated. ` +
      `Total time ${totalSeconds.toFixed(1)} s.`,
    '',
    table(sections),
    '',
    'Spawn-to-exit is timed from just before the spawn call to the exit notification in JS ' +
      '(prefork: `await child.exited`; child_process: `await` of the `exit` event). Both children inherit stdio. ' +
      'p10/p90 interpolate linearly. A ratio below 1.00 means prefork is faster.',
    '',
  ].join('\n');
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const began = nowNs();
  const nodeArgv = [process.execPath, '-e', '0'];
  const trueArgv = ['/bin/true'];
  if (!fs.existsSync(trueArgv[0])) throw new Error('/bin/true is missing');

  const sections = [];
  sections.push({
    title: 'spawn → exit `node -e 0`',
    unit: 'ms',
    digits: 2,
    results: await alternate(
      [
        { name: 'prefork.spawn', run: () => preforkSpawn(nodeArgv) },
        { name: 'child_process.spawn', run: () => childProcessSpawn(nodeArgv) },
      ],
      options.runs,
      SPAWN_WARMUP,
    ),
  });
  sections.push({
    title: 'spawn → exit `/bin/true`',
    unit: 'ms',
    digits: 3,
    results: await alternate(
      [
        { name: 'prefork.spawn', run: () => preforkSpawn(trueArgv) },
        { name: 'child_process.spawn', run: () => childProcessSpawn(trueArgv) },
      ],
      options.runs * TRUE_RUNS_FACTOR,
      SPAWN_WARMUP,
    ),
  });
  sections.push({
    title: 'listen socket 127.0.0.1:0 + close',
    unit: 'µs',
    digits: 1,
    results: await alternate(
      [
        { name: 'prefork.createListenSocket + closeSync', run: preforkListen },
        { name: 'net.createServer().listen + close', run: netListen },
      ],
      options.socketIterations,
      SOCKET_WARMUP,
    ),
  });

  const text = report(sections, options, Number(nowNs() - began) / 1e9);
  process.stdout.write(text);
  if (options.write) {
    const target = writeSection('spawn', text);
    process.stdout.write(`\nWrote ${path.relative(process.cwd(), target) || target}\n`);
  }
}

main().catch((error) => {
  process.stderr.write(`bench/spawn.js failed: ${error && error.stack ? error.stack : error}\n`);
  process.exitCode = 1;
});
