// The primary's pid file (nginx's `pid` directive): written atomically at start, removed at exit.
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { preforkError } from '../errors';

/**
 * Writes our pid to `path` through a temporary file and a rename, so a reader never sees half a file. The primary
 * may be root and the directory writable by others: the temporary name is random and opened with O_EXCL|O_NOFOLLOW,
 * so a link planted there cannot turn the write into one to another file, and rename() replaces a link at `path`
 * instead of following it.
 */
export function writePidFile(path: string): void {
  const temporary = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  let created = false;
  try {
    const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    created = true;
    try {
      writeSync(fd, `${process.pid}\n`);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (cause) {
    if (created) {
      try {
        unlinkSync(temporary);
      } catch {
        // renamed already, or removed by someone else
      }
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
