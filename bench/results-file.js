// bench/RESULTS.md holds one section per benchmark script, between markers; each script rewrites only its own.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const FILE = path.join(__dirname, 'RESULTS.md');
/** Sections in the order they appear in the file. */
const ORDER = ['http', 'spawn'];
const HEADER = [
  '# prefork benchmarks',
  '',
  'Produced by `npm run bench` (`node bench/index.js`): `bench/http.js` and `bench/spawn.js` each rewrite their own',
  'section below (`--write`). Do not edit by hand; re-run the commands instead.',
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
  for (const name of ORDER) {
    const start = text.indexOf(begin(name));
    const stop = text.indexOf(end(name));
    if (start >= 0 && stop > start) {
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
  if (!ORDER.includes(name)) throw new Error(`unknown section ${name}`);
  const sections = readSections(file);
  sections.set(name, text.trim());
  const parts = [HEADER];
  for (const key of ORDER) {
    if (sections.has(key)) parts.push(`${begin(key)}\n${sections.get(key)}\n${end(key)}\n`);
  }
  fs.writeFileSync(file, parts.join('\n'));
  return file;
}

module.exports = { writeSection, RESULTS_FILE: FILE };
