// npm's install step: node-gyp-build (the shipped prebuild, or a build from source). Not on Windows: prefork
// cannot run there (an app that depends on it runs as one process), so there is nothing to build.
'use strict';

if (process.platform === 'win32') {
  console.log('prefork: nothing to build on Windows (prefork runs on Linux and macOS; apps run as one process here)');
} else {
  require('node-gyp-build/bin.js');
}
