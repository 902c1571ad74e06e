// prefork through its API: this one file is the primary (supervise()) and every worker (prefork.listen()),
// as in the README's supervise() example. BENCH_WORKERS workers on BENCH_HOST:BENCH_PORT; PREFORK_BALANCE and
// PREFORK_SOCKETS, when set, become the balance and sockets options; BENCH_RESET_AFTER sets
// restart.resetAfter (the harness kills workers every few seconds and wants each kill treated as a first crash).
// The primary reports its supervisor's events as `bench-event {...}` lines on stderr for the harness.
'use strict';

const prefork = require('../../lib');
const { createServer } = require('./handler');

const address = `${process.env.BENCH_HOST || '127.0.0.1'}:${Number(process.env.BENCH_PORT)}`;

if (prefork.isPrimary()) {
  const supervisor = prefork.supervise({
    listen: address,
    workers: Number(process.env.BENCH_WORKERS) || undefined,
    restart: process.env.BENCH_RESET_AFTER ? { resetAfter: Number(process.env.BENCH_RESET_AFTER) } : undefined,
    // Only when asked: a prefork without the option (an older checkout, bench/connection-cost.js --against) rejects it.
    ...(process.env.PREFORK_BALANCE ? { balance: process.env.PREFORK_BALANCE } : {}),
    ...(process.env.PREFORK_SOCKETS ? { sockets: process.env.PREFORK_SOCKETS } : {}),
    signals: true,
    exitProcess: true,
  });
  const event = (name, details = {}) => process.stderr.write(`bench-event ${JSON.stringify({ event: name, ...details })}\n`);
  supervisor.ready().then(() => event('ready', { pids: supervisor.workers.map((worker) => worker.pid) }), () => {});
  supervisor.on('restart', (old, next) => event('restart', { old: old.pid, pid: next.pid }));
  supervisor.on('reload', () => event('reload'));
  supervisor.on('scale', (from, to) => event('scale', { from, to }));
} else {
  prefork.listen(createServer(), address);
}
