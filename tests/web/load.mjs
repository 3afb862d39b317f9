#!/usr/bin/env node
// A bounded load generator for `blip2 serve` (not part of CI): N concurrent
// clients on loopback send /v1/caption and /v1/answer requests back to back
// for a fixed time; prints the request count, errors, throughput and latency
// percentiles per route, and the batch sizes the server reports in /metrics.
//
//   node tests/web/load.mjs --blip2 build/bin/blip2 --max-batch 8 [--clients 16] [--seconds 30]
//   node tests/web/load.mjs --url http://127.0.0.1:8080 [--api-key KEY]   (a server already running)
//
// With --blip2 it starts `blip2 serve --port 0 -m models/shapes/opt` itself
// (plus any --serve-arg ARG) and stops it afterwards. --json prints one JSON
// object instead of the table.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const sourceDir = resolve(here, '../..');

function parseArgs(argv) {
  const opts = {
    clients: 16, seconds: 30, routes: ['caption', 'answer'], serveArgs: [],
    model: join(sourceDir, 'models/shapes/opt'), image: join(sourceDir, 'examples/shapes-1.png'),
  };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      i += 1;
      return argv[i];
    };
    switch (flag) {
      case '--blip2': opts.blip2 = value(); break;
      case '--url': opts.url = value().replace(/\/$/, ''); break;
      case '--api-key': opts.apiKey = value(); break;
      case '--max-batch': opts.maxBatch = value(); break;
      case '--model': opts.model = value(); break;
      case '--image': opts.image = value(); break;
      case '--clients': opts.clients = Number(value()); break;
      case '--seconds': opts.seconds = Number(value()); break;
      case '--routes': opts.routes = value().split(','); break;
      case '--serve-arg': opts.serveArgs.push(value()); break;
      case '--json': opts.json = true; break;
      default: throw new Error(`unknown flag ${flag} (see the comment at the top of load.mjs)`);
    }
  }
  if (!opts.blip2 === !opts.url) throw new Error('give exactly one of --blip2 BINARY or --url URL');
  for (const r of opts.routes) {
    if (!['caption', 'answer'].includes(r)) throw new Error(`--routes: ${r} is not caption or answer`);
  }
  if (!(opts.clients >= 1) || !(opts.seconds > 0)) throw new Error('--clients and --seconds must be positive');
  return opts;
}

// Starts `blip2 serve --port 0` and resolves with its URL once it prints `listening on`.
function startServer(opts) {
  const args = ['serve', '--host', '127.0.0.1', '--port', '0', '-m', opts.model, ...opts.serveArgs];
  if (opts.maxBatch !== undefined) args.push('--max-batch', String(opts.maxBatch));
  const child = spawn(opts.blip2, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const url = new Promise((resolveUrl, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`blip2 serve did not start in 180 s:\n${stderr}`)), 180_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^listening on (http:\/\/\S+)/m);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`blip2 serve exited (${code}) before listening:\n${stderr}`));
    });
  });
  const stop = () => new Promise((done) => {
    if (child.exitCode !== null) return done();
    child.once('exit', done);
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
  });
  return { url, stop, args };
}

// The vector extensions of the CPU that matter to libtorch/OpenBLAS, from /proc/cpuinfo.
function cpuFlags() {
  try {
    const flags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)[1].trim().split(/\s+/);
    return ['avx2', 'fma', 'avx512f', 'avx512_bf16'].filter((f) => flags.includes(f)).join(' ') || 'no AVX2';
  } catch (_) {
    return 'flags unknown';
  }
}

const questions = ['what color is the star?', 'what shape is blue?', 'how many shapes are there?'];

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

