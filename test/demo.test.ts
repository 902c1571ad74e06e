// The examples: `npm start` (an unmodified app under prefork/register) and examples/supervise.js (the API).
import child_process from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { get, isDead } from './helpers';

const root = join(__dirname, '..');

/** Runs a command until `ready` matches its stdout; returns the match and the output so far. */
async function runUntil(args: string[], env: NodeJS.ProcessEnv, ready: RegExp, count: number) {
  const child = child_process.spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env } });
  let output = '';
  let errors = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk) => (errors += chunk));
  const matches = await new Promise<RegExpMatchArray[]>((resolve, reject) => {
    const check = () => {
      const found = [...output.matchAll(ready)];
      if (found.length >= count) resolve(found);
    };
    child.stdout.on('data', check);
    child.once('exit', (code) => reject(new Error(`exited early with ${code}: ${output} ${errors}`)));
  });
  const stop = async () => {
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.kill('SIGTERM');
    return exited;
  };
  return { child, matches, output: () => output, errors: () => errors, stop };
}

test('npm start: the demo app, unchanged, served by 2 workers under prefork/register; SIGTERM stops it cleanly', async () => {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: { start: string } };
  expect(manifest.scripts.start).toBe('node -r prefork/register examples/demo.js');
  const demo = await runUntil(['-r', 'prefork/register', 'examples/demo.js'], { PORT: '0', PREFORK_WORKERS: '2' }, /^pid (\d+) serving http:\/\/127\.0\.0\.1:(\d+)\/$/gm, 2);
  try {
    const pids = demo.matches.map((match) => Number(match[1]));
    const port = Number(demo.matches[0][2]);
    const answers = new Set<string>();
    for (let i = 0; i < 40; i++) answers.add(await get(port));
    expect([...answers].sort()).toEqual(pids.map((pid) => `hello from pid ${pid}\n`).sort());
    expect(await demo.stop()).toEqual({ code: 0, signal: null });
    expect(demo.errors()).toContain('prefork: 2 workers ready');
    for (const pid of pids) expect(isDead(pid)).toBe(true);
  } finally {
    demo.child.kill('SIGKILL');
  }
});

test('examples/supervise.js: the API way, printing the lifecycle; SIGTERM stops it cleanly', async () => {
  const example = await runUntil(['examples/supervise.js'], { PORT: '0', WORKERS: '2' }, /serving http:\/\/127\.0\.0\.1:(\d+)\//g, 1);
  try {
    const pids = [...example.output().matchAll(/worker \d \(pid (\d+), generation 1\) ready/g)].map((match) => Number(match[1]));
    expect(pids).toHaveLength(2);
    expect(await get(Number(example.matches[0][1]))).toMatch(/^hello from worker \d \(pid \d+\)\n$/);
    expect(await example.stop()).toEqual({ code: 0, signal: null });
    expect(example.output()).toContain('shut down');
    for (const pid of pids) expect(isDead(pid)).toBe(true);
  } finally {
    example.child.kill('SIGKILL');
  }
});
