import net from 'node:net';

/**
 * Open-loop load at a fixed rate, for latency (what wrk2 does): requests are due on a fixed schedule
 * whether or not earlier ones have answered, and each is timed from when it was due, so queueing shows
 * (no coordinated omission). Raw keep-alive sockets, opened before the clock starts, and a request
 * prebuilt once: node's http client costs enough per request to become the tail it is meant to measure.
 * Answers must carry Content-Length (the bench's upstream and the gateway's errors do). Prints JSON,
 * with the wall-clock times (ms) the load started and ended (startedAt, endedAt).
 * Usage: rate-client '{"url":..., "rate":..., "seconds":..., "headers":{...}, "connections":64}'
 */
const o = JSON.parse(process.argv[2]!) as { url: string; rate: number; seconds: number; headers?: Record<string, string>; connections?: number };
const u = new URL(o.url);
const request = Buffer.from(
  `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n${Object.entries(o.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`,
);

interface Conn {
  socket: net.Socket;
  /** when the request in flight was due (ms, performance.now()), or undefined when idle */
  due?: number;
  buf: Buffer;
}
const lat: number[] = [];
const queue: number[] = [];
const idle: Conn[] = [];
let sent = 0;
let errors = 0;
/** answers of status >= 400, by status */
const failed: Record<number, number> = {};
let done = 0;

function send(c: Conn, due: number) {
  c.due = due;
  c.socket.write(request);
}

/** One whole answer in c.buf: its length, and its status; undefined until it is all there. */
function answer(buf: Buffer): { length: number; status: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const head = buf.toString('latin1', 0, end);
  const length = end + 4 + Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
  return buf.length >= length ? { length, status: Number(head.slice(9, 12)) } : undefined;
}

function open(): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const c: Conn = { socket: net.connect(Number(u.port), u.hostname), buf: Buffer.alloc(0) };
    c.socket.setNoDelay(true);
    c.socket.once('connect', () => resolve(c));
    c.socket.once('error', reject);
    c.socket.on('data', (d: Buffer) => {
      c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
      for (let a = answer(c.buf); a && c.due !== undefined; a = answer(c.buf)) {
        c.buf = c.buf.subarray(a.length);
        done++;
        if (a.status >= 400) {
          errors++;
          failed[a.status] = (failed[a.status] ?? 0) + 1;
        }
        else lat.push(performance.now() - c.due);
        c.due = undefined;
        const next = queue.shift();
        if (next !== undefined) send(c, next);
        else idle.push(c);
      }
    });
  });
}

const conns = await Promise.all(Array.from({ length: o.connections ?? 64 }, open));
idle.push(...conns);
const start = performance.now();
/** wall-clock time the load starts (and, below, ends): for callers that sample the server meanwhile */
const startedAt = Date.now();
const end = start + o.seconds * 1000;
const interval = 1000 / o.rate;
const tick = () => {
  const now = performance.now();
  const due = Math.floor((Math.min(now, end) - start) / interval);
  for (; sent < due; sent++) {
    const at = start + sent * interval;
    const c = idle.pop();
    if (c) send(c, at);
    else queue.push(at);
  }
  if (now < end) {
    setTimeout(tick, 1);
    return;
  }
  const endedAt = Date.now();
  const wait = setInterval(() => {
    if (done < sent && performance.now() < end + 5000) return;
    clearInterval(wait);
    lat.sort((a, b) => a - b);
    const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! : NaN);
    process.stdout.write(JSON.stringify({ sent, done, errors: errors + (sent - done), failed, unanswered: sent - done, achieved: done / o.seconds, p50: q(0.5), p99: q(0.99), startedAt, endedAt }));
    for (const c of conns) c.socket.destroy();
  }, 20);
};
tick();
