// Adversarial workers: one fixture per channel the primary reads from a worker (frames without fds, frames with fds,
// metrics answers, stats answers, the heartbeat memfd, the counter table), in test/fixtures/adversary/. Slot 1's
// first workers attack, one attack each, when the test sends them SIGUSR2; slot 0 behaves. After each attack the
// primary must still serve slot 0, keep its fds and RSS bounded, answer /metrics with 200, and have logged, killed
// and replaced the attacker. The primary is a real process (test/fixtures/adversary/primary.js), on loopback.
import http from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { MAX_UNREAD_FDS } from '../src/limits';
import { fixture, get, waitFor } from './helpers';
import { type AppEvent, load, Primary, stopAllPrimaries } from './primary';

afterEach(() => stopAllPrimaries());

const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rssBytes = (pid: number) => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const MB = 2 ** 20;

function scrape(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (response) => response.resume().on('end', () => resolve(response.statusCode!))).on('error', reject);
  });
}

/** Starts the primary with `attack`'s workers; its fds and RSS are sampled every 5 ms from the first scrape on. */
async function startPrimary(attack: string) {
  const primary = new Primary({}, { script: fixture('adversary/primary.js'), env: { ATTACK: attack } });
  const ready = await primary.waitForEvent('all-ready', { timeout: 20000 });
  const pid = primary.process.pid!;
  const port = (ready.addresses as Array<{ port: number }>)[0].port;
  const metricsUrl = (ready.metrics as { url: string }).url;
  const steady = (ready.workers as AppEvent[]).find((worker) => worker.id === 0)!.pid!;
  expect(await scrape(metricsUrl)).toBe(200);
  await get(port);
  const base = { fds: openFds(pid), rss: rssBytes(pid) };
  const most = { ...base };
  const sampler = setInterval(() => {
    try {
      most.fds = Math.max(most.fds, openFds(pid));
      most.rss = Math.max(most.rss, rssBytes(pid));
    } catch {
      // the primary exited: the checks below say so
    }
  }, 5);
  return { primary, pid, port, metricsUrl, steady, base, most, stopSampling: () => clearInterval(sampler) };
}

