// Smoke test of an installed prefork (CI runs it against the packed tarball): loads the prebuilt binary,
// serves HTTP from a spawned worker on an SO_REUSEPORT socket, and reaps it. Usage: node smoke.js <project dir>
const { closeSync } = require('node:fs');
const http = require('node:http');
const { createRequire } = require('node:module');
const path = require('node:path');

const projectRequire = createRequire(path.join(path.resolve(process.argv[2]), 'package.json'));
const packageDir = path.dirname(projectRequire.resolve('prefork/package.json'));
const prefork = projectRequire('prefork');
const loaded = projectRequire('node-gyp-build').path(packageDir);

async function main() {
  if (!loaded.includes(`${path.sep}prebuilds${path.sep}`)) throw new Error(`loaded ${loaded}, not a prebuild`);
  const socket = await prefork.createListenSocket({ host: '127.0.0.1', port: 0 });
  const worker = prefork.spawn({
    file: process.execPath,
    args: ['node', '-e', `require('http').createServer((q, s) => s.end(String(process.pid))).listen({ fd: 3 })`],
    fds: { 3: socket.fd },
  });
  const body = await new Promise((resolve, reject) =>
    http.get({ port: socket.port, host: '127.0.0.1', agent: false }, (response) => {
      let text = '';
      response.on('data', (chunk) => (text += chunk)).on('end', () => resolve(text));
    }).on('error', reject),
  );
  worker.kill('SIGTERM');
  const exit = await worker.exited;
  closeSync(socket.fd);
  if (body !== String(worker.pid)) throw new Error(`expected pid ${worker.pid}, got ${body}`);
  if (exit.signal !== 'SIGTERM') throw new Error(`expected SIGTERM exit, got ${JSON.stringify(exit)}`);
  console.log(`smoke: ${loaded} served HTTP from worker ${worker.pid} and reaped it`);
}

main().catch((error) => {
  console.error('smoke test failed:', error);
  process.exit(1);
});
