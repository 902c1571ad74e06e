// An Express app that knows nothing of prefork. `node -r prefork/register examples/express.js` serves it from
// one worker per core. PORT: the port (default 3000; 0: any free port).
const express = require('express');

const app = express();
app.get('/', (request, response) => response.send(`hello from pid ${process.pid}\n`));
app.listen(Number(process.env.PORT ?? 3000));
