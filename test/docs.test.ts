// The docs as readers use them: every complete program in README.md and docs/*.md runs the way its page says
// and is served by 2 workers (the convention: CONTRIBUTING.md, "Docs that run"), the deploy files they show
// fit prefork and start, and every relative link and #anchor in the docs resolves.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import {
  cleanUp, codeBlocks, composeProblems, containerEnvironment, dockerfileProblems, loadYaml, parseDockerfile, parseUnit, podProblems,
  podSpec, Project, root, ServerRun, splitCommand, testEnvironment, unitProblems, unitRunEnvironment, unitValue,
} from './doc-runner';

const CONFIGURATION = 'docs/configuration.md'; // every option's one home
const docsPages = readdirSync(join(root, 'docs')).filter((name) => name.endsWith('.md')).sort().map((name) => `docs/${name}`);
const pages = ['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md', ...docsPages];
const read = (page: string) => readFileSync(join(root, page), 'utf8');

afterEach(cleanUp);

/** Starts a server the way a page says, in a scratch project holding the page's files so far; it must serve and stop. */
async function servesAndStops(files: Map<string, string>, argv: string[], env: Record<string, string>, project = new Project(files)): Promise<void> {
  const server = new ServerRun(argv, { cwd: project.dir, env: { ...env, ...testEnvironment([...files.values()]) } });
  await server.serves();
  expect(await server.stop()).toEqual({ code: 0, signal: null });
}

for (const page of ['README.md', ...docsPages]) {
  const markdown = read(page);
  // What a reader sees: the page without its fences' info strings (where run="…" is written).
  const shown = markdown.split('\n').filter((line) => !/^ {0,3}(`{3,}|~{3,})/.test(line)).join('\n');
  const files = new Map<string, string>();

  describe(page, () => {
    for (const block of codeBlocks(markdown, page)) {
      const where = `${page}:${block.line}`;
      const name = block.attrs.get('file');
      if (!name) {
        if (/^(js|mjs|cjs|javascript|ts|typescript)$/.test(block.lang) && /\b(listen|supervise)\(/.test(block.body) && !block.words.has('fragment')) {
          test(`${where}: a ${block.lang} block that listens says file=… (a program the test runs) or fragment`, () => {
            throw new Error(`${where}: add file=NAME run="COMMAND" to its info string, or fragment if it is part of a program`);
          });
        }
        continue;
      }
      files.set(name, block.body);
      const project = new Map(files);
      const run = block.attrs.get('run');

      if (run) {
        test(`${where} ${name}: \`${run}\` is served by 2 workers; SIGTERM ends it with 0 and nothing left`, async () => {
          expect(shown).toContain(run);
          const { env, argv } = splitCommand(run);
          await servesAndStops(project, argv, env);
        }, 60000);
      } else if (block.lang === 'dockerfile') {
        const dockerfile = parseDockerfile(block.body, markdown);
        test(`${where} ${name}: FROM a maintained Node, CMD node in exec form, a stop timeout above the drain; its CMD is served by 2 workers and stops on SIGTERM`, async () => {
          expect(dockerfileProblems(dockerfile)).toEqual([]);
          await servesAndStops(project, dockerfile.cmd!, dockerfile.env);
        }, 60000);
      } else if (name.endsWith('.service')) {
        const unit = parseUnit(block.body);
        test(`${where} ${name}: Type, reload, KillMode and TimeoutStopSec fit prefork; its ExecStart is served by 2 workers and stops on SIGTERM`, async () => {
          expect(unitProblems(unit)).toEqual([]);
          const scratch = new Project(project); // WorkingDirectory
          const { env } = unitRunEnvironment(unit, scratch.dir);
          await servesAndStops(project, splitCommand(unitValue(unit, 'ExecStart')!).argv, env, scratch);
        }, 60000);
      } else if (/\.ya?ml$/.test(name)) {
        const documents = loadYaml(block.body);
        test(`${where} ${name}: a workload with an httpGet readiness probe, a preStop sleep and a grace period above it and the drain, whose command is served by 2 workers; or Compose with stop_grace_period above the drain`, async () => {
          expect(documents.length).toBeGreaterThan(0);
          for (const document of documents) {
            const spec = podSpec(document);
            if (spec) {
              expect(podProblems(spec)).toEqual([]);
              for (const container of spec.containers) {
                if (container.command) await servesAndStops(project, [...container.command, ...(container.args ?? [])], containerEnvironment(container));
              }
            } else if ((document as { services?: unknown }).services) {
              expect(composeProblems(document)).toEqual([]);
            } else {
              throw new Error(`${where}: neither a Kubernetes workload nor a Compose file`);
            }
          }
        }, 60000);
      }
    }
  });
}

// ---- Links ------------------------------------------------------------------------------------------------

