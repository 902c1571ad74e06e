// docs/configuration.md shows the settings as src/zero-code/settings.ts defines them, and every setting has both
// a flag and a variable.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { regenerateConfigurationDoc } from '../src/zero-code/help';
import { SETTINGS } from '../src/zero-code/settings';

test('the settings table and the --help text of docs/configuration.md are the generated ones', () => {
  const path = join(__dirname, '..', 'docs', 'configuration.md');
  const written = readFileSync(path, 'utf8');
  const generated = regenerateConfigurationDoc(written);
  expect(written).toContain('<!-- begin generated settings -->');
  expect(written).toContain('<!-- begin generated help -->');
  if (written !== generated) {
    const first = [...written].findIndex((char, i) => char !== generated[i]);
    const line = written.slice(0, first).split('\n').length;
    throw new Error(`docs/configuration.md differs from src/zero-code/settings.ts from line ${line}: regenerate it with\n  npm run build && node scripts/configuration-docs.js`);
  }
});

test('every setting has a flag and a PREFORK_* variable, each name used once', () => {
  const flags = SETTINGS.map((setting) => setting.flag);
  const variables = SETTINGS.map((setting) => setting.variable);
  for (const { flag, variable } of SETTINGS) {
    expect(flag).toMatch(/^[a-z][a-z-]+$/);
    expect(variable).toMatch(/^PREFORK_[A-Z_]+$/);
  }
  expect(new Set(flags).size).toBe(flags.length);
  expect(new Set(variables).size).toBe(variables.length);
});
