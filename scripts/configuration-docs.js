#!/usr/bin/env node
// Rewrites the generated parts of docs/configuration.md (the settings table, `prefork --help`) from the built
// package: `npm run build && node scripts/configuration-docs.js`. test/configuration-docs.test.ts fails until then.
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { regenerateConfigurationDoc } = require('../lib/zero-code/help');

const path = join(__dirname, '..', 'docs', 'configuration.md');
const before = readFileSync(path, 'utf8');
const after = regenerateConfigurationDoc(before);
if (after === before) {
  console.log('docs/configuration.md is up to date');
} else {
  writeFileSync(path, after);
  console.log('docs/configuration.md: generated parts rewritten');
}
