// Where no binary fits (no prebuild for this platform, nothing built from source, e.g. install scripts off):
// importing prefork still works, and the first call that needs the addon says which platform and how to fix it.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(__dirname, '..');
const scratch = mkdtempSync(join(tmpdir(), 'prefork-load-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

test('no binary fits: the error names the platform, npm rebuild and the install-scripts approval', () => {
  // An installed copy: lib/ and package.json, a prebuild only for another arch, no build/.
  const installed = join(scratch, 'node_modules', 'prefork');
  mkdirSync(installed, { recursive: true });
  cpSync(join(root, 'lib'), join(installed, 'lib'), { recursive: true });
  cpSync(join(root, 'package.json'), join(installed, 'package.json'));
  const otherArch = process.arch === 'arm64' ? 'x64' : 'arm64';
  mkdirSync(join(installed, 'prebuilds', `${process.platform}-${otherArch}`), { recursive: true });
  symlinkSync(join(root, 'node_modules', 'node-gyp-build'), join(scratch, 'node_modules', 'node-gyp-build'));

  const program = `
    const prefork = require('prefork');
    console.log('isWorker', prefork.isWorker());
    prefork.createListenSocket({ port: 0 }).then(() => console.log('loaded'), (error) => { console.error(error.code + ': ' + error.message); process.exit(7); });`;
  const run = spawnSync(process.execPath, ['-e', program], { cwd: scratch, encoding: 'utf8', timeout: 20_000 });

  expect(run.stdout).toBe('isWorker false\n'); // importing it worked
  expect(run.status).toBe(7);
  const libc = process.platform === 'linux' ? / \((glibc [0-9.]+|musl)\)/.source : '';
  expect(run.stderr).toMatch(new RegExp(`^ERR_PREFORK_NATIVE_LOAD: prefork could not load its native addon for ${process.platform}-${process.arch}${libc}, Node ${process.version}`));
  expect(run.stderr).toContain(`${join(installed, 'prebuilds', `${process.platform}-${process.arch}`)}`);
  expect(run.stderr).toContain('\n  npm rebuild prefork\n');
  expect(run.stderr).toContain('`npm install-scripts approve prefork` (npm 11)');
  expect(run.stderr).toContain('`pnpm approve-builds` (pnpm)');
});
