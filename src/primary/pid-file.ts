// The primary's pid file (nginx's `pid` directive): written atomically at start, removed at exit.
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { preforkError } from '../errors';

/** Writes our pid to `path` through a temporary file and a rename, so a reader never sees half a file. */
export function writePidFile(path: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, `${process.pid}\n`, { mode: 0o644 });
    renameSync(temporary, path);
  } catch (cause) {
    try {
      unlinkSync(temporary);
    } catch {
      // never created
    }
    throw Object.assign(preforkError('ERR_PREFORK_PID_FILE', `Cannot write the pid file ${path}: ${(cause as Error).message}`), { cause });
  }
}

/** Removes the pid file if it is still ours (a newer primary may have written its own). */
export function removePidFile(path: string): void {
  try {
    if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
  } catch {
    // gone already
  }
}
