// Preload for bench/startup.js's breakdown: loads prefork's register preload (STARTUP_REGISTER) itself, so it can
// stamp when this process started, when its preloads began and when prefork's preload was done, as one line on
// stderr. In the primary, SIGWINCH (which neither prefork nor Node uses) asks for the prefork and package files loaded.
'use strict';

const stampedAt = () => (performance.timeOrigin + performance.now()).toFixed(3);
const preloadStart = stampedAt();
// Without STARTUP_REGISTER this is plain node: the same stamps, for comparison.
const register = process.env.STARTUP_REGISTER ? require(process.env.STARTUP_REGISTER) : null;
const role = register === null ? 'plain' : register.runsPrimary ? 'primary' : 'worker';
process.stderr.write(`startup-mark ${JSON.stringify({ pid: process.pid, role, processStart: performance.timeOrigin.toFixed(3), preloadStart, preloadDone: stampedAt() })}\n`);

if (role === 'primary') {
  process.on('SIGWINCH', () => {
    const files = Object.keys(require.cache).filter((file) => file !== __filename);
    const packages = files.filter((file) => file.includes('/node_modules/'));
    process.stderr.write(`startup-modules ${JSON.stringify({ pid: process.pid, prefork: files.length - packages.length, packages: packages.length, files })}\n`);
  });
}
