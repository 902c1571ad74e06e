#!/usr/bin/env node
// The packed tarball, installed as users install it: into a fresh project, with no compiler on PATH, by each
// Node line's own npm run, with install scripts on (npm's default), off (--ignore-scripts), denied by npm's
// allowScripts (--strict-allow-scripts), and by pnpm 10 (which skips them). Each install then serves an
// unmodified app under `node -r prefork/register` (test/smoke.js). arm64 runs under qemu-user.
// Usage: node .ci/check-install.js <tarball> <work dir>. Prints "ok: ..." or "FAILED: ..." per check; exits 1 on any failure.
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } = require('node:fs');
const path = require('node:path');
const { nodeBinary } = require('../scripts/node-binary');

const root = path.resolve(__dirname, '..');
const tarball = path.resolve(process.argv[2]);
const work = path.resolve(process.argv[3]);
const npmCli = path.join(execFileSync('npm', ['root', '-g'], { encoding: 'utf8' }).trim(), 'npm', 'bin', 'npm-cli.js');
const LINES = [22, 24, 26];
let failures = 0;

/** A bin folder with everything on PATH but compilers and make: what a node:*-slim image has. */
function pathWithoutCompiler() {
  const bin = path.join(work, 'no-compiler-bin');
  rmSync(bin, { recursive: true, force: true });
  mkdirSync(bin, { recursive: true });
  const compiler = /^(cc|c\+\+|cpp|gcc|g\+\+|clang|clang\+\+|make|gmake|cmake|ld)(-[0-9.]+)?$|-(gcc|g\+\+|cc|c\+\+|cpp|ld)(-[0-9.]+)?$/;
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      if (compiler.test(name) || name === 'node' || name === 'npm' || name === 'npx' || existsSync(path.join(bin, name))) continue;
      symlinkSync(path.join(dir, name), path.join(bin, name));
    }
  }
  return bin;
}

function check(name, run) {
  try {
    run();
    console.log(`ok: ${name}`);
  } catch (error) {
    failures++;
    console.log(`FAILED: ${name}: ${String(error.message).trim().split('\n').slice(-12).join('\n  ')}`);
  }
}

function exec(file, args, options) {
  const result = spawnSync(file, args, { encoding: 'utf8', timeout: 300_000, ...options });
  if (result.status !== 0) throw new Error(`${path.basename(file)} ${args.join(' ')} exited with ${result.status ?? result.signal}\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

const noCompiler = pathWithoutCompiler();
/** A fresh project; its package.json gets `extra`. */
function project(name, extra = {}) {
  const dir = path.join(work, 'installs', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true, ...extra }));
  return dir;
}
const envFor = (node) => ({ ...process.env, PATH: `${path.dirname(node)}:${noCompiler}`, CC: '', CXX: '', npm_config_nodedir: '' });
const npm = (node, dir, args) => exec(node, [npmCli, 'install', '--no-audit', '--no-fund', ...args, tarball], { cwd: dir, env: envFor(node) });
const smoke = (node, dir) => exec(node, [path.join(root, 'test', 'smoke.js'), dir], { cwd: dir, env: envFor(node) });
const version = (node) => execFileSync(node, ['-p', 'process.arch + " Node " + process.version'], { encoding: 'utf8' }).trim();

const contents = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).split('\n');
for (const file of ['package/prebuilds/linux-x64/prefork.glibc.node', 'package/prebuilds/linux-arm64/prefork.glibc.node']) {
  check(`the tarball holds ${file.slice('package/'.length)}`, () => {
    if (!contents.includes(file)) throw new Error('missing');
  });
}
check('no compiler on the installs\' PATH', () => {
  const found = spawnSync('sh', ['-c', 'command -v cc gcc g++ c++ make'], { env: { PATH: noCompiler }, encoding: 'utf8' }).stdout.trim();
  if (found) throw new Error(`still found: ${found}`);
});

for (const node of [process.execPath, ...LINES.map((line) => nodeBinary('linux-x64', line))]) {
  const label = version(node);
  const tag = label.replace(/\W+/g, '-');
  for (const [mode, args] of [['scripts on', []], ['scripts off', ['--ignore-scripts']]]) {
    check(`${label}, npm install with ${mode}, no compiler: serves under -r prefork/register`, () => {
      const dir = project(`${tag}-${mode.replace(' ', '-')}`);
      npm(node, dir, args);
      smoke(node, dir);
    });
  }
}

const node24 = nodeBinary('linux-x64', 24);
check('npm --strict-allow-scripts with prefork denied in allowScripts: serves', () => {
  const dir = project('allow-scripts-denied', { allowScripts: { [`file:${tarball}`]: false } });
  npm(node24, dir, ['--strict-allow-scripts']);
  smoke(node24, dir);
});
check('pnpm 10 add (it skips dependencies\' build scripts): serves', () => {
  const dir = project('pnpm');
  exec(node24, [npmCli.replace(/npm-cli\.js$/, 'npx-cli.js'), '--yes', 'pnpm@10', 'add', tarball], { cwd: dir, env: envFor(node24) });
  smoke(node24, dir);
});

if (existsSync('/proc/sys/fs/binfmt_misc/qemu-aarch64')) {
  const arm64 = nodeBinary('linux-arm64', 24);
  check(`${version(arm64)} under qemu, npm install with scripts on, no compiler: serves`, () => {
    const dir = project('arm64-scripts-on');
    npm(arm64, dir, []);
    smoke(arm64, dir);
  });
} else {
  failures++;
  console.log('FAILED: arm64: qemu-user is not registered with binfmt_misc (scripts/setup-qemu-arm64.sh)');
}

process.exit(failures === 0 ? 0 : 1);
