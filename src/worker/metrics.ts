// The app's prom-client metrics, for the primary to merge: the default registry of the copy of prom-client the
// app itself loaded (never one prefork loads: an app without prom-client reports nothing and loads nothing).
import { createRequire } from 'node:module';
import { METRICS_PART_CHARS } from '../protocol/messages';
import { send } from './context';

interface PromRegistry {
  getMetricsAsJSON(): Promise<unknown[]> | unknown[];
}

/** prom-client's default registry, if the app's main module can resolve prom-client and has loaded it. */
function appRegistry(): PromRegistry | null {
  const main = require.main?.filename ?? process.argv[1];
  if (!main) return null;
  try {
    const loaded = require.cache[createRequire(main).resolve('prom-client')];
    return (loaded?.exports as { register?: PromRegistry } | undefined)?.register ?? null;
  } catch {
    return null; // prom-client is not installed for this app
  }
}

/** Sends the app's metrics as JSON in parts (requestId 0: a draining worker's final counts, unasked). */
export async function sendMetrics(requestId: number): Promise<void> {
  let json = '[]';
  try {
    const registry = appRegistry();
    if (registry) json = JSON.stringify(await registry.getMetricsAsJSON());
  } catch (error) {
    process.stderr.write(`prefork: could not collect this worker's prom-client metrics: ${(error as Error).message}\n`);
  }
  for (let start = 0; start === 0 || start < json.length; start += METRICS_PART_CHARS) {
    send({ type: 'metrics', requestId, part: json.slice(start, start + METRICS_PART_CHARS), last: start + METRICS_PART_CHARS >= json.length });
  }
}
