// `npm start` runs this plain node:http app, which knows nothing of prefork, as
// `node -r prefork/register examples/demo.js`: the primary runs none of it, and every worker serves it
// on the same port. PORT (default 3000; 0: any free port) and PREFORK_WORKERS configure it.
const http = require('node:http');

const server = http.createServer((request, response) => {
  response.end(`hello from pid ${process.pid}\n`);
});
server.listen(Number(process.env.PORT ?? 3000), () => {
  console.log(`pid ${process.pid} serving http://127.0.0.1:${server.address().port}/`);
});
