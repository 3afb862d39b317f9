#!/usr/bin/env node
// A bounded load generator for `blip2 serve` (not part of CI): N concurrent
// clients on loopback send /v1/caption and /v1/answer requests back to back
// for a fixed time; prints the request count, errors, throughput and latency
// percentiles per route, and the batch sizes the server reports in /metrics.
//
//   node tests/web/load.mjs --blip2 build/bin/blip2 --max-batch 8,1 [--slices 6] [--clients 16] [--seconds 30]
//   node tests/web/load.mjs --url http://127.0.0.1:8080 [--api-key KEY]   (a server already running)
//
// With --blip2 it starts one `blip2 serve --port 0 -m models/shapes/opt` per
// --max-batch value (plus any --serve-arg ARG) and stops them afterwards. Each
// server gets --seconds of load in total, cut into --slices turns that
// alternate between the servers (A B A B ...), so that a machine whose other
// load comes and goes weighs on both alike. --json prints one JSON object.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const sourceDir = resolve(here, '../..');

function parseArgs(argv) {
  const opts = {
    clients: 16, seconds: 30, slices: 1, routes: ['caption', 'answer'], serveArgs: [], maxBatch: [undefined],
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
      case '--max-batch': opts.maxBatch = value().split(',').map(Number); break;
      case '--slices': opts.slices = Number(value()); break;
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
  if (!(opts.clients >= 1) || !(opts.seconds > 0) || !(opts.slices >= 1)) {
    throw new Error('--clients, --seconds and --slices must be positive');
  }
  if (opts.url && opts.maxBatch.length > 1) throw new Error('--max-batch with a list needs --blip2');
  if (opts.maxBatch.some((b) => b !== undefined && !(b >= 1))) throw new Error('--max-batch: positive integers');
  return opts;
}

// Starts `blip2 serve --port 0` and resolves with its URL once it prints `listening on`.
function startServer(opts, maxBatch) {
  const args = ['serve', '--host', '127.0.0.1', '--port', '0', '-m', opts.model, ...opts.serveArgs];
  if (maxBatch !== undefined) args.push('--max-batch', String(maxBatch));
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

// N clients send requests back to back to `url` for `seconds`; resolves with
// one row per request and the time until the last answer came.
async function loadSlice(url, opts, headers, bodies, seconds) {
  const rows = [];
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
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
      rows.push({ route, ms: performance.now() - start, ok, status, message });
    }
  };
  await Promise.all(Array.from({ length: opts.clients }, (_, c) => client(c)));
  return { rows, elapsed: (performance.now() - t0) / 1000 };
}

function summarize(rows, elapsed) {
  const ms = rows.filter((r) => r.ok).map((r) => r.ms).sort((a, b) => a - b);
  return {
    requests: rows.length,
    errors: rows.filter((r) => !r.ok).length,
    per_s: Number((ms.length / elapsed).toFixed(2)),
    p50_ms: Math.round(percentile(ms, 50)),
    p99_ms: Math.round(percentile(ms, 99)),
    max_ms: Math.round(ms.length ? ms[ms.length - 1] : NaN),
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const apiKey = opts.apiKey || process.env.BLIP2_API_KEY || '';
  const headers = { 'Content-Type': 'application/json' };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const image = readFileSync(opts.image).toString('base64');
  const bodies = {
    caption: [JSON.stringify({ image })],
    answer: questions.map((question) => JSON.stringify({ image, question })),
  };
  const metrics = async (url) => {
    try {
      const r = await fetch(`${url}/metrics`, { headers });
      return r.ok ? await r.text() : '';
    } catch (_) { return ''; }
  };

  const targets = opts.maxBatch.map((maxBatch) => ({
    maxBatch, server: opts.blip2 ? startServer(opts, maxBatch) : null, url: opts.url, rows: [], elapsed: 0,
  }));
  try {
    for (const t of targets) {
      if (t.server) t.url = await t.server.url;
      // One of each route first, so that no client pays for the first-use cost.
      for (const route of opts.routes) {
        const r = await fetch(`${t.url}/v1/${route}`, { method: 'POST', headers, body: bodies[route][0] });
        if (!r.ok) throw new Error(`warm-up ${route}: HTTP ${r.status} ${await r.text()}`);
        await r.json();
      }
      t.before = batchStats(await metrics(t.url));
    }
    // Other processes on the machine skew every number: say how busy it was.
    const loadBefore = os.loadavg()[0].toFixed(2);
    for (let slice = 0; slice < opts.slices; slice += 1) {
      for (const t of targets) {
        const { rows, elapsed } = await loadSlice(t.url, opts, headers, bodies, opts.seconds / opts.slices);
        t.rows.push(...rows);
        t.elapsed += elapsed;
      }
    }
    const loadAfter = os.loadavg()[0].toFixed(2);

    const report = {
      clients: opts.clients, seconds_each: opts.seconds, slices: opts.slices, load_average_before: loadBefore,
      load_average_after: loadAfter,
      machine: `${os.cpus()[0].model} (${cpuFlags()}), ${os.cpus().length} cores, `
        + `${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, node ${process.version}`,
      runs: [],
    };
    for (const t of targets) {
      const after = batchStats(await metrics(t.url));
      const run = {
        url: t.url, serve_args: t.server ? t.server.args.join(' ') : null, max_batch: t.maxBatch ?? null,
        seconds: Number(t.elapsed.toFixed(1)), all: summarize(t.rows, t.elapsed), routes: {},
        mean_batch: t.before && after && after.count > t.before.count
          ? Number(((after.sum - t.before.sum) / (after.count - t.before.count)).toFixed(2)) : null,
        first_errors: [...new Set(t.rows.filter((r) => !r.ok).map((r) => `${r.status} ${r.message}`))].slice(0, 5),
      };
      for (const route of opts.routes) run.routes[route] = summarize(t.rows.filter((r) => r.route === route), t.elapsed);
      report.runs.push(run);
    }

    if (opts.json) {
      console.log(JSON.stringify(report));
    } else {
      console.log(`${report.clients} clients, ${report.seconds_each} s per server in ${report.slices} alternating slice(s)`);
      for (const run of report.runs) {
        console.log(`\n${run.url}` + (run.serve_args ? ` (blip2 ${run.serve_args})` : '') + `, ${run.seconds} s`);
        console.log('route    requests errors  req/s   p50 ms  p99 ms  max ms');
        for (const [name, s] of [['all', run.all], ...Object.entries(run.routes)]) {
          console.log(`${name.padEnd(8)} ${String(s.requests).padStart(8)} ${String(s.errors).padStart(6)} `
            + `${s.per_s.toFixed(2).padStart(6)} ${String(s.p50_ms).padStart(8)} ${String(s.p99_ms).padStart(7)} `
            + `${String(s.max_ms).padStart(7)}`);
        }
        if (run.mean_batch !== null) console.log(`mean batch size (from /metrics): ${run.mean_batch}`);
        for (const e of run.first_errors) console.log(`error: ${e}`);
      }
      console.log(`\nmachine: ${report.machine}; 1-min load average ${report.load_average_before} before, `
        + `${report.load_average_after} after`);
    }
    process.exitCode = report.runs.some((r) => r.all.errors > 0) ? 1 : 0;
  } finally {
    await Promise.all(targets.filter((t) => t.server).map((t) => t.server.stop()));
  }
}

main().catch((err) => {
  console.error(`load.mjs: ${err.message}`);
  process.exit(2);
});
