// The release workflow, checked as far as it can be without GitHub: its builds make exactly the release targets,
// the npm scripts and files its steps name exist, and only a v* tag publishes, with provenance, after every build.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { load } from 'js-yaml';

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}
interface Job {
  if?: string;
  needs?: string | string[];
  'runs-on': string;
  permissions?: Record<string, string>;
  strategy?: { matrix: { include: Record<string, string>[] } };
  steps: Step[];
}
interface Target {
  name: string;
  file: string;
}

const root = join(__dirname, '..');
const workflow = load(readFileSync(join(root, '.github', 'workflows', 'release.yml'), 'utf8')) as {
  on: { push?: { tags?: string[] }; workflow_dispatch?: unknown };
  jobs: Record<string, Job>;
};
// A CommonJS script without types; scripts/check-prebuilds.js refuses to publish without these same targets.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { RELEASE_TARGETS } = require('../scripts/prebuild-targets') as { RELEASE_TARGETS: Target[] };

// What each runner builds for. The names, paths and artifacts use the matrix's own arch and libc labels, so the
// labels are checked against the runner and image that really do the build.
const RUNNERS: Record<string, { platform: string; arch: string }> = {
  'ubuntu-24.04': { platform: 'linux', arch: 'x64' },
  'ubuntu-24.04-arm': { platform: 'linux', arch: 'arm64' },
  'macos-15-intel': { platform: 'darwin', arch: 'x64' },
  'macos-15': { platform: 'darwin', arch: 'arm64' },
};
const TAG_ONLY = "startsWith(github.ref, 'refs/tags/v')";
// Outputs of the build, not files of the repository.
const GENERATED = new Set(['prebuilds', 'lib', 'build', 'node_modules']);

const jobs = Object.entries(workflow.jobs);
const expand = (text: string, matrix: Record<string, string>) =>
  text.replace(/\$\{\{\s*matrix\.(\w+)\s*\}\}/g, (_, key: string) => matrix[key] ?? `<no matrix.${key}>`);
const isBuild = (job: Job) => job.steps.some((step) => step.uses?.startsWith('actions/upload-artifact'));
const buildJobs = jobs.filter(([, job]) => isBuild(job)).map(([id]) => id);

/** One per matrix entry: the target its runner and image make, its labels, and its steps with the matrix filled in. */
const builds = jobs
  .filter(([, job]) => isBuild(job))
  .flatMap(([, job]) =>
    (job.strategy?.matrix.include ?? [{}]).map((matrix) => {
      const runsOn = expand(job['runs-on'], matrix);
      const runner = RUNNERS[runsOn] ?? { platform: `<runner ${runsOn} not in RUNNERS>`, arch: '?' };
      const upload = job.steps.find((step) => step.uses?.startsWith('actions/upload-artifact'))?.with ?? {};
      const libc = runner.platform === 'linux' ? (/alpine/.test(matrix.image ?? '') ? 'musl' : 'glibc') : undefined;
      return {
        target: [runner.platform, runner.arch, libc].filter(Boolean).join('-'),
        built: { arch: runner.arch, libc },
        labels: { arch: matrix.arch, libc: matrix.libc },
        runs: job.steps.flatMap((step) => (step.run ? [expand(step.run, matrix)] : [])),
        artifact: { name: expand(String(upload.name), matrix), path: upload.path },
      };
    }),
  );
const runs = [...builds.flatMap((build) => build.runs), ...jobs.filter(([, job]) => !isBuild(job)).flatMap(([, job]) => job.steps.flatMap((step) => step.run ?? []))];

/** The package.json scripts a command runs: `npm run x`, `npm test`, and the prepublishOnly that `npm publish` relies on. */
function scriptsRun(command: string): string[] {
  const names = [...command.matchAll(/\bnpm (?:run|run-script) ([\w:.-]+)/g)].map((match) => match[1]);
  if (/\bnpm (?:test|t)\b/.test(command)) names.push('test');
  if (/\bnpm publish\b/.test(command)) names.push('prepublishOnly');
  return names;
}

