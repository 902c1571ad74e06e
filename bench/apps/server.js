// The plain app: what a single process, each node:cluster worker, each bare SO_REUSEPORT process and
// `node -r prefork/register` run. It listens on BENCH_HOST:BENCH_PORT, or on an inherited listen socket
// (BENCH_LISTEN_FD, the bare SO_REUSEPORT contender).
'use strict';

const { createServer } = require('./handler');

const server = createServer();
if (process.env.BENCH_LISTEN_FD) server.listen({ fd: Number(process.env.BENCH_LISTEN_FD) });
else server.listen(Number(process.env.BENCH_PORT), process.env.BENCH_HOST || '127.0.0.1');
