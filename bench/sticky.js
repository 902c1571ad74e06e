// What engine.io sticky sessions (src/worker/sticky.ts) cost a request that needs no handover: hello-world HTTP
// (a plain app, and GET / of a socket.io app), and a socket.io polling request (a POST of a 'pong' packet) to a session on the worker it reaches, under
// `node -r prefork/register` with 1 worker (every request is then on its own worker), this checkout against
// another one without the feature. Also, for scale, the same polling load with 2 workers, where the first request
// of about half the connections is handed over once (the connection then stays with its session's worker).
//
// Usage: node bench/sticky.js [--against DIR] [--duration S] [--rounds N] [--connections C] [--write]
//   --against DIR    also another checkout's prefork (lib/ built, node_modules and build/ there), e.g. a
//                    `git worktree add /tmp/before <commit>` of the commit before the feature: the "without" rows
//   --duration S     seconds per wrk run (default 5); one 2 s warm-up per app start
//   --rounds N       measured runs per contender and workload, contenders alternated (default 3)
//   --connections C  wrk connections, one thread each (default 8): each thread posts to its own session
//   --write          also write this script's section of bench/RESULTS.md
// Needs wrk, lib/ (npm run build), the native addon and socket.io (a devDependency).
'use strict';

const childProcess = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { writeSection } = require('./results-file');

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'apps');
const HOST = '127.0.0.1';

const { values: args } = parseArgs({
  options: {
    against: { type: 'string' }, duration: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '8' }, write: { type: 'boolean', default: false },
  },
});
const DURATION = Number(args.duration);
const ROUNDS = Number(args.rounds);
const CONNECTIONS = Number(args.connections);
for (const [name, value] of [['--duration', DURATION], ['--rounds', ROUNDS], ['--connections', CONNECTIONS]]) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} needs a positive integer, got ${value}`);
}

const revision = (dir) => childProcess.execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
const CHECKOUTS = [
  ...(args.against ? [{ label: `without (${revision(path.resolve(args.against))})`, dir: path.resolve(args.against) }] : []),
  { label: `with (${revision(ROOT)})`, dir: ROOT },
];
for (const checkout of CHECKOUTS) {
  checkout.register = path.join(checkout.dir, 'lib', 'zero-code', 'register.js');
  if (!fs.existsSync(checkout.register)) throw new Error(`${checkout.dir}: no lib/zero-code/register.js (npm run build there first)`);
}

const WORKLOADS = [
  { name: 'hello world (node:http), keep-alive', app: path.join(__dirname, 'apps', 'hello.js'), workers: 1, polling: false },
  { name: 'GET / of the socket.io app, keep-alive', app: path.join(FIXTURES, 'compat', 'socket-io-sticky.js'), workers: 1, polling: false },
  { name: 'socket.io polling POST, own worker', app: path.join(FIXTURES, 'compat', 'socket-io-sticky.js'), workers: 1, polling: true },
  { name: 'socket.io polling POST, 2 workers (handovers)', app: path.join(FIXTURES, 'compat', 'socket-io-sticky.js'), workers: 2, polling: true },
];

/** Starts the app under a checkout's register preload; resolves with its port once every worker listens. */
function startApp(checkout, workload) {
  const child = childProcess.spawn(process.execPath, ['-r', checkout.register, workload.app], {
    env: { ...process.env, PREFORK_WORKERS: String(workload.workers), PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  child.stderr.on('data', () => {});
  return new Promise((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      output += chunk;
      const lines = [...output.matchAll(/^LISTENING (\d+) /gm)];
      if (lines.length >= workload.workers) resolve({ child, port: Number(lines[0][1]) });
    });
    child.once('exit', (code) => reject(new Error(`app exited (${code}) before listening: ${output}`)));
  });
}

async function stopApp(child) {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  process.kill(-child.pid, 'SIGTERM');
  await exited;
}

/** A new engine.io session over the polling transport: its sid. */
function handshake(port) {
  return new Promise((resolve, reject) => {
    http.get({ host: HOST, port, path: '/socket.io/?EIO=4&transport=polling', agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk) => (body += chunk)).on('end', () => {
        const match = /"sid":"([^"]+)"/.exec(body);
        if (match) resolve(match[1]);
        else reject(new Error(`no sid in ${body}`));
      });
    }).on('error', reject);
  });
}

/** A wrk script: each thread (one connection) POSTs a 'pong' packet to its own session, and prints p50/p99. */
function pollingScript(sids) {
  return `local sids = { ${sids.map((sid) => JSON.stringify(sid)).join(', ')} }
local next = 1
function setup(thread) thread:set("sid", sids[next]); next = next + 1 end
function init(args) wrk.method = "POST"; wrk.body = "3"; wrk.headers["Content-Type"] = "text/plain;charset=UTF-8" end
function request() return wrk.format(nil, "/socket.io/?EIO=4&transport=polling&sid=" .. sid) end
done = function(summary, latency, requests)
  for _, p in ipairs({ 50, 99 }) do io.write(string.format("PERCENTILE %g %d\\n", p, latency:percentile(p))) end
  io.write(string.format("NON2XX %d\\n", (summary.errors.status or 0)))
