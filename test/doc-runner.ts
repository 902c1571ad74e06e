// Runs what the docs and examples show, as their readers would: the programs in markdown code blocks (the
// convention is in CONTRIBUTING.md, "Docs that run"), and the deploy files (Dockerfile, systemd unit,
// Kubernetes and Compose YAML), each checked and its command started the way its target starts it.
import child_process, { type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { load } from 'js-yaml';
import { settleOptions } from '../src/primary/options';
import { settingsFromEnvironment } from '../src/zero-code/env-options';
import { runSettings } from '../src/zero-code/settings';
import { childrenOf, isDead, waitFor } from './helpers';

export const root = join(__dirname, '..');

/** prefork's drain time (shutdownTimeout) for an environment: PREFORK_SHUTDOWN_TIMEOUT, else the default. */
export function drainMs(env: Record<string, string> = {}): number {
  return runSettings(settingsFromEnvironment(env)).options.shutdownTimeout ?? settleOptions({ script: __filename, args: [], execArgv: [] }).shutdownTimeout;
}

// ---- Markdown -------------------------------------------------------------------------------------------

export interface CodeBlock {
  /** The markdown file, relative to the checkout, and the line of the opening fence. */
  source: string;
  line: number;
  lang: string;
  /** `key=value` and `key="a value"` words of the info string (`file`, `run`). */
  attrs: Map<string, string>;
  /** Other words of the info string (`fragment`). */
  words: Set<string>;
  body: string;
}

/** The fenced code blocks of a markdown text (``` or ~~~, closed by a fence of the same kind at least as long). */
export function codeBlocks(markdown: string, source: string): CodeBlock[] {
  const blocks: CodeBlock[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})\s*(.*)$/.exec(lines[i]);
    if (!open) continue;
    const fence = open[1];
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      body.push(lines[j]);
    }
    const attrs = new Map<string, string>();
    const words = new Set<string>();
    let lang = '';
    for (const [, key, quoted, bare, word] of open[2].matchAll(/([\w-]+)=(?:"([^"]*)"|(\S+))|(\S+)/g)) {
      if (key) attrs.set(key, quoted ?? bare);
      else if (!lang) lang = word;
      else words.add(word);
    }
    blocks.push({ source, line: i + 1, lang, attrs, words, body: `${body.join('\n')}\n` });
    i = j;
  }
  return blocks;
}

/** A command line as a shell splits it (quotes, no expansion), with its leading `NAME=value` assignments apart. */
export function splitCommand(text: string): { env: Record<string, string>; argv: string[] } {
  const words = [...text.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map(([, double, single, bare]) => double ?? single ?? bare);
  const env: Record<string, string> = {};
  while (words.length > 0 && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0])) {
    const [name, ...value] = words.shift()!.split('=');
    env[name] = value.join('=');
  }
  return { env, argv: words };
}

/** `node` (or an absolute path to a node binary, as in a unit's ExecStart) runs as this test's node. */
export function withThisNode(argv: string[]): string[] {
  return /^(node|\/\S*\/node)$/.test(argv[0]) ? [process.execPath, ...argv.slice(1)] : argv;
}

/**
 * What every run gets: PORT=0 and 0 for each `process.env.*_PORT` the sources read, so nothing needs a fixed
 * port, and PREFORK_WORKERS=2 (register mode and the command read it; supervise() takes the usable CPUs).
 */
export function testEnvironment(sources: string[]): Record<string, string> {
  const env: Record<string, string> = { PORT: '0', PREFORK_WORKERS: '2' };
  for (const source of sources) for (const [, name] of source.matchAll(/process\.env\.([A-Z_]*PORT)\b/g)) env[name] = '0';
  return env;
}

// ---- A project that resolves prefork to this checkout ---------------------------------------------------

const projects = new Set<Project>();

export class Project {
  readonly dir = mkdtempSync(join(tmpdir(), 'prefork-docs-'));

