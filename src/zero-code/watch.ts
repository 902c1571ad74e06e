// Development mode (--watch, PREFORK_WATCH=1): a rolling reload, as SIGHUP makes, when a file of the app changes.
//
// Not fs.watch(root, { recursive: true }): on Linux, Node 20 and 22 emulate it with one inotify watch per file and
// per directory, node_modules included (tens of thousands for a framework app, past the kernel's limit on many
// machines), set up by a synchronous walk in the primary. One watch per directory of the app, none below
// node_modules or a dot-directory, sees the same edits (a directory's watch reports writes and renames of its files).
import { readdirSync, statSync, watch, type FSWatcher } from 'node:fs';
import { extname, join, sep } from 'node:path';

/** Saves come in bursts (write, rename, touch, a formatter's second write): one reload for a burst. */
const WATCH_DEBOUNCE_MS = 300;

/** node_modules, .git and dot-files (.env.local, editor swap files) are not the app's edits. */
function isIgnored(relativePath: string): boolean {
  return relativePath.split(sep).some((part) => part === 'node_modules' || part.startsWith('.'));
}

/**
 * The files whose change reloads: code and JSON, as nodemon's default. Not whatever else the app's directory
 * holds: a log the app (or `prefork --watch app.js > app.log`) writes there reloaded the workers on every line.
 */
export const WATCHED_EXTENSIONS = ['.js', '.mjs', '.cjs', '.json', '.ts', '.mts', '.cts', '.jsx', '.tsx'];

/**
 * Calls `reload` once a burst of changes under `root` has settled; a change during a reload makes one more reload
 * after it. `log` gets one line per reload and per directory that cannot be watched. Returns the function that stops.
 */
export function reloadOnChange(root: string, reload: () => Promise<void>, log: (line: string) => void): () => void {
  const watchers = new Map<string, FSWatcher>(); // by path relative to root ('' is root)
  let timer: NodeJS.Timeout | undefined;
  let changed: string | undefined; // the last file of the burst, for the log line
  let reloading = false;

  const settle = () => {
    timer = undefined;
    if (reloading) return; // the running reload's end looks again
    const file = changed!;
    changed = undefined;
    reloading = true;
    log(`${file} changed: reloading`);
    void reload()
      .catch((error: Error) => log(`reload failed: ${error.message}`))
      .finally(() => {
        reloading = false;
        if (changed !== undefined && timer === undefined) settle();
      });
  };

  const unwatch = (directory: string) => {
    for (const [path, watcher] of watchers) {
      if (path === directory || path.startsWith(directory + sep)) {
        watcher.close();
        watchers.delete(path);
      }
    }
  };

  const add = (directory: string) => {
    if (watchers.has(directory)) return;
    const absolute = join(root, directory);
    let watcher: FSWatcher;
    try {
      watcher = watch(absolute, (event, name) => {
        const file = name === null ? directory : join(directory, name.toString());
        if (isIgnored(file)) return;
        if (event === 'rename') {
          let isDirectory: boolean | undefined;
          try {
            isDirectory = statSync(join(root, file)).isDirectory();
          } catch {
            unwatch(file); // gone
          }
          if (isDirectory) add(file);
        }
        if (!WATCHED_EXTENSIONS.includes(extname(file))) return;
        changed = file;
        clearTimeout(timer);
        timer = setTimeout(settle, WATCH_DEBOUNCE_MS);
      });
    } catch (error) {
      const { code, message } = error as NodeJS.ErrnoException;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') log(`cannot watch ${absolute} (${message})${code === 'ENOSPC' ? '; raise fs.inotify.max_user_watches' : ''}`);
      return;
    }
    watcher.on('error', () => unwatch(directory)); // the directory went away
    watchers.set(directory, watcher);
    let entries: import('node:fs').Dirent[] = [];
    try {
      entries = readdirSync(absolute, { withFileTypes: true });
    } catch {
      // removed meanwhile: its parent's watch reports that
    }
    for (const entry of entries) if (entry.isDirectory() && !isIgnored(entry.name)) add(join(directory, entry.name));
  };

  add('');
  return () => {
    clearTimeout(timer);
    for (const watcher of watchers.values()) watcher.close();
    watchers.clear();
  };
}
