// `npm run bench`: every benchmark in bench/, one after the other, each writing its section of bench/RESULTS.md.
//
// Usage: node bench/index.js [--quick] [--no-write] [any bench/http.js option]
//   --quick      short runs: the HTTP benchmark in about 2 minutes, then spawn.js, store.js, soak.js, steering.js, startup.js and sticky.js in their quick modes
//   --no-write   print only; leave bench/RESULTS.md and bench/results.svg as they are
// Other options go to bench/http.js (see its header), e.g. `npm run bench -- --duration 10 --rounds 5`.
'use strict';

const childProcess = require('node:child_process');
const path = require('node:path');

const args = process.argv.slice(2);
const write = !args.includes('--no-write');
const quick = args.includes('--quick');
const httpArgs = args.filter((arg) => arg !== '--no-write');

function run(script, scriptArgs, nodeArgs = []) {
  const argv = [...nodeArgs, path.join(__dirname, script), ...scriptArgs, ...(write ? ['--write'] : [])];
  process.stderr.write(`\n$ node ${argv.map((arg) => (path.isAbsolute(arg) ? path.relative(process.cwd(), arg) : arg)).join(' ')}\n`);
  const result = childProcess.spawnSync(process.execPath, argv, { stdio: 'inherit' });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

// One after the other, never together: each measures a machine the others leave alone.
const statuses = [
  run('http.js', httpArgs),
  run('spawn.js', quick ? ['--quick'] : []),
  run('store.js', quick ? ['--quick'] : []),
  run('soak.js', quick ? ['--quick'] : [], ['--expose-gc']),
  run('steering.js', quick ? ['--connections', '100'] : []),
  run('startup.js', quick ? ['--quick'] : []),
  run('sticky.js', quick ? ['--rounds', '1', '--duration', '2'] : []),
];
process.exitCode = statuses.find((status) => status !== 0) ?? 0;
