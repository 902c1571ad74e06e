// A worker for bench/store.js: once all workers are there (a barrier on the store), increments for
// BENCH_MS milliseconds, on one key or on its own 1,000 keys, and reports how many it did.
const prefork = require('../lib');

const store = new prefork.CounterStore({ prefix: `bench-${process.env.BENCH_RUN}:` });
const keys = Array.from({ length: 1000 }, (_, i) => (process.env.BENCH_KEYS === 'one' ? 'hot' : `w${prefork.workerId()}-${i}`));
// Warm up on a key of our own first, so the optimising compiler is done before the clock starts.
for (let i = 0; i < 2000000; i++) store.increment(`warm-${prefork.workerId()}`, 600000);
store.increment('arrived', 600000);
while (store.get('arrived').count < Number(process.env.BENCH_WORKERS));
const deadline = Date.now() + Number(process.env.BENCH_MS);
let done = 0;
while (Date.now() < deadline) {
  for (let i = 0; i < 10000; i++) store.increment(keys[i % 1000], 600000);
  done += 10000;
}
process.stdout.write(`DONE ${done}\n`);
prefork.ready();
setInterval(() => {}, 1000);