  constructor(files: Map<string, string> = new Map()) {
    projects.add(this);
    chmodSync(this.dir, 0o755); // workers may run as another user (PREFORK_USER in a unit)
    const modules = join(this.dir, 'node_modules');
    mkdirSync(modules);
    // One link per package rather than one for node_modules: a loader that resolves from the path it was
    // imported by (tsx finds esbuild that way) still finds its dependencies here.
    for (const name of readdirSync(join(root, 'node_modules'))) {
      if (name !== 'prefork') symlinkSync(join(root, 'node_modules', name), join(modules, name));
    }
    symlinkSync(root, join(modules, 'prefork'));
    for (const [name, text] of files) this.write(name, text);
  }

  write(name: string, text: string): void {
    mkdirSync(dirname(join(this.dir, name)), { recursive: true });
    writeFileSync(join(this.dir, name), text);
  }

  remove(): void {
    projects.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- /proc: who listens, who serves ---------------------------------------------------------------------

interface TcpEntry { local: number; remote: number; state: string; inode: string }

function tcpTable(): TcpEntry[] {
  const entries: TcpEntry[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').trim().split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const port = (address: string) => parseInt(address.slice(address.lastIndexOf(':') + 1), 16);
      entries.push({ local: port(fields[1]), remote: port(fields[2]), state: fields[3], inode: fields[9] });
    }
  }
  return entries;
}

function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (match) inodes.add(match[1]);
      } catch {
        // closed while we looked
      }
    }
  } catch {
    // the process is gone
  }
  return inodes;
}

/** TCP ports `pid` holds a listening socket on (prefork's primary holds every socket it opened). */
export function listeningPorts(pid: number): number[] {
  const inodes = socketInodes(pid);
  return [...new Set(tcpTable().filter((entry) => entry.state === '0A' && inodes.has(entry.inode)).map((entry) => entry.local))];
}

/** `pid` and every process below it, now. */
export function descendants(pid: number): number[] {
  const found = [pid];
  for (let i = 0; i < found.length; i++) found.push(...childrenOf(found[i]).map((child) => child.pid));
  return found;
}

