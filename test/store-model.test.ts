// Model check of the shared counters: 3 workers do random operations on 4 keys with windows of 3–15 ms while
// workers are SIGKILLed; every result is logged and checked against what a sequence of windowed counters
// allows:
// - a window end seen in any result was opened by an increment that answered count 1 with it (a window's end
//   never moves: no process's clock rewrites a live window), allowing one unlogged open per killed worker;
// - with increments and gets only: the counts answered within one window are distinct (no hit lost or counted
//   twice), and a window opened only once the key's previous window had ended (no window ends early).
// Resets and decrements (which end a window by design) run in a second pass, checked by the first rule.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Supervisor } from '../src';
import { fixture, waitFor } from './helpers';
import { TestSupervisors } from './supervisors';

const supervisors = new TestSupervisors();
afterEach(() => supervisors.stopAll());
afterAll(() => supervisors.remove());

interface Line { op: string; key: string; count: number; resetAt: number; now: number }

async function run(all: boolean): Promise<{ lines: Line[]; kills: number }> {
  const runId = `${all ? 'all' : 'ig'}${Date.now()}`;
  const logPrefix = join(supervisors.scratch, `model-${runId}`);
  const until = Date.now() + 3000;
  const supervisor: Supervisor = supervisors.start({
    script: fixture('store-model.js'), workers: 3, waitReady: true, listen: [], restart: { delay: 1, maxRestarts: 1000 },
    env: { MODEL_LOG: logPrefix, MODEL_UNTIL: String(until), MODEL_RUN: runId, MODEL_OPS: all ? 'all' : 'ig' },
  });
  await supervisor.ready();
  let kills = 0;
  while (Date.now() < until - 300) {
    await new Promise((resolve) => setTimeout(resolve, 120 + Math.random() * 120));
    const victim = supervisor.workers[Math.floor(Math.random() * supervisor.workers.length)];
    if (victim) {
      process.kill(victim.pid, 'SIGKILL');
      kills += 1;
    }
  }
  await waitFor(() => Date.now() > until + 200 || undefined, 5000, 'the run to end');
  await supervisor.shutdown({ timeout: 0 });
  const lines: Line[] = [];
  for (const file of readdirSync(supervisors.scratch).filter((name) => name.startsWith(`model-${runId}.`))) {
    for (const text of readFileSync(join(supervisors.scratch, file), 'utf8').split('\n')) {
      const [op, key, count, resetAt, now] = text.split(' ');
      if (op && now) lines.push({ op, key, count: Number(count), resetAt: Number(resetAt), now: Number(now) });
    }
  }
  return { lines, kills };
}

function check(lines: Line[], kills: number, all: boolean): void {
  const results = lines.filter((line) => line.op === 'I' || line.op === 'G');
  expect(results.filter((line) => line.op === 'I').length).toBeGreaterThan(10000);
  const opened = new Set(lines.filter((line) => line.op === 'I' && line.count === 1).map((line) => `${line.key} ${line.resetAt}`));
  const windows = new Map<string, Line[]>();
  for (const line of results) {
    const id = `${line.key} ${line.resetAt}`;
    windows.set(id, [...(windows.get(id) ?? []), line]);
  }
  const neverOpened = [...windows.keys()].filter((id) => !opened.has(id));
  expect(neverOpened.length).toBeLessThanOrEqual(kills); // only an opener killed before it logged
  if (all) return;
  {
    for (const [id, seen] of windows) {
      const counts = seen.filter((line) => line.op === 'I').map((line) => line.count).sort((a, b) => a - b);
      const duplicates = counts.filter((count, i) => i > 0 && counts[i - 1] === count);
      if (duplicates.length > 0) throw new Error(`window ${id}: counts answered twice: ${duplicates.join(', ')} (a hit lost or counted twice)`);
    }
  }
  // A window opened (count 1) at `now`: the key's previous window (ends only grow) had ended by then.
  const byKey = new Map<string, number[]>();
  for (const id of opened) {
    const [key, end] = id.split(' ');
    byKey.set(key, [...(byKey.get(key) ?? []), Number(end)]);
  }
  for (const line of lines.filter((entry) => entry.op === 'I' && entry.count === 1)) {
    const earlier = (byKey.get(line.key) ?? []).filter((end) => end < line.resetAt);
    const previous = Math.max(-Infinity, ...earlier);
    if (previous > line.now) throw new Error(`key ${line.key}: a window opened at ${line.now} while the previous one ran until ${previous}`);
  }
}

test('increments and gets from 3 workers while workers are SIGKILLed: no window moves or ends early, no hit is lost or counted twice', async () => {
  const { lines, kills } = await run(false);
  check(lines, kills, false);
}, 30000);

test('with resets and decrements mixed in: no window end ever moves', async () => {
  const { lines, kills } = await run(true);
  check(lines, kills, true);
}, 30000);
