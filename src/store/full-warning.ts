// A store that fails open says so: one line on stderr per process per minute, not one per request.
const WARNING_INTERVAL_MS = 60_000;
let lastWarning = -Infinity;

export function warnFullOncePerMinute(message: string): void {
  const now = Date.now();
  if (now - lastWarning < WARNING_INTERVAL_MS) return;
  lastWarning = now;
  process.stderr.write(`prefork: ${message}\n`);
}
