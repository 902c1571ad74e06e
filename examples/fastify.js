// A Fastify app that knows nothing of prefork. `node -r prefork/register examples/fastify.js` serves it from
// one worker per core. PORT: the port (default 3000; 0: any free port).
const fastify = require('fastify')();

fastify.get('/', async () => ({ hello: 'world', pid: process.pid }));
fastify.listen({ port: Number(process.env.PORT ?? 3000), host: '0.0.0.0' }).catch((error) => {
  console.error(error);
  process.exit(1);
});
