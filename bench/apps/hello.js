// Hello world for bench/sticky.js: node:http answering at once, announcing "LISTENING <port>" like the test apps.
'use strict';

const http = require('node:http');

const server = http.createServer((request, response) => response.end('hello'));
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => process.stdout.write(`LISTENING ${server.address().port} ${process.pid}\n`));
