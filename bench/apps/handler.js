// The benchmark app, shared by every contender: one node:http server with the four workloads.
//   GET /      hello world (13 bytes of text)
//   GET /cpu   ~0.5 ms of SHA-256 hashing: BENCH_HASH_ITERATIONS × 16 KB, calibrated once by the harness
//   GET /json  a 4 KB JSON document, serialised per request
//   GET /pid   this process's pid (the harness's probe: start-up, respawn)
// Each process counts its requests and connections and writes them to BENCH_STATS_DIR/<pid>.json (at
// listening, then every 100 ms while they change), so the harness sees how load spread over the workers. The pid's
// start time goes with it: pids are reused, and the harness must never signal a stranger.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const HELLO = 'Hello, World!';
const HASH_ITERATIONS = Number(process.env.BENCH_HASH_ITERATIONS) || 40;
// 16 KB per iteration: the hashing dominates, not the per-call overhead (which takes long to warm up).
const HASH_INPUT = Buffer.alloc(16 * 1024, 'prefork');
const STATS_DIR = process.env.BENCH_STATS_DIR || null;
const STATS_INTERVAL_MS = 100;

/** ~4 KB of JSON: 30 records of a typical API listing. */
function jsonDocument() {
  const items = [];
  for (let i = 0; i < 30; i++) {
    items.push({ id: i + 1, name: `item ${i + 1}`, price: Math.round((i + 1) * 137.5) / 100, tags: ['bench', 'prefork'], active: i % 3 !== 0, stock: (i * 7) % 23 });
  }
  return { page: 1, perPage: items.length, total: 300, items };
}
const JSON_DOCUMENT = jsonDocument();

/** The CPU-heavy work: chained SHA-256 over 16 KB, `iterations` times. */
function hash(iterations = HASH_ITERATIONS) {
  let digest = HASH_INPUT.subarray(0, 32);
  for (let i = 0; i < iterations; i++) digest = crypto.createHash('sha256').update(digest).update(HASH_INPUT).digest();
  return digest.toString('hex', 0, 8);
}

/** This process's start time in clock ticks since boot (/proc/self/stat field 22): with the pid, who it is. */
function startTime() {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return null;
  }
}
const START_TIME = startTime();

let requests = 0;
let connections = 0;
let listeningAt = null;
let written = '';

function writeStats() {
  if (!STATS_DIR) return;
  const text = JSON.stringify({ pid: process.pid, start: START_TIME, ppid: process.ppid, requests, connections, listeningAt });
  if (text === written) return;
  written = text;
  const file = path.join(STATS_DIR, `${process.pid}.json`);
  try {
    fs.writeFileSync(`${file}.tmp`, text);
    fs.renameSync(`${file}.tmp`, file); // the harness never reads half a file
  } catch {
    // the directory is gone: the harness has finished
  }
}

function handle(request, response) {
  requests++;
  switch (request.url) {
    case '/': {
      response.writeHead(200, { 'content-type': 'text/plain', 'content-length': HELLO.length });
      response.end(HELLO);
      break;
    }
    case '/json': {
      const body = JSON.stringify(JSON_DOCUMENT);
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      response.end(body);
      break;
    }
    case '/cpu': {
      const body = hash();
      response.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      response.end(body);
      break;
    }
    case '/pid': {
      const body = String(process.pid);
      response.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      response.end(body);
      break;
    }
    default:
      response.writeHead(404, { 'content-length': 0 });
      response.end();
  }
}

/** The app's server. It is an ordinary http.Server: each contender listens on it its own way. */
function createServer() {
  const server = http.createServer(handle);
  server.on('connection', () => connections++);
  server.on('listening', () => {
    listeningAt = Date.now();
    writeStats();
    setInterval(writeStats, STATS_INTERVAL_MS).unref();
  });
  return server;
}

module.exports = { createServer, hash };
