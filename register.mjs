// The ES-module entry of prefork/register (`node --import prefork/register app.mjs`): the same setup as the
// CommonJS one. In the primary it never settles, so Node never imports the app there; the supervisor exits
// the process when it is done.
import register from './lib/zero-code/register.js';

if (register.runsPrimary) await new Promise(() => {});
