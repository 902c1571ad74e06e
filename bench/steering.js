// Kernel steering, measured with real connections on 127.0.0.1: the share of new connections a stuck (SIGSTOPped)
// worker gets by default (one shared queue) and under each `balance` mode, against bare SO_REUSEPORT processes; and how `client-ip` spreads 50
// loopback source addresses (127.0.0.1 to .50) over the workers and keeps each on one.
//
// Usage: node bench/steering.js [--write] [--connections N]
//   --write          also write bench/RESULTS.md (this script's section)
//   --connections N  new connections made while a worker is stopped (default 400)
'use strict';

const childProcess = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const prefork = require('../lib');
const { writeSection } = require('./results-file');

const SERVER = path.join(__dirname, 'apps', 'server.js');
const REGISTER = path.join(__dirname, '..', 'lib', 'zero-code', 'register.js');
const DETECTION_MS = 500; // a stopped worker is steered around once its beat is 300 ms old; count after this
const SETTLE_MS = 5000; // the other worker's answers before the stopped one continues
const SOURCES = Array.from({ length: 50 }, (_, i) => `127.0.0.${i + 1}`);

const { values: args } = parseArgs({ options: { write: { type: 'boolean', default: false }, connections: { type: 'string', default: '400' } } });
const CONNECTIONS = Number(args.connections);
if (!Number.isInteger(CONNECTIONS) || CONNECTIONS < 10) throw new Error('--connections needs a whole number ≥ 10');

/** GET /pid on a new connection (from `localAddress`); the answering pid, or null on an error. */
function pidFrom(port, localAddress) {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/pid', localAddress, agent: false, headers: { connection: 'close' } }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk) => (body += chunk)).on('end', () => resolve(Number(body)));
    });
    request.on('error', () => resolve(null));
    request.setTimeout(20_000, () => request.destroy());
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Stops `stuckPid`, waits DETECTION_MS, opens CONNECTIONS new connections (20 at a time), waits until the others
 * answered them (at most SETTLE_MS), then lets it go on: the connections it answers (they waited in its queue while
 * it was stopped) are its share. Waiting first keeps a shared queue honest: what the running worker has not taken
 * yet when the stopped one continues would count against it.
 */
async function stuckShare(port, stuckPid) {
  process.kill(stuckPid, 'SIGSTOP');
  const answers = [];
  try {
    await sleep(DETECTION_MS);
    const started = [];
    for (let i = 0; i < CONNECTIONS; i++) {
      started.push(pidFrom(port));
      if (started.length % 20 === 0) await Promise.race([Promise.all(started.slice(-20)), sleep(100)]);
    }
    await Promise.race([Promise.all(started), sleep(SETTLE_MS)]);
    process.kill(stuckPid, 'SIGCONT');
    answers.push(...(await Promise.all(started)));
  } finally {
    try {
      process.kill(stuckPid, 'SIGCONT');
    } catch {
      // gone
    }
  }
  return { toStuck: answers.filter((pid) => pid === stuckPid).length, failed: answers.filter((pid) => pid === null).length, total: answers.length };
}

/** `balance` undefined: the defaults (one shared queue). */
async function measurePrefork(balance) {
  const supervisor = prefork.supervise({
    script: SERVER, args: [], execArgv: ['--require', REGISTER], workers: 2, listen: '127.0.0.1:0', ...(balance ? { balance } : {}), heartbeatTimeout: 60_000,
    env: { BENCH_PORT: '0', BENCH_HOST: '127.0.0.1' },
  });
  try {
    await supervisor.ready();
    const { port } = supervisor.addresses[0];
    const stuck = await stuckShare(port, supervisor.workers[0].pid);
    let clientIp = null;
    if (balance === 'client-ip') {
      // The stopped worker back in service first (its loop beat again).
      while ((await supervisor.stats()).slots.some((slot) => !slot.steeringShare)) await sleep(25);
      const rounds = [];
      for (let round = 0; round < 5; round++) rounds.push(await Promise.all(SOURCES.map((source) => pidFrom(port, source))));
      const moved = SOURCES.filter((_, i) => new Set(rounds.map((round) => round[i])).size > 1).length;
      const perWorker = supervisor.workers.map((worker) => rounds[0].filter((pid) => pid === worker.pid).length);
      clientIp = { moved, perWorker };
    }
    return { stuck, clientIp };
  } finally {
    await supervisor.shutdown({ timeout: 2000 });
  }
}

/** Two plain processes, each on its own SO_REUSEPORT socket of one port: the kernel's hash, no supervisor. */
async function measureBare() {
  const first = await prefork.createListenSocket({ host: '127.0.0.1', port: 0 });
  const second = await prefork.createListenSocket({ host: '127.0.0.1', port: first.port });
  const children = [first, second].map((socket) => childProcess.spawn(process.execPath, [SERVER], {
    env: { ...process.env, BENCH_LISTEN_FD: '3' }, stdio: ['ignore', 'inherit', 'inherit', socket.fd],
  }));
  try {
    for (const socket of [first, second]) fs.closeSync(socket.fd);
    const seen = new Set();
    for (let i = 0; i < 200 && seen.size < 2; i++) {
      const pid = await pidFrom(first.port);
      if (pid) seen.add(pid);
      else await sleep(50);
    }
    return { stuck: await stuckShare(first.port, children[0].pid), clientIp: null };
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map((child) => (child.exitCode === null && child.signalCode === null ? new Promise((resolve) => child.once('exit', resolve)) : null)));
  }
}

async function main() {
  const rows = [];
  for (const [name, measure] of [
    ['bare SO_REUSEPORT processes (no program)', measureBare],
    ["prefork default (sockets: 'shared', one queue)", () => measurePrefork(undefined)],
    ["prefork balance: 'hash' (reuseport sockets)", () => measurePrefork('hash')],
    ["prefork balance: 'client-ip' (reuseport sockets)", () => measurePrefork('client-ip')],
  ]) {
    process.stderr.write(`measuring ${name}…\n`);
    rows.push([name, await measure()]);
  }
  const percent = (part, whole) => `${((100 * part) / whole).toFixed(1)}%`;
  const lines = [
    '## Steering: a stuck worker, and client-ip affinity',
    '',
    'Produced by `bench/steering.js`; do not edit by hand, re-run the command below instead.',
    '',
    `- Command (from the package root): \`node bench/steering.js --write\``,
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${os.cpus().length} CPUs, linux ${os.release()}; Node ${process.version}`,
    `- 2 workers each. One worker is stopped with SIGSTOP; after ${DETECTION_MS} ms, ${CONNECTIONS} new connections (20 at a time, \`GET /pid\`, \`Connection: close\`) are opened; once the other worker has answered them (at most ${SETTLE_MS / 1000} s) the stopped one is continued, and the connections it answers are its share (they waited in its queue while it was stopped).`,
    `- client-ip: 50 loopback source addresses (127.0.0.1 to 127.0.0.50), 5 rounds of one connection each.`,
    '',
    '| contender | new connections to the stopped worker | failed | client-ip: addresses that changed worker | client-ip: addresses per worker (even: 25) |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows.map(([name, { stuck, clientIp }]) => `| ${name} | ${stuck.toStuck} of ${stuck.total} (${percent(stuck.toStuck, stuck.total)}) | ${stuck.failed} | ${clientIp ? clientIp.moved : '—'} | ${clientIp ? clientIp.perWorker.join(' / ') : '—'} |`),
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);
  if (args.write) writeSection('steering', text);
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
