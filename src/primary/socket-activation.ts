// systemd's socket activation: listening sockets the service manager opened and handed to the primary at
// fd 3 (SD_LISTEN_FDS_START) onwards, named by LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.
import { native } from '../core/binding';
import { preforkError } from '../errors';

const SD_LISTEN_FDS_START = 3;

export interface ActivatedSocket {
  fd: number;
  host: string;
  port: number;
  family: 'IPv4' | 'IPv6';
  /** From LISTEN_FDNAMES (FileDescriptorName=), or 'unknown'. */
  name: string;
}

/**
 * The sockets handed to this process, checked to be listening TCP sockets, marked close-on-exec and the
 * variables removed (workers are not their recipients). LISTEN_PID for another process: none. Malformed
 * variables are an error when LISTEN_PID is ours, and ignored with one warning otherwise.
 */
export function takeActivatedSockets(env: NodeJS.ProcessEnv = process.env): ActivatedSocket[] {
  const { LISTEN_PID: pidText, LISTEN_FDS: countText, LISTEN_FDNAMES: namesText } = env;
  if (pidText === undefined && countText === undefined) return [];
  const pid = /^\d+$/.test(pidText ?? '') ? Number(pidText) : NaN;
  const count = /^\d+$/.test(countText ?? '') ? Number(countText) : NaN;
  const forUs = pid === process.pid;
  for (const name of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) delete env[name];
  if (!forUs) {
    if (Number.isNaN(pid) || Number.isNaN(count)) {
      process.stderr.write(`prefork: ignoring malformed socket activation variables (LISTEN_PID=${pidText}, LISTEN_FDS=${countText}): they are not for this process\n`);
    }
    return [];
  }
  if (Number.isNaN(count) || count > 1024) {
    throw preforkError('ERR_PREFORK_SOCKET_ACTIVATION', `LISTEN_FDS must be the number of sockets systemd passed (0 to 1024). Received '${countText}'`);
  }
  const names = namesText?.split(':') ?? [];
  if (namesText !== undefined && names.length !== count) {
    throw preforkError('ERR_PREFORK_SOCKET_ACTIVATION', `LISTEN_FDNAMES names ${names.length} sockets, LISTEN_FDS says ${count}. Received '${namesText}'`);
  }
  const sockets: ActivatedSocket[] = [];
  for (let i = 0; i < count; i++) {
    const fd = SD_LISTEN_FDS_START + i;
    let info: ReturnType<typeof native.inspectSocket>;
    try {
      info = native.inspectSocket(fd);
    } catch (cause) {
      throw Object.assign(preforkError('ERR_PREFORK_SOCKET_ACTIVATION', `LISTEN_FDS: fd ${fd} is not a socket (${(cause as Error).message})`), { cause });
    }
    if (info.family === 0 || !info.stream || !info.listening) {
      throw preforkError('ERR_PREFORK_SOCKET_ACTIVATION', `LISTEN_FDS: fd ${fd} is not a listening TCP socket (prefork serves ListenStream= sockets on IP addresses)`);
    }
    native.setCloexec(fd);
    sockets.push({ fd, host: info.host, port: info.port, family: info.family === 6 ? 'IPv6' : 'IPv4', name: names[i] ?? 'unknown' });
  }
  return sockets;
}
