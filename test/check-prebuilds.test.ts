// prepublishOnly (scripts/check-prebuilds.js): a set of prebuilds is published only whole, each binary filed
// under the arch its header names. The binaries here are headers only: the script reads no further.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const { RELEASE_TARGETS } = require('../scripts/prebuild-targets') as { RELEASE_TARGETS: Array<{ name: string; platform: string; arch: string; file: string }> };
const scratch = mkdtempSync(join(tmpdir(), 'prefork-check-prebuilds-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The first bytes of a binary for platform and arch: ELF (e_machine) or 64-bit Mach-O (cputype). */
function header(platform: string, arch: string): Buffer {
  const bytes = Buffer.alloc(64);
  if (platform === 'linux') {
    bytes.writeUInt32BE(0x7f454c46, 0);
    bytes.writeUInt16LE(arch === 'x64' ? 62 : 183, 18);
  } else {
    bytes.writeUInt32LE(0xfeedfacf, 0);
    bytes.writeUInt32LE(arch === 'x64' ? 0x01000007 : 0x0100000c, 4);
  }
  return bytes;
}

/** A package folder holding the scripts and the given prebuilds; the script's output and exit code. */
function run(name: string, files: Array<{ file: string; platform: string; arch: string }>) {
  const dir = join(scratch, name);
  cpSync(join(__dirname, '..', 'scripts'), join(dir, 'scripts'), { recursive: true });
  for (const { file, platform, arch } of files) {
    mkdirSync(dirname(join(dir, 'prebuilds', file)), { recursive: true });
    writeFileSync(join(dir, 'prebuilds', file), header(platform, arch));
  }
  const result = spawnSync(process.execPath, [join(dir, 'scripts', 'check-prebuilds.js')], { encoding: 'utf8' });
  return { status: result.status, output: result.stdout + result.stderr };
}

test('all six: accepted', () => {
  const { status, output } = run('all', RELEASE_TARGETS);
  expect(output).toContain('all 6 prebuilds present');
  expect(status).toBe(0);
});

test('only the two Linux glibc ones (what this machine builds): refused, the four others named', () => {
  const { status, output } = run('partial', RELEASE_TARGETS.filter((target) => target.name.endsWith('glibc')));
  expect(status).toBe(1);
  expect(output).toContain('refusing to publish without all 6 prebuilds');
  expect(output).toContain(
    'Missing: linux-x64-musl (prebuilds/linux-x64/prefork.musl.node), linux-arm64-musl (prebuilds/linux-arm64/prefork.musl.node), ' +
      'darwin-x64 (prebuilds/darwin-x64/prefork.node), darwin-arm64 (prebuilds/darwin-arm64/prefork.node).',
  );
});

test('an x64 binary filed as arm64, and a Linux one filed as macOS: refused, each named', () => {
  const files = RELEASE_TARGETS.map((target) =>
    target.name === 'linux-arm64-musl' ? { ...target, arch: 'x64' } : target.name === 'darwin-arm64' ? { ...target, platform: 'linux' } : target,
  );
  const { status, output } = run('mislabelled', files);
  expect(status).toBe(1);
  expect(output).toContain('Wrong: prebuilds/linux-arm64/prefork.musl.node is for ELF machine 62, not arm64.');
  expect(output).toContain('Wrong: prebuilds/darwin-arm64/prefork.node is not a 64-bit Mach-O binary.');
  expect(output).not.toContain('Missing');
});