end
`;
}

const HELLO_SCRIPT = `done = function(summary, latency, requests)
  for _, p in ipairs({ 50, 99 }) do io.write(string.format("PERCENTILE %g %d\\n", p, latency:percentile(p))) end
  io.write(string.format("NON2XX %d\\n", (summary.errors.status or 0)))
end
`;

function wrk(port, script, seconds) {
  const file = path.join(os.tmpdir(), `prefork-sticky-${process.pid}.lua`);
  fs.writeFileSync(file, script);
  const result = childProcess.spawnSync('wrk', ['-t', String(CONNECTIONS), '-c', String(CONNECTIONS), '-d', `${seconds}s`, '-s', file, `http://${HOST}:${port}/`], { encoding: 'utf8' });
  fs.rmSync(file, { force: true });
  if (result.status !== 0) throw new Error(`wrk failed: ${result.stderr}`);
  const out = result.stdout;
  const percentile = (p) => Number(new RegExp(`^PERCENTILE ${p} (\\d+)$`, 'm').exec(out)[1]) / 1000;
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)[1]),
    p50: percentile(50),
    p99: percentile(99),
    failed: Number(/^NON2XX (\d+)$/m.exec(out)[1]) + Number(/Socket errors:.*?(\d+)/.exec(out)?.[1] ?? 0),
  };
}

async function measure(checkout, workload) {
  const { child, port } = await startApp(checkout, workload);
  try {
    const script = workload.polling ? pollingScript(await Promise.all(Array.from({ length: CONNECTIONS }, () => handshake(port)))) : HELLO_SCRIPT;
    wrk(port, script, 2); // warm-up
    return wrk(port, script, DURATION);
  } finally {
    await stopApp(child);
  }
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function main() {
  const started = Date.now();
  const loadAtStart = os.loadavg()[0];
  const results = new Map(); // workload -> checkout -> runs
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? CHECKOUTS : [...CHECKOUTS].reverse();
    for (const workload of WORKLOADS) {
      for (const checkout of order) {
        const run = await measure(checkout, workload);
        process.stderr.write(`${workload.name} | ${checkout.label} | ${run.rps} req/s p50 ${run.p50} ms p99 ${run.p99} ms failed ${run.failed}\n`);
        const byCheckout = results.get(workload.name) ?? new Map();
        results.set(workload.name, byCheckout);
        byCheckout.set(checkout.label, [...(byCheckout.get(checkout.label) ?? []), run]);
      }
    }
  }
  const rows = [];
  for (const workload of WORKLOADS) {
    for (const checkout of CHECKOUTS) {
      const runs = results.get(workload.name).get(checkout.label);
      const failed = runs.reduce((sum, run) => sum + run.failed, 0);
      const rps = runs.map((run) => run.rps);
      rows.push(`| ${workload.name} | ${checkout.label} | ${workload.workers} | ${median(rps).toFixed(0)} | ${Math.min(...rps).toFixed(0)}–${Math.max(...rps).toFixed(0)} | ${median(runs.map((run) => run.p50)).toFixed(2)} | ${median(runs.map((run) => run.p99)).toFixed(2)} | ${failed} |`);
    }
  }
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU';
  const report = [
    '## Sticky sessions: what engine.io requests that need no handover pay',
    '',
    'Produced by `bench/sticky.js`; do not edit by hand, re-run the command below instead.',
    '',
    `- Command (from the package root): \`node bench/sticky.js${args.against ? ` --against ${args.against}` : ''} --duration ${DURATION} --rounds ${ROUNDS} --connections ${CONNECTIONS} --write\``,
    `- Date: ${new Date().toISOString()}; total time ${Math.round((Date.now() - started) / 1000)} s; load average (1 min) ${loadAtStart.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end (a shared machine: compare the ranges, not single figures)`,
    `- Machine: ${cpu}, ${os.cpus().length} CPUs, ${os.platform()} ${os.release()}; Node ${process.version}; wrk on the same machine over ${HOST}`,
    `- \`node -r prefork/register\` of bench/apps/hello.js and test/fixtures/apps/compat/socket-io-sticky.js (socket.io's defaults; GET / is answered by the app's own handler, behind engine.io's path check). ${args.against ? `"without": the checkout at ${args.against}; ` : ''}"with": this checkout. ${ROUNDS} measured wrk runs of ${DURATION} s per contender and workload (after a 2 s warm-up per start), contenders alternated; medians. ${CONNECTIONS} connections, one wrk thread each; in the polling workloads each connection POSTs engine.io 'pong' packets ("3") to a session of its own (handshaken first), keep-alive.`,
    '- With 1 worker every request is on its own session\'s worker: the feature\'s whole cost is the sid check in front of engine.io. With 2 workers under "without", about half the sessions live on the other worker: those requests fail (400 "Session ID unknown", counted as failed); "with" hands each such connection over once.',
    '',
    '| workload | prefork | workers | req/s (median) | req/s (min–max) | p50 (ms) | p99 (ms) | failed |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
  process.stdout.write(`${report}\n`);
  if (args.write) process.stderr.write(`wrote ${writeSection('sticky', report)}\n`);
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
