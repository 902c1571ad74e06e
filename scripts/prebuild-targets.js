// The six prebuilds a release ships: the platforms prefork runs on, one Node-API binary each.
// prebuildify names them <platform>-<arch>/prefork[.<libc>].node; node-gyp-build picks the one that fits.
'use strict';

const RELEASE_TARGETS = [
  { name: 'linux-x64-glibc', platform: 'linux', arch: 'x64', libc: 'glibc', file: 'linux-x64/prefork.glibc.node' },
  { name: 'linux-arm64-glibc', platform: 'linux', arch: 'arm64', libc: 'glibc', file: 'linux-arm64/prefork.glibc.node' },
  { name: 'linux-x64-musl', platform: 'linux', arch: 'x64', libc: 'musl', file: 'linux-x64/prefork.musl.node' },
  { name: 'linux-arm64-musl', platform: 'linux', arch: 'arm64', libc: 'musl', file: 'linux-arm64/prefork.musl.node' },
  { name: 'darwin-x64', platform: 'darwin', arch: 'x64', libc: undefined, file: 'darwin-x64/prefork.node' },
  { name: 'darwin-arm64', platform: 'darwin', arch: 'arm64', libc: undefined, file: 'darwin-arm64/prefork.node' },
];

module.exports = { RELEASE_TARGETS };
