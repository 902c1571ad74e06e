// Start-up: the time from spawn to an app's first HTTP response under plain node and under `node -r prefork/register`
// (1 and 2 workers); where prefork's own part of it goes (the primary's start, the spawn, the worker's preload); and
// the idle primary's resident memory and the files it loaded.
//
// Usage: node bench/startup.js [--rounds N] [--quick] [--write] [--against DIR]
//   --rounds N     starts per contender and app (default 10; --quick: 3); each round runs every contender once,
//                  in an order rotated from round to round
//   --against DIR  also another checkout's prefork (lib/ built, node_modules and build/ there), e.g. a
//                  `git worktree add /tmp/before <commit>`: contenders `register@<commit>`, a change before and after
//   --write        also write this script's section of bench/RESULTS.md
// Needs lib/ (npm run build), the native addon and the devDependencies (koa, hono, @nestjs/*, prom-client).
'use strict';

const childProcess = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { percentile } = require('./stats');
const { writeSection } = require('./results-file');

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'apps');
const MARK = path.join(__dirname, 'apps', 'startup-mark.js');
const HOST = '127.0.0.1';
const POLL_MS = 5; // between attempts while the port refuses
const REQUEST_TIMEOUT_MS = 250; // a request queued on a listen socket no worker serves yet is retried after this
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const IDLE_MS = 1000; // the primary's memory is read this long after its workers are ready

const APPS = [
  { name: 'node:http', file: path.join(FIXTURES, 'plain-http.js') },
  { name: 'Koa', file: path.join(FIXTURES, 'koa.js') },
  { name: 'Hono', file: path.join(FIXTURES, 'hono.js') },
  { name: 'NestJS (Express)', file: path.join(FIXTURES, 'real', 'nest.mjs'), env: { NEST_ADAPTER: 'express' } },
];
const MEMORY_CONFIGS = [
  { name: 'defaults', file: APPS[0].file, env: {} },
  { name: 'PREFORK_METRICS=127.0.0.1:0', file: APPS[0].file, env: { PREFORK_METRICS: '127.0.0.1:0' } },
  { name: 'PREFORK_METRICS, prom-client app, scraped once', file: path.join(FIXTURES, 'prom-client.js'), env: { PREFORK_METRICS: '127.0.0.1:0' }, scrape: true },
];

const { values: args } = parseArgs({
  options: { rounds: { type: 'string' }, quick: { type: 'boolean', default: false }, write: { type: 'boolean', default: false }, against: { type: 'string' } },
});
const ROUNDS = Number(args.rounds ?? (args.quick ? 3 : 10));
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`--rounds needs a positive integer, got ${args.rounds}`);

/** This checkout, and the --against one: where each one's register preload is. */
const CHECKOUTS = [{ label: 'register', dir: ROOT }];
if (args.against) {
  const dir = path.resolve(args.against);
  if (!fs.existsSync(path.join(dir, 'lib', 'zero-code', 'register.js'))) throw new Error(`--against ${dir}: no lib/zero-code/register.js there (npm run build there first)`);
  CHECKOUTS.push({ label: `register@${revision(dir)}`, dir });
}
for (const checkout of CHECKOUTS) checkout.register = path.join(checkout.dir, 'lib', 'zero-code', 'register.js');

function revision(dir) {
  return childProcess.execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
}

const now = () => performance.timeOrigin + performance.now(); // epoch ms, comparable with the children's stamps
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().once('error', reject).listen(0, HOST, () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// ---- one process tree ---------------------------------------------------------------------------------------

/** Spawns `node ...nodeArgs` as the leader of its own process group; its stderr is read line by line. */
function launch(nodeArgs, env) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PREFORK_')));
  const startedAt = now();
  const child = childProcess.spawn(process.execPath, nodeArgs, { cwd: ROOT, env: { ...inherited, ...env }, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const run = { child, startedAt, lines: [], waiters: new Set() };
  run.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop();
    for (const line of lines) {
      run.lines.push({ at: now(), line });
      for (const waiter of run.waiters) waiter();
    }
  });
  return run;
}

