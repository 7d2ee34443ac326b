import http from 'node:http';

/**
 * Open-loop load at a fixed rate, for latency: requests leave on schedule whether or not earlier ones
 * have answered (so queueing shows instead of hiding), each timed in microseconds. Prints JSON.
 * Usage: rate-client '{"url":..., "rate":..., "seconds":..., "headers":{...}, "connections":64}'
 */
const o = JSON.parse(process.argv[2]!) as { url: string; rate: number; seconds: number; headers?: Record<string, string>; connections?: number };
const u = new URL(o.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: o.connections ?? 64 });
const lat: number[] = [];
let sent = 0;
let errors = 0;
let inflight = 0;

function fire() {
  sent++;
  inflight++;
  const t0 = process.hrtime.bigint();
  const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, agent, headers: o.headers }, (res) => {
    res.resume();
    res.on('end', () => {
      inflight--;
      if (res.statusCode! >= 400) errors++;
      else lat.push(Number(process.hrtime.bigint() - t0) / 1000);
    });
  });
  req.on('error', () => {
    inflight--;
    errors++;
  });
  req.end();
}

const start = performance.now();
const end = start + o.seconds * 1000;
const tick = () => {
  const now = performance.now();
  const due = Math.floor(((Math.min(now, end) - start) / 1000) * o.rate);
  while (sent < due) fire();
  // a 1 ms timer, not a setImmediate spin: the client shares its core with the upstream and Redis, and a
  // spinning client starves them, which shows up as the targets' tail latency
  if (now < end) setTimeout(tick, 1);
  else {
    const wait = setInterval(() => {
      if (inflight > 0 && performance.now() < end + 5000) return;
      clearInterval(wait);
      lat.sort((a, b) => a - b);
      const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! / 1000 : NaN);
      process.stdout.write(JSON.stringify({ sent, done: lat.length, errors, achieved: lat.length / o.seconds, p50: q(0.5), p99: q(0.99) }));
      agent.destroy();
    }, 20);
  }
};
tick();