/** The text outside fenced blocks and inline code, where links are links. */
function prose(markdown: string): string[] {
  const lines = markdown.split('\n');
  let fence: string | null = null;
  return lines.map((line) => {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence) {
      if (marker && marker[0] === fence[0] && marker.length >= fence.length && /^ {0,3}[`~]+\s*$/.test(line)) fence = null;
      return '';
    }
    if (marker) {
      fence = marker;
      return '';
    }
    return line.replace(/(`+)[^`]*?\1/g, '');
  });
}

/** GitHub's anchors for a page's headings: lowercased, punctuation dropped, spaces as hyphens, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const found = new Set<string>();
  const seen = new Map<string, number>();
  const lines = markdown.split('\n');
  let inFence = false;
  for (const line of lines) {
    if (/^ {0,3}(`{3,}|~{3,})/.test(line)) inFence = !inFence;
    const heading = !inFence && /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const text = heading[1].replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/[`*]/g, '');
    const slug = text.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    found.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return found;
}

/** Every link target outside code, with its line: inline links and images, and reference definitions. */
function links(markdown: string): Array<{ target: string; line: number }> {
  const found: Array<{ target: string; line: number }> = [];
  prose(markdown).forEach((text, index) => {
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) found.push({ target, line: index + 1 });
    const definition = /^ {0,3}\[[^\]]+\]:\s*(\S+)/.exec(text);
    if (definition) found.push({ target: definition[1], line: index + 1 });
  });
  return found;
}

/** The file a relative link points to, from the checkout's root ('' for a link within its own page). */
const linkedFile = (page: string, path: string) => relative(root, path ? resolve(dirname(join(root, page)), decodeURI(path)) : join(root, page));

const relativeLinks = (page: string) =>
  links(read(page)).filter(({ target }) => !/^[a-z][a-z0-9+.-]*:/i.test(target)); // not https:, mailto:

describe('links', () => {
  for (const page of pages) {
    test(`${page}: every relative link and #anchor resolves`, () => {
      const problems: string[] = [];
      for (const { target, line } of relativeLinks(page)) {
        const [path, anchor] = target.split('#');
        const file = join(root, linkedFile(page, path));
        if (!existsSync(file)) {
          problems.push(`${page}:${line}: ${target}: no such file`);
          continue;
        }
        if (anchor && file.endsWith('.md') && !anchors(readFileSync(file, 'utf8')).has(anchor)) {
          problems.push(`${page}:${line}: ${target}: ${relative(root, file)} has no heading #${anchor}`);
        }
      }
      expect(problems).toEqual([]);
    });
  }

  test(`the README and docs/README.md link to ${CONFIGURATION}, every option's one home`, () => {
    for (const page of ['README.md', 'docs/README.md']) {
      expect(relativeLinks(page).some(({ target }) => linkedFile(page, target.split('#')[0]) === CONFIGURATION)).toBe(true);
    }
  });
});

// ---- The reference against the code ----------------------------------------------------------------------

describe('the reference names everything the code has', () => {
  const source = (path: string) => readFileSync(join(root, 'src', path), 'utf8');
  const sources = (dir: string) => readdirSync(join(root, 'src', dir)).filter((name) => name.endsWith('.ts')).map((name) => source(join(dir, name)));
  const quoted = (text: string) => [...text.matchAll(/'([a-z-]+)'/g)].map((match) => match[1]);

  test('docs/operations.md has a row for every reason of prefork_restarts_total (RESTART_REASONS), so an alert can leave out reload', () => {
    const reasons = quoted(/const RESTART_REASONS[^=]*=\s*\[([^\]]+)\]/.exec(source('primary/metrics.ts'))![1]);
    expect(reasons).toContain('reload');
    const page = read('docs/operations.md');
    expect(reasons.filter((reason) => !page.includes(`| \`${reason}\` |`))).toEqual([]);
  });

  test("docs/api.md names every worker exit reason (ExitReason), every event the supervisor emits and every ERR_PREFORK_* code", () => {
    const page = read('docs/api.md');
    const reasons = quoted(/export type ExitReason =([^;]+);/.exec(source('primary/worker-process.ts'))![1]);
    expect(reasons.length).toBeGreaterThan(5);
    expect(reasons.filter((reason) => !page.includes(`\`'${reason}'\``))).toEqual([]);
    const events = [...new Set(sources('primary').flatMap((text) => [...text.matchAll(/\bemit\('([a-z]+)'/g)].map((match) => match[1])))];
    expect(events).toContain('restart');
    expect(events.filter((event) => !page.includes(`| \`'${event}'\` |`))).toEqual([]);
    const codes = [...new Set(['', 'core', 'primary', 'worker', 'zero-code', 'store', 'protocol'].flatMap((dir) => sources(dir)).flatMap((text) => text.match(/ERR_PREFORK_[A-Z_]*[A-Z]/g) ?? []))];
    expect(codes).toContain('ERR_PREFORK_CRASH_LOOP');
    expect(codes.filter((code) => !page.includes(`\`${code}\``))).toEqual([]);
  });
});
