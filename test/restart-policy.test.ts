// The restart policy alone (no processes): immediate first restart, backoff, its cap and reset, and the give-up window.
import { decideRestart, NO_CRASHES, RESTART_DEFAULTS, type CrashHistory, type RestartDecision } from '../src/primary/restart-policy';

const policy = { ...RESTART_DEFAULTS, delay: 100, factor: 2, maxDelay: 1000, resetAfter: 30000, maxRestarts: 5, window: 60000 };

/** Crashes one after another, each after running `ranForMs`, `gapMs` apart; the decisions in order. */
function crashes(count: number, { ranForMs = 10, gapMs = 10, start = 1_000_000 } = {}): RestartDecision[] {
  let history: CrashHistory = NO_CRASHES;
  const decisions: RestartDecision[] = [];
  for (let i = 0; i < count; i++) {
    const decision = decideRestart(policy, history, ranForMs, start + i * gapMs);
    decisions.push(decision);
    if (decision.action === 'restart') history = decision.history;
  }
  return decisions;
}

const delays = (decisions: RestartDecision[]) => decisions.map((decision) => (decision.action === 'restart' ? decision.delay : 'give-up'));

test('the first crash restarts at once, so the connections queued on the slot are served', () => {
  expect(decideRestart(policy, NO_CRASHES, 10, 0)).toMatchObject({ action: 'restart', delay: 0 });
});

test('crashes in a row back off by `factor` from `delay`, capped at `maxDelay`', () => {
  const many = { ...policy, maxRestarts: 100 };
  let history: CrashHistory = NO_CRASHES;
  const seen: number[] = [];
  for (let i = 0; i < 8; i++) {
    const decision = decideRestart(many, history, 10, i * 10);
    if (decision.action !== 'restart') throw new Error('gave up');
    seen.push(decision.delay);
    history = decision.history;
  }
  expect(seen).toEqual([0, 100, 200, 400, 800, 1000, 1000, 1000]);
});

test('a worker that ran for `resetAfter` resets the backoff: its crash restarts at once again', () => {
  const [, second] = crashes(2);
  if (second.action !== 'restart') throw new Error('gave up');
  expect(second.delay).toBe(100);
  expect(decideRestart(policy, second.history, policy.resetAfter, 2_000_000)).toMatchObject({ action: 'restart', delay: 0 });
});

test('more than `maxRestarts` restarts within `window` gives up, counting this exit', () => {
  const decisions = crashes(6);
  expect(delays(decisions)).toEqual([0, 100, 200, 400, 800, 'give-up']);
  expect(decisions[5]).toEqual({ action: 'give-up', exits: 6 });
});

test('restarts older than `window` no longer count towards giving up', () => {
  // 5 restarts, then a sixth crash just after the first has left the window
  const decisions = crashes(6, { gapMs: policy.window / 5 + 1 });
  expect(decisions[5].action).toBe('restart');
});

test('maxRestarts 0 gives up at the first crash', () => {
  expect(decideRestart({ ...policy, maxRestarts: 0 }, NO_CRASHES, 10, 0)).toEqual({ action: 'give-up', exits: 1 });
});

test('the history is a new value; the one passed in is not changed', () => {
  const history: CrashHistory = { consecutive: 1, restartTimes: [5] };
  decideRestart(policy, history, 10, 10);
  expect(history).toEqual({ consecutive: 1, restartTimes: [5] });
});
