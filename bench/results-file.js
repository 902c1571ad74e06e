// bench/RESULTS.md holds one section per benchmark script, between markers; each script rewrites only its own.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const FILE = path.join(__dirname, 'RESULTS.md');
/** Sections in the order they appear in the file; any other script's section (bench/NAME.js) follows them. */
const ORDER = ['http', 'spawn', 'store'];
const HEADER = [
  '# prefork benchmarks',
  '',
  'Produced by the scripts in bench/ (`npm run bench` runs `bench/http.js` and `bench/spawn.js`); each rewrites its own',
  'section below with `--write`. Do not edit by hand; re-run the commands instead.',
  '',
].join('\n');

const begin = (name) => `<!-- bench/${name}.js: begin -->`;
const end = (name) => `<!-- bench/${name}.js: end -->`;

/** The sections found in the file, by name. A file from before the markers held spawn.js's report alone. */
function readSections(file) {
  const sections = new Map();
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return sections;
  }
  let found = false;
  for (const [, name] of text.matchAll(/<!-- bench\/([\w-]+)\.js: begin -->/g)) {
    const start = text.indexOf(begin(name));
    const stop = text.indexOf(end(name));
    if (stop > start) {
      sections.set(name, text.slice(start + begin(name).length, stop).trim());
      found = true;
    }
  }
  if (!found && text.startsWith('# prefork benchmark: spawn-to-exit')) {
    sections.set('spawn', text.replace(/^# prefork benchmark: /, '## ').trim());
  }
  return sections;
}

/** Replaces (or adds) the section `name` of bench/RESULTS.md with `text`; the other sections are kept. */
function writeSection(name, text, file = FILE) {
  if (!/^[\w-]+$/.test(name)) throw new Error(`bad section name ${name}`);
  const sections = readSections(file);
  sections.set(name, text.trim());
  const rank = (key) => (ORDER.includes(key) ? ORDER.indexOf(key) : ORDER.length);
  const keys = [...sections.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const parts = [HEADER];
  for (const key of keys) parts.push(`${begin(key)}\n${sections.get(key)}\n${end(key)}\n`);
  fs.writeFileSync(file, parts.join('\n'));
  return file;
}

module.exports = { writeSection, RESULTS_FILE: FILE };