const cases: Array<[channel: string, attack: string, logged: RegExp[]]> = [
  ['frames without fds', 'frames', [
    /a malformed frame/, // garbage bytes
    /a malformed frame/, // a 16 MiB body announced
    /an unknown message type "rm -rf"/,
    /a malformed frame/, // 9 fds announced, none sent
    /more than 20000 frames in a second/, // a flood of well-formed frames from a thread
    /left \d+ messages unread \(1024 fds/, // socket requests whose answers (each with an fd) it never reads
  ]],
  // The primary's end takes one fd per frame (a socket.io handover): 32 never enter its fd table.
  ['frames with fds', 'fds', [/more than 1 fds in one frame/, /more than 1 fds in one frame/, /more than 1 fds in one frame/]],
  ['metrics answers', 'metrics', [/metrics larger than 16777216 bytes/, /metrics that are not JSON/, /a malformed metrics part/]],
  ['stats answers', 'stats', [/malformed stats/, /malformed stats/, /more than 20000 frames in a second/]],
  ['heartbeat memfd writes', 'heartbeat', [
    /its liveness record holds a heartbeat word that is no time \(-1\)/,
    /its liveness record holds a heartbeat \d+ ms in the future/,
    /its liveness record holds a heartbeat word that is no time \(0\)/,
  ]],
];

test.each(cases)('%s: the attacker is logged, killed and replaced; slot 0 serves, /metrics answers, fds and RSS stay bounded', async (_channel, attack, logged) => {
  const { primary, pid, port, metricsUrl, steady, base, most, stopSampling } = await startPrimary(attack);
  const traffic = load(port, { concurrency: 2 });
  let served: Awaited<ReturnType<typeof traffic.stop>> | undefined;
  try {
    for (const [index, line] of logged.entries()) {
      const generation = index + 1;
      const attacker = await primary.waitFor((event) => event.event === 'ready' && event.id === 1 && event.generation === generation);
      process.kill(attacker.pid!, 'SIGUSR2');
      const during = scrape(metricsUrl);
      const exit = await primary.waitFor((event) => event.event === 'exit' && event.id === 1 && event.generation === generation, { timeout: 10000 });
      expect({ generation, ...exit }).toMatchObject({ generation, pid: attacker.pid, signal: 'SIGKILL', exitReason: 'protocol' });
      // stderr is another pipe than the events' stdout: its line may come a little later.
      const lines = () => primary.stderr.split('\n').filter((text) => text.startsWith(`prefork: worker 1 (pid ${attacker.pid}) `));
      await waitFor(() => lines().length > 0 || undefined, 5000, `a line about worker 1 (pid ${attacker.pid}) on stderr`).catch(() => {});
      expect({ generation, lines: lines() }).toEqual({ generation, lines: [expect.stringMatching(new RegExp(`broke the control protocol \\(.*${line.source}.*\\); killing it$`))] });
      expect(await during).toBe(200);
    }
    await primary.waitFor((event) => event.event === 'ready' && event.id === 1 && event.generation === logged.length + 1);
  } finally {
    stopSampling();
    served = await traffic.stop(); // also when a check failed: a load left running would hold sockets into later files
  }
  expect(served.byPid.get(String(steady))).toBeGreaterThan(0); // slot 0 served all along
  expect(primary.events.filter((event) => event.event === 'exit' && event.id === 0)).toEqual([]);
  expect(await scrape(metricsUrl)).toBe(200);
  // The unread socket answers of the frames attack hold up to MAX_UNREAD_FDS fds until the attacker is killed.
  expect(most.fds).toBeLessThan(base.fds + 16 + (attack === 'frames' ? MAX_UNREAD_FDS : 0));
  expect(most.rss).toBeLessThan(base.rss + 64 * MB);
  await waitFor(() => openFds(pid) <= base.fds + 2 || undefined, 5000, "the primary's fds back to where they were");
  const answered = new Set(await Promise.all(Array.from({ length: 32 }, () => get(port))));
  expect(answered.size).toBe(2); // slot 0 and slot 1's replacement
}, 60000);

test("counter-table words: a worker that fills the shared table with garbage and LOCKED words leaves the primary untouched (it never reads the table on its own)", async () => {
  const { primary, pid, port, metricsUrl, steady, base, most, stopSampling } = await startPrimary('counter-table');
  try {
    const attacker = primary.events.find((event) => event.event === 'ready' && event.id === 1)!;
    process.kill(attacker.pid!, 'SIGUSR2');
    // The primary cannot tell who wrote a word, so nothing is killed: it answers, and both slots serve on.
    for (let i = 0; i < 5; i++) expect(await scrape(metricsUrl)).toBe(200);
    await waitFor(async () => new Set(await Promise.all(Array.from({ length: 16 }, () => get(port)))).size === 2 || undefined, 5000, 'both slots to answer');
    // It still replaces a worker: the attacker, killed from outside.
    process.kill(attacker.pid!, 'SIGKILL');
    await primary.waitFor((event) => event.event === 'ready' && event.id === 1 && event.generation === 2);
    expect(await scrape(metricsUrl)).toBe(200);
  } finally {
    stopSampling();
  }
  expect(primary.events.filter((event) => event.event === 'exit' && event.id === 0)).toEqual([]);
  expect(new Set(await Promise.all(Array.from({ length: 32 }, () => get(port))))).toContain(String(steady));
  expect(most.fds).toBeLessThan(base.fds + 16);
  expect(most.rss).toBeLessThan(base.rss + 64 * MB);
  expect(openFds(pid)).toBeLessThanOrEqual(base.fds + 2);
}, 60000);
