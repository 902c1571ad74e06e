// What `prefork --help` prints and the settings table of docs/configuration.md, both made from SETTINGS.
import { SIGNAL_ACTIONS } from '../primary/signals';
import { isSwitch, PM2_INSTANCES, SETTINGS, type Setting } from './settings';

const flagText = ({ flag, short, kind }: Pick<Setting, 'flag' | 'short' | 'kind'>): string =>
  `${short ? `-${short}, ` : '    '}--${flag}${kind.placeholder && !isSwitch({ kind }) ? ` ${kind.placeholder}` : ''}`;

const UNITS = `Durations are ms, or a number with a unit: 500ms, 30s, 1.5m, 6h, 1d.
Sizes are bytes, or a number with a unit K, M, G or T, always 1024-based: 512M, 512Mi, 512MB and 512MiB
all read 512 × 1024 × 1024 bytes.`;

export function usage(): string {
  const options = SETTINGS.flatMap((setting) => {
    const lines = [
      `  ${flagText(setting).padEnd(36)} ${setting.variable}, default ${setting.default}`,
      `        ${setting.description}${setting.repeatable ? ' (repeatable)' : ''}`,
    ];
    if (setting.flag === PM2_INSTANCES.of) lines.push(`  ${flagText(PM2_INSTANCES)}`, `        ${PM2_INSTANCES.description}`);
    return lines;
  });
  const signals = Object.entries(SIGNAL_ACTIONS).map(([signal, action]) => `  ${signal.slice(3).padEnd(6)} ${action}`);
  return `Usage: prefork [options] [--] app.js [app arguments]

Runs app.js (.js, .cjs or .mjs) once per CPU core, every worker serving the same ports from
SO_REUSEPORT sockets the prefork primary owns. The app needs no change. A directory runs as
\`node DIR\` runs it: its package.json "main", else its index.js (\`prefork .\`).

Options (each has a PREFORK_* variable, read in register mode too; a flag wins over its variable):
${options.join('\n')}
  -h, --help                           print this help
  -v, --version                        print prefork's version

${UNITS}

Signals to the primary:
${signals.join('\n')}
`;
}

const code = (text: string) => `\`${text.replace(/\|/g, '\\|')}\``;

/** The markdown table of every setting: option | flag | variable | default | unit/values | meaning. */
function settingsTable(): string {
  const rows = SETTINGS.map((setting) => {
    const flags = [setting.short && code(`-${setting.short}`), code(`--${setting.flag}`)];
    if (setting.flag === PM2_INSTANCES.of) flags.push(`${code(`-${PM2_INSTANCES.short}`)} (PM2's: ${PM2_INSTANCES.kind.values})`);
    const cells = [
      setting.option ? code(setting.option) : '—',
      flags.filter(Boolean).join(', ') + (setting.repeatable ? ' (repeatable)' : ''),
      code(setting.variable),
      setting.default,
      setting.kind.values,
      setting.description,
    ];
    return `| ${cells.map((cell) => cell.replace(/\n/g, ' ')).join(' | ')} |`;
  });
  return ['| option | flag | variable | default | unit/values | meaning |', '|---|---|---|---|---|---|', ...rows].join('\n');
}

const GENERATED: Record<string, () => string> = {
  settings: settingsTable,
  help: () => `\`\`\`text\n$ prefork --help\n${usage()}\`\`\``,
};

/**
 * docs/configuration.md with its generated parts made anew: what stands between `<!-- begin generated NAME -->`
 * and `<!-- end generated NAME -->` (NAME: settings, help). scripts/configuration-docs.js writes it back.
 */
export function regenerateConfigurationDoc(markdown: string): string {
  return markdown.replace(/(<!-- begin generated (\w+) -->\n)[\s\S]*?(<!-- end generated \2 -->)/g, (_, begin: string, name: string, end: string) => {
    if (!(name in GENERATED)) throw new Error(`docs/configuration.md: no generated part is called "${name}"`);
    return `${begin}${GENERATED[name]()}\n${end}`;
  });
}
