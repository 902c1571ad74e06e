// Smoke test of prefork's prebuilt binary, run by the node it is for (another line, or arm64 under qemu):
// loads the prebuild, serves HTTP from a spawned worker on an SO_REUSEPORT socket and reaps it, then runs an
// unmodified app with 2 workers under `node -r prefork/register`, stops it with SIGTERM, and asks the prefork
// command its version. Usage: node smoke.js <project dir>, a project that installed prefork or prefork's clone
// (with PREBUILDS_ONLY=1, so build/ is not used).
const { closeSync } = require('node:fs');
const http = require('node:http');
const { createRequire } = require('node:module');
const path = require('node:path');

const projectRequire = createRequire(path.join(path.resolve(process.argv[2]), 'package.json'));
const packageDir = path.dirname(projectRequire.resolve('prefork/package.json'));
const prefork = projectRequire('prefork');
const loaded = projectRequire('node-gyp-build').path(packageDir);

// Every wait here is bounded by this: a stuck step fails the smoke test, and kills what it started.
const DEADLINE_MS = 90_000;
const started = new Set();
process.on('exit', () => started.forEach((child) => child.kill('SIGKILL')));
setTimeout(() => {
  console.error(`smoke test failed: not done within ${DEADLINE_MS / 1000} s`);
  process.exit(1);
}, DEADLINE_MS).unref();

async function main() {
  const expected = `${path.sep}prebuilds${path.sep}${process.platform}-${process.arch}${path.sep}`;
  if (!loaded.includes(expected)) throw new Error(`loaded ${loaded}, not a prebuild for ${process.platform}-${process.arch}`);
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
  await registerMode();
}

/** The installed package's zero-code mode and command: an unmodified app served by 2 workers. */
async function registerMode() {
  const { spawn, execFileSync } = require('node:child_process');
  const { mkdtempSync, rmSync, writeFileSync } = require('node:fs');
  const { tmpdir } = require('node:os');
  const projectDir = path.resolve(process.argv[2]);
  const manifest = require(path.join(packageDir, 'package.json'));
  const version = execFileSync(process.execPath, [path.join(packageDir, manifest.bin.prefork), '--version'], { encoding: 'utf8' }).trim();
  if (version !== manifest.version) throw new Error(`prefork --version printed ${version}`);
  const appDir = mkdtempSync(path.join(tmpdir(), 'prefork-smoke-'));
  process.once('exit', () => rmSync(appDir, { recursive: true, force: true }));
  const appPath = path.join(appDir, 'app.js');
  writeFileSync(appPath, `require('http').createServer((q, s) => s.end(String(process.pid))).listen(0, '127.0.0.1', function () { console.log('PORT ' + this.address().port) });\n`);
  const primary = spawn(process.execPath, ['-r', 'prefork/register', appPath], { cwd: projectDir, env: { ...process.env, PREFORK_WORKERS: '2' }, stdio: ['ignore', 'pipe', 'inherit'] });
  started.add(primary);
  try {
    let output = '';
    const port = await new Promise((resolve, reject) => {
      primary.stdout.on('data', (chunk) => {
        output += chunk;
        const ports = [...output.matchAll(/PORT (\d+)/g)];
        if (ports.length === 2) resolve(Number(ports[0][1]));
      });
      primary.once('exit', (code) => reject(new Error(`register mode exited with ${code}`)));
    });
    const pids = new Set();
    for (let i = 0; i < 40; i++) {
      pids.add(await new Promise((resolve, reject) =>
        http.get({ port, host: '127.0.0.1', agent: false }, (response) => {
          let text = '';
          response.on('data', (chunk) => (text += chunk)).on('end', () => resolve(text));
        }).on('error', reject),
      ));
    }
    if (pids.size !== 2) throw new Error(`expected 2 worker pids to answer, got ${[...pids]}`);
    const exited = new Promise((resolve) => primary.once('exit', (code) => resolve(code)));
    primary.kill('SIGTERM');
    if ((await exited) !== 0) throw new Error('the primary did not exit 0 on SIGTERM');
    console.log(`smoke: node -r prefork/register served an unmodified app from 2 workers; prefork --version ${version}`);
  } finally {
    primary.kill('SIGKILL');
  }
}

main().catch((error) => {
  console.error('smoke test failed:', error);
  process.exit(1);
});