/** The first stderr line matching `pattern` (its match and time); rejects if the process exits first. */
function lineMatching(run, pattern) {
  return new Promise((resolve, reject) => {
    const check = () => {
      for (const { at, line } of run.lines) {
        const match = pattern.exec(line);
        if (match) return done(() => resolve({ match, at }));
      }
    };
    const timer = setTimeout(() => done(() => reject(new Error(`no ${pattern} within ${START_TIMEOUT_MS} ms`))), START_TIMEOUT_MS);
    const done = (settle) => {
      clearTimeout(timer);
      run.waiters.delete(check);
      settle();
    };
    run.waiters.add(check);
    check();
    run.exited.then(({ code, signal }) => done(() => reject(new Error(`exited (${code ?? signal}) before ${pattern}; stderr:\n${run.lines.map(({ line }) => line).join('\n')}`))));
  });
}

/** When the first 200 answered: short-timeout GETs on a new connection each, until one does. */
function firstResponse(run, port) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const attempt = () => {
      if (settled) return;
      if (now() - run.startedAt > START_TIMEOUT_MS) return fail(new Error(`no response on port ${port} within ${START_TIMEOUT_MS} ms`));
      const request = http.get({ host: HOST, port, path: '/', agent: false, timeout: REQUEST_TIMEOUT_MS }, (response) => {
        const at = now();
        response.resume();
        if (response.statusCode === 200) {
          settled = true;
          resolve(at);
        } else setTimeout(attempt, POLL_MS);
      });
      request.on('timeout', () => request.destroy());
      request.on('error', () => setTimeout(attempt, POLL_MS));
    };
    const fail = (error) => {
      settled = true;
      reject(error);
    };
    run.exited.then(({ code, signal }) => !settled && fail(new Error(`exited (${code ?? signal}) before answering; stderr:\n${run.lines.map(({ line }) => line).join('\n')}`)));
    attempt();
  });
}

/** SIGTERM, then SIGKILL to the whole group if it takes too long; and the group swept either way. */
async function stop(run) {
  const { pid } = run.child;
  if (run.child.exitCode === null && run.child.signalCode === null) {
    process.kill(pid, 'SIGTERM');
    const timer = setTimeout(() => process.kill(-pid, 'SIGKILL'), STOP_TIMEOUT_MS);
    await run.exited;
    clearTimeout(timer);
  }
  try {
    process.kill(-pid, 'SIGKILL'); // anything its children left behind
  } catch {
    // the group is empty: nothing was
  }
}

