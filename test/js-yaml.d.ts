// Types for the one js-yaml call the release workflow test makes (js-yaml ships none).
declare module 'js-yaml' {
  export function load(text: string): unknown;
}
