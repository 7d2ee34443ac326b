import net from 'node:net';

/**
 * Open-loop load at a fixed rate, for latency (what wrk2 does): requests are due on a fixed schedule
 * whether or not earlier ones have answered, and each is timed from when it was due, so queueing shows
 * (no coordinated omission). Raw keep-alive sockets, opened before the clock starts, and a request
 * prebuilt once: node's http client costs enough per request to become the tail it is meant to measure.
 * Answers must carry Content-Length (the bench's upstream and the gateway's errors do). Prints JSON,
 * with the wall-clock times (ms) the load started and ended (startedAt, endedAt).
 *
 * Connections behave as an HTTP client's pool: servers close keep-alive connections idle for their
 * keepAliveTimeout (the gateway's is 5 s), which at a low rate happens to those at the bottom of the idle
 * stack; a closed one leaves the pool, and a new one is opened when a request is due and none is idle
 * (up to `connections`; counted as `reconnects`). A request written on a connection that closes before
 * any byte of its answer arrived is sent again on another, still timed from when it was first due (the
 * keep-alive race every client retries; counted as `retried`); one whose answer had begun is `cutOff`,
 * an error.
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
let retried = 0;
let cutOff = 0;
let reconnects = 0;
let connectErrors = 0;
const conns = new Set<Conn>();
const MAX = o.connections ?? 64;
/** connections being opened */
let opening = 0;

function send(c: Conn, due: number) {
  c.due = due;
  c.socket.write(request);
}

/** The next request due, or into the idle stack. */
function next(c: Conn) {
  const due = queue.shift();
  if (due !== undefined) send(c, due);
  else idle.push(c);
}

/** The server closed c: out of the pool; what was in flight is sent again or counted as cut off. */
function closed(c: Conn) {
  conns.delete(c);
  const i = idle.indexOf(c);
  if (i >= 0) idle.splice(i, 1);
  if (c.due !== undefined) {
    if (c.buf.length === 0) {
      retried++;
      queue.unshift(c.due);
    } else {
      cutOff++;
      done++;
      errors++;
    }
  }
  grow();
}

/** New connections for requests waiting in the queue, while the pool is not full. */
function grow() {
  while (!finished && queue.length > opening && conns.size + opening < MAX) {
    opening++;
    reconnects++;
    open().then(
      (c) => {
        opening--;
        next(c);
      },
      () => {
        opening--;
        connectErrors++;
      },
    );
  }
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
    c.socket.once('connect', () => {
      conns.add(c);
      c.socket.on('close', () => closed(c));
      resolve(c);
    });
    c.socket.once('error', reject);
    c.socket.on('error', () => {}); // followed by 'close'
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
        next(c);
      }
    });
  });
}

/** set when the results are out: closing connections are no longer replaced */
let finished = false;
idle.push(...(await Promise.all(Array.from({ length: MAX }, open))));
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
  grow();
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
    finished = true;
    process.stdout.write(
      JSON.stringify({ sent, done, errors: errors + (sent - done), failed, cutOff, unanswered: sent - done, retried, reconnects, connectErrors, achieved: done / o.seconds, p50: q(0.5), p99: q(0.99), startedAt, endedAt }),
    );
    for (const c of conns) c.socket.destroy();
  }, 20);
};
tick();