const READY = /^prefork: (\d+) workers? ready \(pids /;
const METRICS_AT = /^prefork: metrics at (\S+)/;

// ---- measurements -------------------------------------------------------------------------------------------

/** Start-up of one app under one contender: ms to the first response, and to the primary's "ready" line. */
async function startOnce(contender, app) {
  const port = await freePort();
  const nodeArgs = contender.checkout ? ['-r', contender.checkout.register, app.file] : [app.file];
  const env = { ...app.env, PORT: String(port), ...(contender.checkout ? { PREFORK_WORKERS: String(contender.workers) } : {}) };
  const run = launch(nodeArgs, env);
  try {
    const answered = await firstResponse(run, port);
    const ready = contender.checkout ? (await lineMatching(run, READY)).at : answered;
    return { first: answered - run.startedAt, ready: ready - run.startedAt };
  } finally {
    await stop(run);
  }
}

/**
 * The node:http app with startup-mark.js preloaded (it loads prefork's preload itself and stamps around it):
 * per phase, ms. The worker is the first one started.
 */
async function phasesOnce(contender) {
  const port = await freePort();
  const env = { PORT: String(port), ...(contender.checkout ? { STARTUP_REGISTER: contender.checkout.register, PREFORK_WORKERS: String(contender.workers) } : {}) };
  const run = launch(['-r', MARK, APPS[0].file], env);
  try {
    const answered = await firstResponse(run, port);
    if (contender.checkout) await lineMatching(run, READY);
    const marks = run.lines.flatMap(({ line }) => (line.startsWith('startup-mark ') ? [JSON.parse(line.slice(13))] : []))
      .map((mark) => ({ ...mark, processStart: Number(mark.processStart), preloadStart: Number(mark.preloadStart), preloadDone: Number(mark.preloadDone) }));
    const primary = marks.find((mark) => mark.role === (contender.checkout ? 'primary' : 'plain'));
    const worker = marks.filter((mark) => mark.role === 'worker').sort((a, b) => a.processStart - b.processStart)[0];
    if (!primary || (contender.checkout && !worker)) throw new Error(`missing marks: ${JSON.stringify(marks)}`);
    const phases = {
      exec: primary.processStart - run.startedAt,
      bootstrap: primary.preloadStart - primary.processStart,
      total: answered - run.startedAt,
    };
    if (!worker) return { ...phases, app: answered - primary.preloadDone };
    return {
      ...phases,
      primaryPreload: primary.preloadDone - primary.preloadStart,
      toWorker: worker.processStart - primary.preloadDone,
      workerBootstrap: worker.preloadStart - worker.processStart,
      workerPreload: worker.preloadDone - worker.preloadStart,
      app: answered - worker.preloadDone,
    };
  } finally {
    await stop(run);
  }
}

/**
 * The primary of 2 workers, IDLE_MS after they are ready (and scraped, if asked): VmRSS and RssAnon in MB (the rest
 * of VmRSS is mostly the node binary's pages, shared with every node process); with the mark, the files it loaded.
 */
async function primaryOnce(checkout, config, { withMark = false } = {}) {
  const port = await freePort();
  const env = { ...config.env, PORT: String(port), PREFORK_WORKERS: '2', ...(withMark ? { STARTUP_REGISTER: checkout.register } : {}) };
  const run = launch(withMark ? ['-r', MARK, config.file] : ['-r', checkout.register, config.file], env);
  try {
    await lineMatching(run, READY);
    if (config.scrape) {
      const { match } = await lineMatching(run, METRICS_AT);
      await new Promise((resolve, reject) => http.get(match[1], { agent: false }, (response) => response.resume().on('end', resolve)).on('error', reject));
    }
    await sleep(IDLE_MS);
    const status = fs.readFileSync(`/proc/${run.child.pid}/status`, 'utf8');
    const [rss, anon] = ['VmRSS', 'RssAnon'].map((field) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)[1]) / 1024);
    if (!withMark) return { rss, anon };
    process.kill(run.child.pid, 'SIGWINCH');
    const { match } = await lineMatching(run, /^startup-modules (.*)$/);
    return { rss, modules: JSON.parse(match[1]) };
  } finally {
    await stop(run);
  }
}

// ---- statistics and report ----------------------------------------------------------------------------------

function summarize(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return { n: sorted.length, p50: percentile(sorted, 50), min: sorted[0], max: sorted[sorted.length - 1] };
}

const ms = (value) => (Number.isFinite(value) ? `${Math.round(value)}` : '—');
const mb = (value) => (Number.isFinite(value) ? value.toFixed(1) : '—');

function commandLine() {
  return ['node', ...process.execArgv, path.relative(ROOT, process.argv[1]), ...process.argv.slice(2)].join(' ');
}

const PHASES = [
  ['exec', 'spawn → the process started (Node\'s timeOrigin)'],
  ['bootstrap', 'Node\'s bootstrap, to the first preload'],
  ['primaryPreload', 'primary: prefork\'s preload (loading prefork, the supervisor\'s synchronous start)'],
  ['toWorker', 'primary: preload done → the first worker process started (sockets, spawn)'],
  ['workerBootstrap', 'worker: Node\'s bootstrap'],
  ['workerPreload', 'worker: prefork\'s preload (loading it, the control channel)'],
  ['app', 'the app: loading, listen(), to the first response'],
  ['total', 'spawn → first response'],
];

