// The PREFORK_* environment variables (register mode and the prefork command), read through SETTINGS.
import { nearestName } from '../validate';
import { SETTINGS, type Fail, type SettingValues } from './settings';

function variableError(name: string, text: string): Fail {
  return (allowed, isNumber) => {
    const error = new (isNumber ? RangeError : TypeError)(`The ${name} environment variable must be ${allowed}. Received '${text}'`);
    throw Object.assign(error, { code: 'ERR_INVALID_ARG_VALUE' });
  };
}

/** The settings the environment gives, by flag name; a bad value throws an error that names the variable. */
export function settingsFromEnvironment(env: NodeJS.ProcessEnv = process.env): SettingValues {
  const values: SettingValues = {};
  for (const { flag, variable, kind } of SETTINGS) {
    const text = env[variable];
    if (text !== undefined) values[flag] = (kind.parseVariable ?? kind.parse)(text, variableError(variable, text));
  }
  return values;
}

/**
 * One line for each PREFORK_* variable that is no setting, naming the nearest one: a misspelt variable would
 * otherwise be ignored without a word, where a misspelt flag is an error. `internal(name)`: prefork's own.
 */
export function unknownVariableWarnings(env: NodeJS.ProcessEnv, internal: (name: string) => boolean): string[] {
  const variables = SETTINGS.map((setting) => setting.variable);
  return Object.keys(env)
    .filter((name) => name.startsWith('PREFORK_') && !variables.includes(name) && !internal(name))
    .map((name) => {
      const nearest = nearestName(name, variables);
      return `unknown environment variable ${name} (${nearest ? `did you mean ${nearest}?` : 'prefork --help lists them'})`;
    });
}
