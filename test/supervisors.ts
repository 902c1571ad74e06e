// In-process supervisors of test/fixtures/app.js for a test file: started with a behaviour file each (the
// workers read it when they start, so a test can change how the next ones behave), all shut down after a test.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { supervise, type Supervisor, type SupervisorOptions } from '../src';
import { childrenOf, fixture, waitFor } from './helpers';

export class TestSupervisors {
  /** A scratch folder for this file, writable by workers that run as another user. */
  readonly scratch = mkdtempSync(join(tmpdir(), 'prefork-test-'));
  private started: Supervisor[] = [];
  private readonly behaviourFiles = new Map<Supervisor, string>();

  constructor() {
    chmodSync(this.scratch, 0o777);
  }

  /** 2 workers of app.js on port 0, no signals, no exit: `options` override. */
  start(options: SupervisorOptions = {}, behaviour = ''): Supervisor {
    const behaviourFile = join(this.scratch, `behaviour-${this.started.length}`);
    writeFileSync(behaviourFile, behaviour);
    const supervisor = supervise({
      script: fixture('app.js'), args: [], execArgv: [], workers: 2, listen: 0, signals: false, exitProcess: false, ...options,
      env: { TEST_BEHAVIOUR_FILE: behaviourFile, TEST_OPTIONS: JSON.stringify({ listen: 0 }), ...options.env },
    });
    this.started.push(supervisor);
    this.behaviourFiles.set(supervisor, behaviourFile);
    return supervisor;
  }

  /** How the next workers `supervisor` starts behave. */
  behave(supervisor: Supervisor, behaviour: string): void {
    writeFileSync(this.behaviourFiles.get(supervisor)!, behaviour);
  }

  /** Shuts every supervisor down; then no child of this process may be left. */
  async stopAll(): Promise<void> {
    await Promise.all(this.started.map((supervisor) => supervisor.shutdown({ timeout: 1000 })));
    this.started = [];
    await waitFor(() => childrenOf().every((child) => child.state === 'Z') || undefined, 3000, 'no child left').catch(() => {});
    expect(childrenOf()).toEqual([]);
  }

  remove(): void {
    rmSync(this.scratch, { recursive: true, force: true });
  }
}
