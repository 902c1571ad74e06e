// `npm start`'s demo: a preforked server whose workers both answer, and which stops cleanly on SIGTERM.
import child_process from 'node:child_process';
import { join } from 'node:path';
import { get, isDead } from './helpers';

test('the demo serves from two worker pids, reports their lifecycle, and stops cleanly on SIGTERM', async () => {
  const demo = child_process.spawn(process.execPath, [join(__dirname, '..', 'examples', 'demo.js')], {
    env: { ...process.env, PORT: '0', WORKERS: '2' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  demo.stdout.setEncoding('utf8');
  const serving = new Promise<number>((resolve, reject) => {
    demo.stdout.on('data', (chunk) => {
      output += chunk;
      const match = /serving http:\/\/127\.0\.0\.1:(\d+)\//.exec(output);
      if (match) resolve(Number(match[1]));
    });
    demo.once('exit', (code) => reject(new Error(`demo exited early with ${code}: ${output}`)));
  });
  try {
    const port = await serving;
    const workerPids = [...output.matchAll(/worker \d \(pid (\d+), generation 1\) ready/g)].map((match) => Number(match[1]));
    expect(workerPids).toHaveLength(2);
    const answering = new Set([...output.matchAll(/hello from worker \d \(pid (\d+)\)/g)].map((match) => Number(match[1])));
    expect([...answering].sort()).toEqual([...workerPids].sort());
    expect(await get(port)).toMatch(/^hello from worker \d \(pid \d+\)\n$/);

    const exited = new Promise((resolve) => demo.once('exit', (code, signal) => resolve({ code, signal })));
    demo.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(output).toContain('shut down');
    for (const pid of workerPids) expect(isDead(pid)).toBe(true);
  } finally {
    if (demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL');
  }
});
