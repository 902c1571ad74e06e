#!/usr/bin/env node
// prepublishOnly: refuses to publish unless prebuilds/ holds all six release targets, each a binary of the
// arch it is filed under. A tarball without them fails to install wherever there is no compiler, or where
// install scripts are off (npm 11's allowScripts, pnpm 10).
'use strict';

const { closeSync, existsSync, openSync, readSync } = require('node:fs');
const path = require('node:path');
const { RELEASE_TARGETS } = require('./prebuild-targets');

const prebuilds = path.resolve(__dirname, '..', 'prebuilds');
// ELF e_machine and Mach-O cputype of each arch.
const ELF_MACHINE = { x64: 62, arm64: 183 };
const MACHO_CPU = { x64: 0x01000007, arm64: 0x0100000c };

/** What arch the file's header says it is for, or why it is not a binary for the target's platform. */
function problem(target, file) {
  const header = Buffer.alloc(20);
  const fd = openSync(file, 'r');
  const got = readSync(fd, header, 0, header.length, 0);
  closeSync(fd);
  if (got < header.length) return 'is too short to be a binary';
  if (target.platform === 'linux') {
    if (header.readUInt32BE(0) !== 0x7f454c46) return 'is not an ELF binary';
    const machine = header.readUInt16LE(18);
    return machine === ELF_MACHINE[target.arch] ? undefined : `is for ELF machine ${machine}, not ${target.arch}`;
  }
  if (header.readUInt32LE(0) !== 0xfeedfacf) return 'is not a 64-bit Mach-O binary';
  const cpu = header.readUInt32LE(4);
  return cpu === MACHO_CPU[target.arch] ? undefined : `is for Mach-O cpu 0x${cpu.toString(16)}, not ${target.arch}`;
}

const missing = [];
const wrong = [];
for (const target of RELEASE_TARGETS) {
  const file = path.join(prebuilds, target.file);
  if (!existsSync(file)) missing.push(`${target.name} (prebuilds/${target.file})`);
  else {
    const why = problem(target, file);
    if (why) wrong.push(`prebuilds/${target.file} ${why}`);
  }
}
if (missing.length > 0 || wrong.length > 0) {
  console.error(`prefork: refusing to publish without all ${RELEASE_TARGETS.length} prebuilds.`);
  if (missing.length > 0) console.error(`Missing: ${missing.join(', ')}.`);
  for (const line of wrong) console.error(`Wrong: ${line}.`);
  console.error('The release workflow (.github/workflows/release.yml) builds all of them and publishes; `npm run prebuilds` builds the ones this machine can.');
  process.exit(1);
}
console.log(`prefork: all ${RELEASE_TARGETS.length} prebuilds present: ${RELEASE_TARGETS.map((target) => target.name).join(', ')}`);