/** One GET / on a new connection, kept open: its status, and which of `pids` holds the server's end. */
function servedBy(port: number, pids: number[]): Promise<{ status: number; pid: number | undefined }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => socket.destroy(new Error(`no answer on port ${port} within 3 s`)), 3000);
    let head = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
    socket.on('data', (chunk: string) => {
      head += chunk;
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (!status) return;
      clearTimeout(timer);
      const server = tcpTable().find((entry) => entry.state === '01' && entry.local === port && entry.remote === socket.localPort);
      const pid = server && pids.find((candidate) => socketInodes(candidate).has(server.inode));
      socket.destroy();
      resolve({ status: Number(status[1]), pid });
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

// ---- A server started as a doc says ---------------------------------------------------------------------

const runs = new Set<ServerRun>();

export class ServerRun {
  readonly process: ChildProcess;
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Every process it started, as last seen: still found once the primary is gone and its workers re-parented. */
  family: number[] = [];

  constructor(argv: string[], { cwd, env }: { cwd: string; env: Record<string, string> }) {
    const [file, ...args] = withThisNode(argv);
    this.process = child_process.spawn(file, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    runs.add(this);
    this.process.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.output += chunk));
    this.process.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.output += chunk));
    // A program that cannot start emits 'error' and never 'exit': the run then counts as ended, with the reason.
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code, signal) => resolve({ code, signal }));
      this.process.once('error', (error) => {
        this.output += `spawn failed: ${error.message}\n`;
        resolve({ code: -1, signal: null });
      });
    });
  }

  get pid(): number {
    return this.process.pid!;
  }

  /**
   * Waits until every port the primary listens on answers HTTP and at least one is served by two workers
   * (told apart by which process holds the server's end of each connection); returns the ports and workers.
   */
  async serves(timeoutMs = 20000): Promise<{ ports: number[]; workers: number[] }> {
    const deadline = Date.now() + timeoutMs;
    let lastProblem = 'no listening socket yet';
    for (;;) {
      if (this.process.exitCode !== null || this.process.signalCode !== null) {
        throw new Error(`exited (${this.process.exitCode ?? this.process.signalCode}) before it served; output:\n${this.output}`);
      }
      const ports = listeningPorts(this.pid);
      if (ports.length > 0) {
        const workers = descendants(this.pid).filter((pid) => pid !== this.pid);
        const servers = new Map<number, Set<number>>(ports.map((port) => [port, new Set()]));
        try {
          for (const port of ports) {
            for (let i = 0; i < 40 && servers.get(port)!.size < 2; i++) {
              const { pid } = await servedBy(port, [...workers, this.pid]);
              if (pid !== undefined) servers.get(port)!.add(pid);
            }
          }
          const byTwoWorkers = [...servers.values()].find((pids) => [...pids].filter((pid) => pid !== this.pid).length >= 2);
          if (byTwoWorkers) {
            this.family = descendants(this.pid);
            return { ports, workers: [...byTwoWorkers] };
          }
          lastProblem = `no port served by two workers yet (${[...servers].map(([port, pids]) => `${port}: ${[...pids].join(', ')}`).join('; ')})`;
        } catch (error) {
          lastProblem = (error as Error).message;
        }
      }
      if (Date.now() > deadline) throw new Error(`not served by 2 workers within ${timeoutMs} ms: ${lastProblem}; output:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** `signal` to the primary (SIGTERM: docker stop, systemd's KillMode=mixed, Kubernetes); then nothing it started may be left. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const family = [...new Set([...this.family, ...descendants(this.pid)])];
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill(signal);
    const timer = setTimeout(() => this.process.kill('SIGKILL'), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    runs.delete(this);
    await waitFor(() => family.every(isDead), 5000, 'every process it started to be gone').catch((error: Error) => {
      for (const pid of family) if (!isDead(pid)) process.kill(pid, 'SIGKILL');
      throw error;
    });
    return result;
  }
}

/** For afterEach: whatever a failed test left running is killed, and its scratch projects removed. */
export async function cleanUp(): Promise<void> {
  for (const run of [...runs]) {
    for (const pid of new Set([...descendants(run.pid).reverse(), run.pid, ...run.family])) {
      try {
        if (!isDead(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        // it exited meanwhile
      }
    }
    runs.delete(run);
    await run.exited;
  }
  for (const project of [...projects]) project.remove();
}

// ---- Deploy files ---------------------------------------------------------------------------------------

/** A duration as systemd and Compose write it ("15", "15s", "1min 30s", "1m30s", "500ms"), in ms. */
export function durationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, sec: 1000, m: 60000, min: 60000, h: 3600000 };
  let total = 0;
  for (const [, amount, unit] of text.trim().matchAll(/(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)?/g)) total += Number(amount) * units[unit ?? 's'];
  return total;
}

export interface Dockerfile {
  from: string;
  /** Exec form only (a shell form is null: the shell would be PID 1 and take the signals). */
  cmd: string[] | null;
  entrypoint: string | null;
  env: Record<string, string>;
  stopSignal: string | null;
  /** Every stop timeout its documentation gives (`docker run --stop-timeout N`, Compose `stop_grace_period`), ms. */
  stopTimeoutsMs: number[];
}

/** `documentation`: where the stop timeout is given (the file's own comments, or the page that shows it). */
export function parseDockerfile(text: string, documentation = text): Dockerfile {
  const parsed: Dockerfile = { from: '', cmd: null, entrypoint: null, env: {}, stopSignal: null, stopTimeoutsMs: [] };
  for (const [, seconds] of documentation.matchAll(/--stop-timeout[ =](\d+)/g)) parsed.stopTimeoutsMs.push(Number(seconds) * 1000);
  for (const [, value] of documentation.matchAll(/stop_grace_period:\s*(\S+)/g)) parsed.stopTimeoutsMs.push(durationMs(value));
  const instructions = text.replace(/\\\n/g, ' ').split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
  for (const line of instructions) {
    const [, keyword, rest] = /^(\w+)\s+(.*)$/.exec(line) ?? [];
    switch (keyword?.toUpperCase()) {
      case 'FROM': parsed.from = rest.split(/\s+/)[0]; break;
      case 'CMD': parsed.cmd = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : null; break;
      case 'ENTRYPOINT': parsed.entrypoint = rest; break;
      case 'STOPSIGNAL': parsed.stopSignal = rest; break;
      case 'ENV':
        if (/^\S+=/.test(rest)) Object.assign(parsed.env, splitCommand(rest).env);
        else parsed.env[rest.split(/\s+/)[0]] = rest.slice(rest.indexOf(' ') + 1).trim();
        break;
      default:
    }
  }
  return parsed;
}

/** What a Dockerfile must be for prefork (see docs/deployment.md); [] when it is right. */
export function dockerfileProblems(file: Dockerfile): string[] {
  const problems: string[] = [];
  if (!/^node:(22|24|26)(\.|-|$)/.test(file.from)) problems.push(`FROM ${file.from}: not a maintained Node line (node:22, 24 or 26)`);
  if (file.entrypoint) problems.push(`ENTRYPOINT ${file.entrypoint}: the CMD alone should start node`);
  if (!file.cmd) problems.push('CMD is not in exec form (["node", …]): a shell would be PID 1');
  else if (file.cmd[0] !== 'node') problems.push(`CMD starts ${file.cmd[0]}, not node: npm or npx would be PID 1 and not pass SIGTERM on`);
  if (file.stopSignal && !['SIGTERM', 'SIGINT'].includes(file.stopSignal)) problems.push(`STOPSIGNAL ${file.stopSignal}: prefork drains on SIGTERM or SIGINT`);
  const drain = drainMs(file.env);
  if (file.stopTimeoutsMs.length === 0) problems.push('no stop timeout documented (docker run --stop-timeout, compose stop_grace_period)');
  for (const timeout of file.stopTimeoutsMs) if (timeout <= drain) problems.push(`a stop timeout of ${timeout} ms is not above the drain time (${drain} ms)`);
  return problems;
}

/** A systemd unit: section → key → every value it was given. */
export type Unit = Map<string, Map<string, string[]>>;

export function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section = '';
  for (const raw of text.replace(/\\\n/g, ' ').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1];
      unit.set(section, unit.get(section) ?? new Map());
      continue;
    }
    const equals = line.indexOf('=');
    const values = unit.get(section)!;
    const key = line.slice(0, equals).trim();
    values.set(key, [...(values.get(key) ?? []), line.slice(equals + 1).trim()]);
  }
  return unit;
}

export function unitValue(unit: Unit, key: string, section = 'Service'): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

/** The unit's Environment= assignments. */
export function unitEnvironment(unit: Unit): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of unit.get('Service')?.get('Environment') ?? []) Object.assign(env, splitCommand(line).env);
  return env;
}

/** What a service unit must be for prefork (see docs/deployment.md); [] when it is right. */
export function unitProblems(unit: Unit): string[] {
  const problems: string[] = [];
  const type = unitValue(unit, 'Type');
  const reload = unitValue(unit, 'ExecReload');
  if (type === 'notify') {
    if (!reload || !/^\/bin\/kill -(HUP|s HUP|SIGHUP) \$MAINPID$/.test(reload)) problems.push(`Type=notify needs ExecReload=/bin/kill -HUP $MAINPID (got ${reload})`);
  } else if (type === 'notify-reload') {
    const signal = unitValue(unit, 'ReloadSignal');
    if (signal && signal !== 'SIGHUP') problems.push(`ReloadSignal=${signal}: prefork reloads on SIGHUP`);
  } else {
    problems.push(`Type=${type}: prefork tells systemd when it is ready (Type=notify or notify-reload)`);
  }
  const killMode = unitValue(unit, 'KillMode') ?? 'control-group';
  if (!['mixed', 'control-group'].includes(killMode)) problems.push(`KillMode=${killMode}: the workers would outlive a stop`);
  const stop = unitValue(unit, 'TimeoutStopSec');
  const drain = drainMs(unitEnvironment(unit));
  if (!stop) problems.push(`no TimeoutStopSec: systemd's default (90 s) is a guess; say it, above the drain (${drain} ms)`);
  else if (durationMs(stop) <= drain) problems.push(`TimeoutStopSec=${stop} is not above the drain time (${drain} ms)`);
  if (!unitValue(unit, 'ExecStart')) problems.push('no ExecStart');
  return problems;
}

/** The environment a unit's ExecStart gets here: its own, with its ports made 0 and its paths in `scratch`. */
export function unitRunEnvironment(unit: Unit, scratch: string): { env: Record<string, string>; dropped: string[] } {
  const env = unitEnvironment(unit);
  const dropped: string[] = [];
  if (env.PORT) env.PORT = '0';
  if (env.PREFORK_LISTEN) env.PREFORK_LISTEN = env.PREFORK_LISTEN.split(',').map((address) => address.replace(/\d+$/, '0')).join(',');
  if (env.PREFORK_PID_FILE) env.PREFORK_PID_FILE = join(scratch, 'app.pid');
  for (const name of ['PREFORK_USER', 'PREFORK_GROUP']) {
    if (env[name] && process.getuid?.() !== 0) {
      delete env[name];
      dropped.push(name);
    }
  }
  return { env, dropped };
}

export interface KubernetesContainer {
  name: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  readinessProbe?: { httpGet?: unknown; tcpSocket?: unknown };
  lifecycle?: { preStop?: { sleep?: { seconds: number }; exec?: { command: string[] } } };
}

/** The pod spec of a Deployment, StatefulSet, DaemonSet or Pod document, or null. */
export function podSpec(document: unknown): { terminationGracePeriodSeconds?: number; containers: KubernetesContainer[] } | null {
  const doc = document as { kind?: string; spec?: { template?: { spec?: unknown }; containers?: unknown } } | null;
  if (!doc?.kind || !doc.spec) return null;
  const spec = (doc.kind === 'Pod' ? doc.spec : doc.spec.template?.spec) as { containers?: KubernetesContainer[] } | undefined;
  return spec?.containers ? (spec as { containers: KubernetesContainer[] }) : null;
}

export function containerEnvironment(container: KubernetesContainer): Record<string, string> {
  return Object.fromEntries((container.env ?? []).filter((item) => item.value !== undefined).map((item) => [item.name, String(item.value)]));
}

/** What a pod must be for prefork (see docs/deployment.md); [] when it is right. */
export function podProblems(spec: NonNullable<ReturnType<typeof podSpec>>): string[] {
  const problems: string[] = [];
  const grace = (spec.terminationGracePeriodSeconds ?? 30) * 1000;
  for (const container of spec.containers) {
    const name = `container ${container.name}`;
    if (container.command && container.command[0] !== 'node') problems.push(`${name}: command starts ${container.command[0]}, not node`);
    if (!container.readinessProbe?.httpGet) problems.push(`${name}: no httpGet readiness probe (a TCP probe passes before any worker is ready)`);
    const preStop = container.lifecycle?.preStop;
    const sleepMs = preStop?.sleep ? preStop.sleep.seconds * 1000 : preStop?.exec?.command[0] === 'sleep' ? Number(preStop.exec.command[1]) * 1000 : NaN;
    if (Number.isNaN(sleepMs)) problems.push(`${name}: no preStop sleep (load balancers still send new connections for a few seconds)`);
    const drain = drainMs(containerEnvironment(container));
    if (!(grace > (Number.isNaN(sleepMs) ? 0 : sleepMs) + drain)) problems.push(`${name}: terminationGracePeriodSeconds (${grace / 1000}) is not above the preStop sleep plus the drain (${drain} ms)`);
  }
  return problems;
}

/** Compose services: each stop_grace_period must be above its drain. */
export function composeProblems(document: unknown): string[] {
  const services = (document as { services?: Record<string, { stop_grace_period?: string; environment?: Record<string, string> | string[] }> }).services ?? {};
  const problems: string[] = [];
  for (const [name, service] of Object.entries(services)) {
    const env = Array.isArray(service.environment) ? splitCommand(service.environment.join(' ')).env : (service.environment ?? {});
    const drain = drainMs(env);
    if (!service.stop_grace_period) problems.push(`service ${name}: no stop_grace_period (Docker's default, 10 s, is not above the drain of ${drain} ms)`);
    else if (durationMs(service.stop_grace_period) <= drain) problems.push(`service ${name}: stop_grace_period ${service.stop_grace_period} is not above the drain (${drain} ms)`);
  }
  return problems;
}

export const loadYaml = (text: string): unknown[] => text.split(/^---$/m).map((part) => load(part)).filter(Boolean);
