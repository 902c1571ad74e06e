// PREFORK_LOG_PREFIX / --log-prefix: each worker prefixes the lines it prints with "[worker N] ". The worker
// reads only this variable, so its start loads none of the primary's settings code (and the primary, through
// the settings table, none of the worker's).
import { parseSwitchText } from '../validate';

export const ENV_LOG_PREFIX = 'PREFORK_LOG_PREFIX';

/** The primary has checked the value already: a bad one never reaches a worker. */
export function logPrefixWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  const text = env[ENV_LOG_PREFIX];
  return text !== undefined && parseSwitchText(text, (allowed) => {
    throw new TypeError(`The ${ENV_LOG_PREFIX} environment variable must be ${allowed}. Received '${text}'`);
  });
}

/** "[worker N] " before every line this worker (slot `id`) writes. */
export function prefixOutput(id: number | null): void {
  const prefix = `[worker ${id}] `;
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
    let atLineStart = true;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString() : String(chunk);
      const prefixed = (atLineStart ? prefix : '') + text.replace(/\n(?=.)/g, `\n${prefix}`);
      atLineStart = text.endsWith('\n');
      return write(prefixed, ...rest);
    }) as typeof stream.write;
  }
}