/** Relative paths a command names (scripts/x.js, ./package.json, tsconfig.json), build outputs left out. */
function pathsNamed(command: string): string[] {
  return command
    .split(/[\s'"`=();,|&<>]+/)
    .map((token) => token.replace(/^\.\//, '').replace(/\/$/, ''))
    .filter((token) => token !== '' && !token.startsWith('/') && !token.startsWith('-') && !/[$*{}@:]/.test(token))
    .filter((token) => token.includes('/') || /\.(?:c?js|mjs|ts|json|sh|py)$/.test(token))
    .filter((token) => !GENERATED.has(token.split('/')[0]));
}

test('it runs on a v* tag and by hand', () => {
  expect(workflow.on.push?.tags).toEqual(['v*']);
  expect(workflow.on).toHaveProperty('workflow_dispatch');
});

test('the build matrices make exactly the release targets, and their arch and libc labels are what the runner and image build', () => {
  expect(builds.map((build) => build.target).sort()).toEqual(RELEASE_TARGETS.map((target) => target.name).sort());
  expect(builds.map((build) => [build.target, build.labels])).toEqual(builds.map((build) => [build.target, build.built]));
});

test("each build checks its target's file and uploads it as prebuilds-<target>, which publish merges into prebuilds/", () => {
  const fileOf = new Map(RELEASE_TARGETS.map((target) => [target.name, target.file]));
  expect(builds.map((build) => [build.target, build.runs.flatMap((run) => [...run.matchAll(/\btest -f prebuilds\/(\S+)/g)].map((match) => match[1])), build.artifact])).toEqual(
    builds.map((build) => [build.target, [fileOf.get(build.target)], { name: `prebuilds-${build.target}`, path: 'prebuilds/' }]),
  );
  const download = workflow.jobs.publish?.steps.find((step) => step.uses?.startsWith('actions/download-artifact'));
  expect(download?.with).toMatchObject({ pattern: 'prebuilds-*', path: 'prebuilds', 'merge-multiple': true });
});

test('every npm script a step runs is in package.json', () => {
  const { scripts } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const named = [...new Set(runs.flatMap(scriptsRun))];
  expect(named).toContain('prebuilds');
  expect(named.filter((name) => !(name in scripts))).toEqual([]);
});

test('every repository file a step names exists, through the npm scripts it runs too', () => {
  const { scripts } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const commands = [...runs];
  const seen = new Set<string>();
  for (let i = 0; i < commands.length; i++) {
    for (const name of scriptsRun(commands[i])) {
      if (seen.has(name) || scripts[name] === undefined) continue; // a missing script fails the test above
      seen.add(name);
      commands.push(scripts[name]);
    }
  }
  const paths = [...new Set(commands.flatMap(pathsNamed))];
  expect(paths).toContain('package.json');
  expect(paths.filter((path) => !existsSync(join(root, path)))).toEqual([]);
});

test('only the publish job publishes: on a v* tag, with provenance, after every build; no other job runs on a manual run', () => {
  const publishers = jobs.filter(([, job]) => job.steps.some((step) => /\bnpm publish\b/.test(step.run ?? '')));
  expect(publishers.map(([id]) => id)).toEqual(['publish']);
  const publish = workflow.jobs.publish;
  expect(publish.permissions).toEqual({ contents: 'read', 'id-token': 'write' });
  expect(publish.steps.map((step) => step.run)).toContainEqual(expect.stringMatching(/^npm publish --provenance\b/));
  expect([publish.needs ?? []].flat()).toEqual(expect.arrayContaining(buildJobs));
  expect(buildJobs.length).toBeGreaterThan(0);
  const afterBuilds = jobs.filter(([id]) => !buildJobs.includes(id));
  expect(afterBuilds.map(([id, job]) => [id, job.if])).toEqual(afterBuilds.map(([id]) => [id, TAG_ONLY]));
});
