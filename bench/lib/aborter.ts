import http from 'node:http';

/**
 * Clients that give up: at a fixed rate, requests to a slow upstream path, each abandoned after a
 * random 0–300 ms (before the answer, or in the middle of its body), the way phones drop off.
 * Usage: aborter '{"url":..., "rate":..., "seconds":..., "headers":{...}}'; prints JSON counts, and the
 * wall-clock times (ms) its load started and ended (startedAt, endedAt).
 */
const o = JSON.parse(process.argv[2]!) as { url: string; rate: number; seconds: number; headers?: Record<string, string> };
const u = new URL(o.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
let sent = 0;
let aborted = 0;
let completed = 0;

function fire() {
  sent++;
  // keep-alive like a real client; a request that is abandoned takes its connection with it
  const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, headers: o.headers, agent });
  const timer = setTimeout(() => {
    aborted++;
    req.destroy();
  }, Math.random() * 300);
  req.on('response', (res) => {
    res.resume();
    res.on('end', () => {
      clearTimeout(timer);
      completed++;
    });
  });
  req.on('error', () => {});
  req.end();
}

const start = performance.now();
const startedAt = Date.now();
const end = start + o.seconds * 1000;
const tick = () => {
  const now = performance.now();
  const due = Math.floor(((Math.min(now, end) - start) / 1000) * o.rate);
  while (sent < due) fire();
  if (now < end) setTimeout(tick, 5);
  else {
    const endedAt = Date.now();
    setTimeout(() => process.stdout.write(JSON.stringify({ sent, aborted, completed, startedAt, endedAt })), 500);
  }
};
tick();
