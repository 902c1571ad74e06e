#!/usr/bin/env node
// Prints the path of an official Node binary for another line or arch, from the npm registry's
// node-<platform>-<arch> packages (the only registry CI may reach), unpacked once into a cache.
// Usage: node scripts/node-binary.js <platform-arch> <major>     e.g. linux-x64 24, linux-arm64 24
'use strict';

const { execFileSync } = require('node:child_process');
const { existsSync, mkdirSync, readdirSync, renameSync, rmSync } = require('node:fs');
const { homedir } = require('node:os');
const path = require('node:path');

/**
 * Root's cache is /var/cache: some tests start workers as `nobody`, who must be able to exec the binary, and
 * /root is closed to other users. Anyone else's is ~/.cache.
 */
function defaultCache() {
  if (process.getuid?.() === 0) return '/var/cache/prefork/node';
  return path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'prefork', 'node');
}

function nodeBinary(target, major) {
  if (!/^[a-z]+-[a-z0-9]+$/.test(target) || !/^\d+$/.test(String(major))) {
    throw new Error(`node-binary: expected <platform-arch> <major> (e.g. linux-x64 24), got ${target} ${major}`);
  }
  const cache = process.env.PREFORK_NODE_CACHE || defaultCache();
  const dir = path.join(cache, `node-${target}-${major}`);
  const binary = path.join(dir, 'bin', 'node');
  if (existsSync(binary)) return binary;
  const staging = `${dir}.${process.pid}.tmp`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true, mode: 0o755 });
  const tarball = execFileSync('npm', ['pack', `node-${target}@${major}`, '--silent', '--pack-destination', staging], { encoding: 'utf8' }).trim().split('\n').pop();
  execFileSync('tar', ['xzf', path.join(staging, tarball), '-C', staging]);
  rmSync(path.join(staging, tarball));
  // The package holds the release under package/: bin/node, include/, share/.
  rmSync(dir, { recursive: true, force: true });
  renameSync(path.join(staging, 'package'), dir);
  rmSync(staging, { recursive: true, force: true });
  if (!existsSync(binary)) throw new Error(`node-binary: node-${target}@${major} has no bin/node (has ${readdirSync(dir).join(', ')})`);
  return binary;
}

module.exports = { nodeBinary };

if (require.main === module) {
  try {
    console.log(nodeBinary(process.argv[2], process.argv[3]));
  } catch (error) {
    console.error(error.message);
    process.exit(1);
  }
}
