// node:cluster with N workers (BENCH_WORKERS) running server.js. BENCH_SCHED=rr: round-robin (the primary
// accepts every connection and passes it to a worker over IPC); BENCH_SCHED=none: the workers accept
// from one shared socket themselves. A worker that dies is replaced, as cluster apps usually do.
'use strict';

const cluster = require('node:cluster');

if (cluster.isPrimary) {
  // Must be set before the first fork (Node reads it when it sets up the primary's round-robin handles).
  cluster.schedulingPolicy = process.env.BENCH_SCHED === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  const workers = Number(process.env.BENCH_WORKERS) || 2;
  let stopping = false;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', () => {
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
    } else {
      cluster.fork();
    }
  });
  process.on('SIGTERM', () => {
    stopping = true;
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  });
} else {
  require('./server');
}