// Sums `blip2_batch_size`-like histogram/summary lines of the Prometheus text.
function batchStats(metrics) {
  const sum = metrics.match(/^\S*batch_size\S*_sum(?:\{[^}]*\})?\s+(\S+)/m);
  const count = metrics.match(/^\S*batch_size\S*_count(?:\{[^}]*\})?\s+(\S+)/m);
  return sum && count ? { sum: Number(sum[1]), count: Number(count[1]) } : null;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const server = opts.blip2 ? startServer(opts) : null;
  let url = opts.url;
  const apiKey = opts.apiKey || process.env.BLIP2_API_KEY || '';
  const headers = { 'Content-Type': 'application/json' };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const image = readFileSync(opts.image).toString('base64');
  const bodies = {
    caption: [JSON.stringify({ image })],
    answer: questions.map((question) => JSON.stringify({ image, question })),
  };
  const metrics = async () => {
    try {
      const r = await fetch(`${url}/metrics`, { headers });
      return r.ok ? await r.text() : '';
    } catch (_) { return ''; }
  };

  try {
    if (server) url = await server.url;
    // One of each route first, so that no client pays for the first-use cost.
    for (const route of opts.routes) {
      const r = await fetch(`${url}/v1/${route}`, { method: 'POST', headers, body: bodies[route][0] });
      if (!r.ok) throw new Error(`warm-up ${route}: HTTP ${r.status} ${await r.text()}`);
      await r.json();
    }
    const before = batchStats(await metrics());
    // Other processes on the machine skew every number: say how busy it was.
    const loadBefore = os.loadavg()[0].toFixed(2);
    const results = [];  // {route, ms, ok, status, message}
    const t0 = performance.now();
    const stopAt = t0 + opts.seconds * 1000;
    const client = async (c) => {
      for (let n = 0; performance.now() < stopAt; n += 1) {
        const route = opts.routes[(c + n) % opts.routes.length];
        const body = bodies[route][(c + n) % bodies[route].length];
        const start = performance.now();
        let ok = false;
        let status = 0;
        let message = '';
        try {
          const r = await fetch(`${url}/v1/${route}`, { method: 'POST', headers, body });
          status = r.status;
          const payload = await r.json();
          ok = r.ok && typeof payload.text === 'string';
          if (!ok) message = payload.error ? payload.error.message : JSON.stringify(payload).slice(0, 200);
        } catch (err) {
          message = String(err.cause || err);
        }
        results.push({ route, ms: performance.now() - start, ok, status, message });
      }
    };
    await Promise.all(Array.from({ length: opts.clients }, (_, c) => client(c)));
    const elapsed = (performance.now() - t0) / 1000;
    const after = batchStats(await metrics());

    const summarize = (rows) => {
      const ms = rows.filter((r) => r.ok).map((r) => r.ms).sort((a, b) => a - b);
      return {
        requests: rows.length,
        errors: rows.filter((r) => !r.ok).length,
        per_s: Number((ms.length / elapsed).toFixed(2)),
        p50_ms: Math.round(percentile(ms, 50)),
        p99_ms: Math.round(percentile(ms, 99)),
        max_ms: Math.round(ms.length ? ms[ms.length - 1] : NaN),
      };
    };
    const report = {
      url, serve_args: server ? server.args.join(' ') : null, clients: opts.clients,
      seconds: Number(elapsed.toFixed(1)), all: summarize(results), routes: {},
      mean_batch: before && after && after.count > before.count
        ? Number(((after.sum - before.sum) / (after.count - before.count)).toFixed(2)) : null,
      first_errors: [...new Set(results.filter((r) => !r.ok).map((r) => `${r.status} ${r.message}`))].slice(0, 5),
      machine: `${os.cpus()[0].model} (${cpuFlags()}), ${os.cpus().length} cores, `
        + `${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, node ${process.version}`,
      load_average_before: loadBefore,
    };
    for (const route of opts.routes) report.routes[route] = summarize(results.filter((r) => r.route === route));

    if (opts.json) {
      console.log(JSON.stringify(report));
    } else {
      console.log(`${report.clients} clients, ${report.seconds} s against ${url}`
        + (report.serve_args ? ` (blip2 ${report.serve_args})` : ''));
      console.log('route    requests errors  req/s   p50 ms  p99 ms  max ms');
      for (const [name, s] of [['all', report.all], ...Object.entries(report.routes)]) {
        console.log(`${name.padEnd(8)} ${String(s.requests).padStart(8)} ${String(s.errors).padStart(6)} `
          + `${s.per_s.toFixed(2).padStart(6)} ${String(s.p50_ms).padStart(8)} ${String(s.p99_ms).padStart(7)} `
          + `${String(s.max_ms).padStart(7)}`);
      }
      if (report.mean_batch !== null) console.log(`mean batch size (from /metrics): ${report.mean_batch}`);
      for (const e of report.first_errors) console.log(`error: ${e}`);
      console.log(`machine: ${report.machine}; 1-min load average before the run: ${report.load_average_before}`);
    }
    process.exitCode = report.all.errors > 0 ? 1 : 0;
  } finally {
    if (server) await server.stop();
  }
}

main().catch((err) => {
  console.error(`load.mjs: ${err.message}`);
  process.exit(2);
});
