// `npm start`: two workers on one port with prefork's low-level API, and which pid answers each request.
// PORT (default 3000, 0 for any free port) and WORKERS (default 2) configure it; Ctrl-C stops it.
const { closeSync } = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { createListenSocket, spawn } = require('..');

const port = Number(process.env.PORT ?? 3000);
const workerCount = Number(process.env.WORKERS ?? 2);

function get(port) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, agent: false }, (response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve(body.trim()));
      })
      .on('error', reject);
  });
}

async function main() {
  // One socket per worker, all bound to the same port: the kernel spreads connections across them.
  const first = await createListenSocket({ host: '0.0.0.0', port });
  const sockets = [first];
  for (let i = 1; i < workerCount; i++) sockets.push(await createListenSocket({ host: '0.0.0.0', port: first.port }));

  const workers = sockets.map((socket) =>
    spawn({ file: process.execPath, args: [process.execPath, path.join(__dirname, 'demo-worker.js')], fds: { 3: socket.fd } }),
  );
  for (const worker of workers) {
    console.log(`worker ${worker.pid} started`);
    worker.on('exit', (code, signal) => console.log(`worker ${worker.pid} exited (code ${code}, signal ${signal})`));
  }

  const tally = new Map();
  for (let i = 0; i < 20; i++) {
    const answer = await get(first.port);
    tally.set(answer, (tally.get(answer) ?? 0) + 1);
  }
  for (const [answer, count] of tally) console.log(`${count} of 20 requests: ${answer}`);
  console.log(`serving http://127.0.0.1:${first.port}/ with ${workers.length} workers; Ctrl-C stops`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    for (const worker of workers) worker.kill('SIGTERM');
    await Promise.all(workers.map((worker) => worker.exited));
    for (const socket of sockets) closeSync(socket.fd);
    console.log('stopped');
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
