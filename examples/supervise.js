// The API way: one file that is both the primary (which supervises and prints the
// workers' lifecycle) and every worker (which serves). PORT (default 3000, 0: any free port) and WORKERS
// (default: the usable CPUs) configure it. Ctrl-C stops it; `kill -HUP <pid>` reloads, -TTIN/-TTOU scale.
const http = require('node:http');
const prefork = require('..');

const port = Number(process.env.PORT ?? 3000);

if (prefork.isPrimary()) {
  // A program of its own: it takes the primary's signals and exits with the supervisor.
  const supervisor = prefork.supervise({
    listen: port, workers: process.env.WORKERS ? Number(process.env.WORKERS) : undefined, signals: true, exitProcess: true,
  });
  const name = (worker) => `worker ${worker.id} (pid ${worker.pid}, generation ${worker.generation})`;
  supervisor.on('fork', (worker) => console.log(`${name(worker)} forked`));
  supervisor.on('ready', (worker) => console.log(`${name(worker)} ready`));
  supervisor.on('exit', (worker, code, signal) => console.log(`${name(worker)} exited (${signal ?? `code ${code}`})`));
  supervisor.on('restart', (old, next, delay) => console.log(`worker ${old.id} restarted after ${delay} ms as pid ${next.pid}`));
  supervisor.on('reload', () => console.log('reload done'));
  supervisor.on('scale', (from, to) => console.log(`scaled from ${from} to ${to} workers`));
  supervisor.on('shutdown', () => console.log('shut down'));

  supervisor.ready().then(async () => {
    const { port: bound } = supervisor.addresses[0];
    const tally = new Map();
    for (let i = 0; i < 20; i++) {
      const answer = await new Promise((resolve, reject) =>
        http.get({ host: '127.0.0.1', port: bound, agent: false }, (response) => {
          let body = '';
          response.on('data', (chunk) => (body += chunk)).on('end', () => resolve(body.trim()));
        }).on('error', reject),
      );
      tally.set(answer, (tally.get(answer) ?? 0) + 1);
    }
    for (const [answer, count] of tally) console.log(`${count} of 20 requests: ${answer}`);
    console.log(`serving http://127.0.0.1:${bound}/ from ${supervisor.workers.length} workers (primary pid ${process.pid}); Ctrl-C stops`);
  });
} else {
  const server = http.createServer((request, response) => {
    response.end(`hello from worker ${prefork.workerId()} (pid ${process.pid})\n`);
  });
  prefork.listen(server, port);
}
