// The demo's worker: an ordinary http server on the SO_REUSEPORT socket it inherited as fd 3.
const http = require('node:http');

const server = http.createServer((request, response) => {
  response.end(`hello from worker pid ${process.pid}\n`);
});
server.listen({ fd: 3 });
process.on('SIGTERM', () => server.close(() => process.exit(0)));
