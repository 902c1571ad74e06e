// listen() at its edges behaves under `-r prefork/register` exactly as under plain node: one app
// (fixtures/apps/compat/listen-parity.js) prints what each case did, run once by plain node and once with 2
// workers. Each worker must print plain node's lines: nothing here states what Node does, Node does.
import { app, AppRun, stopAllApps } from './apps';
import { get } from './helpers';

const fixture = app('compat/listen-parity.js');

/** Each process's "case => outcome" lines, by pid, once every one of `processes` printed DONE. */
async function outcomes(run: AppRun, processes: number): Promise<Map<number, Map<string, string>>> {
  await run.waitForMatches(/^PARITY \d+ DONE$/gm, processes);
  const byPid = new Map<number, Map<string, string>>();
  for (const [, pid, name, outcome] of run.matches(/^PARITY (\d+) (.*) => (.*)$/gm)) {
    if (!byPid.has(Number(pid))) byPid.set(Number(pid), new Map());
    byPid.get(Number(pid))!.set(name, outcome);
  }
  return byPid;
}

let plain: Map<string, string>;
let workers: Map<string, string>[];
let preforkRun: AppRun;

beforeAll(async () => {
  const plainRun = new AppRun([fixture]);
  [plain] = [...(await outcomes(plainRun, 1)).values()];
  await plainRun.stop();
  preforkRun = new AppRun(['-r', 'prefork/register', fixture]);
  workers = [...(await outcomes(preforkRun, 2)).values()];
}, 60000);

afterAll(stopAllApps);

/** The cases `which` picks (by name and plain node's outcome), as plain node and as each worker printed them. */
function compare(which: (name: string, plainOutcome: string) => boolean): void {
  const expected = [...plain].filter(([name, outcome]) => which(name, outcome)).map(([name, outcome]) => `${name}: ${outcome}`);
  expect(expected.length).toBeGreaterThan(0);
  expect(workers).toHaveLength(2);
  for (const worker of workers) expect([...worker].filter(([name]) => plain.has(name) && which(name, plain.get(name)!)).map(([name, outcome]) => `${name}: ${outcome}`)).toEqual(expected);
  for (const worker of workers) expect([...worker.keys()]).toEqual([...plain.keys()]);
}

/** One listen() call, no close() or second listen(). */
const single = (name: string) => /^listen\(.*\)$/.test(name) && !name.includes(' then ');

test("close() right after listen(): no 'listening', no callback, and the close callback's error as in Node", () => {
  compare((name) => name.endsWith('then close(cb)'));
});

test('a second listen() while the first waits: ERR_SERVER_ALREADY_LISTEN thrown without a host, the first replaced with one', () => {
  compare((name) => /\) then listen\(/.test(name));
});

test('an AbortSignal aborted before the listen closes the server before it listens', () => {
  compare((name) => single(name) && name.includes('signal: aborted'));
});

test('bad arguments throw at once what Node throws: ERR_INVALID_ARG_VALUE, ERR_SOCKET_BAD_PORT, ERR_INVALID_ARG_TYPE', () => {
  compare((name, outcome) => single(name) && outcome.startsWith('threw '));
});

test("valid ports and hosts listen where Node listens ({ port: 0, host: '::1' }, port undefined or null, strings)", () => {
  compare((name, outcome) => single(name) && !outcome.startsWith('threw ') && !name.includes('signal: aborted'));
});

test('listens the app abandoned (closed or replaced before their socket came) do not hold up readiness', async () => {
  await preforkRun.waitForMatches(/^prefork: 2 workers ready/gm, 1, { source: 'errors' });
  const { port, pids } = await preforkRun.listening(2);
  expect(pids).toContain(Number(await get(port)));
  expect(await preforkRun.stop()).toEqual({ code: 0, signal: null });
});