function report({ contenders, starts, phases, memory, seconds, loads }) {
  const name = (contender) => contender.name;
  const plainP50 = (app) => summarize(starts.get(`${app.name}|${contenders[0].name}`).map((s) => s.first)).p50;
  const lines = [
    '## Start-up: spawn to the first response, and the idle primary',
    '',
    'Produced by `bench/startup.js`; do not edit by hand, re-run the command below instead.',
    '',
    `- Command (from the package root): \`${commandLine()}\``,
    `- Date: ${new Date().toISOString()}; total time ${seconds.toFixed(0)} s; load average (1 min) ${loads.map((load) => load.toFixed(1)).join(' at the start, ')} at the end`,
    `- Machine: ${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${os.cpus().length} CPUs, ${os.platform()} ${os.release()}; Node ${process.version}`,
    `- ${ROUNDS} rounds; each round starts every contender once per app, in an order rotated from round to round. ` +
      `A start is timed from just before spawn() to the headers of the first 200 to \`GET /\` on 127.0.0.1 (a new ` +
      `connection per attempt, ${POLL_MS} ms apart, each given up after ${REQUEST_TIMEOUT_MS} ms), then the process ` +
      'group is stopped with SIGTERM. "all ready": to the primary\'s "N workers ready" line.',
    ...CHECKOUTS.slice(1).map((checkout) => `- \`${checkout.label}\`: the same, with the prefork of ${checkout.dir} (commit ${revision(checkout.dir)}); \`register\` is this checkout (${revision(ROOT)}, plus any uncommitted change).`),
    '',
    '### Spawn to the first response (ms)',
    '',
    '| app | contender | n | p50 | min | max | p50 all ready | p50 − node |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const app of APPS) {
    for (const contender of contenders) {
      const samples = starts.get(`${app.name}|${contender.name}`);
      const first = summarize(samples.map((s) => s.first));
      const ready = summarize(samples.map((s) => s.ready));
      lines.push(`| ${contender === contenders[0] ? app.name : ''} | ${name(contender)} | ${first.n} | **${ms(first.p50)}** | ${ms(first.min)} | ${ms(first.max)} | ` +
        `${contender.checkout ? ms(ready.p50) : '—'} | ${contender.checkout ? `+${ms(first.p50 - plainP50(app))}` : ''} |`);
    }
  }
  lines.push(
    '',
    '### Where the gap goes (p50 of the first response, ms)',
    '',
    'With 1 worker, the two cores are shared by the worker and an idle primary: the difference to plain node is ' +
      'prefork\'s own start. A second worker starts at the same time and competes with the first for the two cores: ' +
      'the difference between 2 workers and 1 is that sharing.',
    '',
    '| app | contender | 2 workers − node | 1 worker − node (prefork\'s own start) | 2 workers − 1 worker (sharing the cores) |',
    '| --- | --- | ---: | ---: | ---: |',
  );
  for (const app of APPS) {
    for (const checkout of CHECKOUTS) {
      const p50 = (workers) => summarize(starts.get(`${app.name}|${checkout.label}, ${workers} worker${workers === 1 ? '' : 's'}`).map((s) => s.first)).p50;
      const [one, two, plain] = [p50(1), p50(2), plainP50(app)];
      lines.push(`| ${checkout === CHECKOUTS[0] ? app.name : ''} | ${checkout.label} | ${ms(two - plain)} | ${ms(one - plain)} | ${ms(two - one)} |`);
    }
  }
  lines.push(
    '',
    `### Where prefork's own start goes: the node:http app (p50 ms, n = ${ROUNDS})`,
    '',
    'The app runs with `bench/apps/startup-mark.js` preloaded, which loads prefork\'s preload itself and stamps ' +
      'around it (Node\'s `performance.timeOrigin` is when a process started). The phases\' p50s need not add up to the total\'s.',
    '',
    `| phase | ${contenders.map(name).join(' | ')} |`,
    `| --- | ${contenders.map(() => '---:').join(' | ')} |`,
  );
  for (const [key, label] of PHASES) {
    const cells = contenders.map((contender) => ms(summarize(phases.get(contender.name).map((p) => p[key]).filter(Number.isFinite)).p50));
    lines.push(`| ${key === 'total' ? `**${label}**` : label} | ${cells.join(' | ')} |`);
  }
  lines.push(
    '',
    `### The idle primary: resident memory ${IDLE_MS} ms after its 2 workers are ready (VmRSS, MB)`,
    '',
    'RssAnon: its private memory; most of the rest of VmRSS is the node binary\'s pages, shared with every node process. ' +
      'Files: what the primary had loaded (require.cache), counted in a separate run with startup-mark.js preloaded.',
    '',
    '| configuration | contender | n | p50 | min | max | p50 RssAnon | prefork files loaded | package files loaded |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const config of MEMORY_CONFIGS) {
    for (const checkout of CHECKOUTS) {
      const { samples, modules } = memory.get(`${config.name}|${checkout.label}`);
      const [rss, anon] = [summarize(samples.map((sample) => sample.rss)), summarize(samples.map((sample) => sample.anon))];
      lines.push(`| ${checkout === CHECKOUTS[0] ? config.name : ''} | ${checkout.label} | ${rss.n} | **${mb(rss.p50)}** | ${mb(rss.min)} | ${mb(rss.max)} | ${mb(anon.p50)} | ${modules.prefork} | ${modules.packages} |`);
    }
  }
  const { modules } = memory.get(`${MEMORY_CONFIGS[0].name}|${CHECKOUTS[0].label}`);
  const loaded = modules.files.filter((file) => file.startsWith(path.join(ROOT, 'lib'))).map((file) => path.relative(path.join(ROOT, 'lib'), file).replace(/\.js$/, ''));
  lines.push('', `With the defaults, this checkout's primary loads: ${loaded.map((file) => `\`${file}\``).join(', ')}.`, '');
  return lines.join('\n');
}

// ---- main ---------------------------------------------------------------------------------------------------

async function main() {
  const began = now();
  const loadAtStart = os.loadavg()[0]; // anything else running shows in the spread (min, max)
  const contenders = [{ name: 'node', checkout: null }];
  for (const checkout of CHECKOUTS) {
    for (const workers of [1, 2]) contenders.push({ name: `${checkout.label}, ${workers} worker${workers === 1 ? '' : 's'}`, checkout, workers });
  }
  const rotated = (list, round) => list.map((_, i) => list[(i + round) % list.length]);
  const starts = new Map(APPS.flatMap((app) => contenders.map((contender) => [`${app.name}|${contender.name}`, []])));
  const phases = new Map(contenders.map((contender) => [contender.name, []]));
  const memory = new Map(MEMORY_CONFIGS.flatMap((config) => CHECKOUTS.map((checkout) => [`${config.name}|${checkout.label}`, { samples: [], modules: null }])));

  for (let round = 0; round < ROUNDS; round++) {
    process.stderr.write(`round ${round + 1} of ${ROUNDS}\n`);
    for (const app of APPS) {
      for (const contender of rotated(contenders, round)) starts.get(`${app.name}|${contender.name}`).push(await startOnce(contender, app));
    }
    for (const contender of rotated(contenders, round)) phases.get(contender.name).push(await phasesOnce(contender));
    for (const config of MEMORY_CONFIGS) {
      for (const checkout of rotated(CHECKOUTS, round)) memory.get(`${config.name}|${checkout.label}`).samples.push(await primaryOnce(checkout, config));
    }
  }
  for (const config of MEMORY_CONFIGS) {
    for (const checkout of CHECKOUTS) memory.get(`${config.name}|${checkout.label}`).modules = (await primaryOnce(checkout, config, { withMark: true })).modules;
  }

  const text = report({ contenders, starts, phases, memory, seconds: (now() - began) / 1000, loads: [loadAtStart, os.loadavg()[0]] });
  process.stdout.write(text);
  if (args.write) {
    const target = writeSection('startup', text);
    process.stdout.write(`\nWrote ${path.relative(process.cwd(), target) || target}\n`);
  }
}

main().catch((error) => {
  process.stderr.write(`bench/startup.js failed: ${error && error.stack ? error.stack : error}\n`);
  process.exitCode = 1;
});
