import { readFileSync } from 'node:fs';
import type net from 'node:net';
import test from 'ava';
import { startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { rawConnect, request } from '../helpers/http.js';
import { metricValue, scrape } from '../helpers/metrics.js';
import { freePort } from '../helpers/ports.js';
import { startRawUpstream, type RawUpstream } from '../helpers/upstream.js';
import { waitFor } from '../helpers/wait.js';

/**
 * When the upstream fails: refused, reset before and in the middle of its answer, silent before the
 * headers or in the middle of the body, answering 5xx, closing a kept-alive connection just as it is
 * reused. A real gateway in this process, real upstreams on loopback sockets. The tests are serial
 * and in this order: the last one checks that none of it left a socket behind.
 */
const TIMEOUT = 400;
let gw: TestGateway;
let faulty: RawUpstream;
let dropping: RawUpstream;
let refusedPort: number;

/** What the faulty upstream does, by request path. */
const behaviours: Record<string, (socket: net.Socket) => void> = {
  '/f/ok': (s) => s.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'),
  '/f/reset-before': (s) => s.destroy(),
  '/f/reset-mid': (s) => {
    s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nthe first part of the answer');
    setTimeout(() => s.destroy(), 30);
  },
  '/f/slow-headers': () => {},
  '/f/slow-body': (s) => s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nthe first part, then silence'),
  '/f/503': (s) =>
    s.write(
      'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 7\r\nX-Upstream-Error: db-down\r\n' +
        'Content-Length: 44\r\n\r\n{"type":"db-down","detail":"the database!"}\n',
    ),
  '/f/500-chunked': (s) =>
    s.write('HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n<html>\r\n7\r\n</html>\r\n0\r\n\r\n'),
  '/f/malformed': (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok'),
  '/f/hints': (s) => s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal'),
  '/f/switch': (s) => s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n'),
};

/** Requests answered per connection by the dropping upstream: the second one on a connection is dropped. */
const served = new WeakMap<net.Socket, number>();

test.before(async () => {
  faulty = await startRawUpstream((head, socket) => {
    const path = head.split(' ')[1]!.split('?')[0]!;
    const behave = behaviours[path];
    if (behave) behave(socket);
    else socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
  });
  // A kept-alive connection the upstream closes just as the gateway reuses it.
  // A POST is dropped on any connection, reused or new (the pool may well give it a fresh one).
  dropping = await startRawUpstream((head, socket) => {
    const n = served.get(socket) ?? 0;
    served.set(socket, n + 1);
    if (n > 0 || head.startsWith('POST ')) socket.destroy();
    else socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok');
  });
  refusedPort = await freePort(); // nothing listens there
  gw = await startTestGateway(
    testConfig({
      apiBase: 'http://127.0.0.1:1',
      routes: [
        { name: 'faulty', path: '/f', upstream: faulty.url, auth: 'none', timeout: `${TIMEOUT}ms` },
        { name: 'refused', path: '/refused', upstream: `http://127.0.0.1:${refusedPort}`, auth: 'none' },
        { name: 'dropping', path: '/ka', upstream: dropping.url, auth: 'none' },
      ],
    }),
  );
});
test.after.always(async () => {
  await gw?.close();
  await faulty?.close();
  await dropping?.close();
});

const errorsOf = async (route: string, kind: string) => metricValue(await scrape(gw.url), 'wxgate_upstream_errors_total', { route, kind });

/** TCP connections in state ESTABLISHED, from the kernel's tables: [local port, remote port] each. */
function establishedConnections(): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch {
      continue; // no IPv6
    }
    for (const line of text.split('\n').slice(1)) {
      // "  sl  local_address rem_address   st ...": addresses as HEXIP:HEXPORT, st 01 = ESTABLISHED
      const [, local, remote, st] = line.trim().split(/\s+/);
      if (st !== '01' || !local || !remote) continue;
      out.push([parseInt(local.slice(local.lastIndexOf(':') + 1), 16), parseInt(remote.slice(remote.lastIndexOf(':') + 1), 16)]);
    }
  }
  return out;
}

/**
 * The gateway's connections as the OS sees them: established TCP connections to the upstreams' ports
 * (the gateway's end of each: remote port = the upstream's), and those accepted on the gateway's port.
 * Counted from the kernel, not from process._getActiveHandles(): undici unrefs an idle kept-alive
 * upstream socket, and an unref'd handle is not listed there, so a leaked idle connection would not show.
 */
function gatewayConnections(): { upstream: number; client: number } {
  const upstreamPorts = new Set([Number(new URL(faulty.url).port), Number(new URL(dropping.url).port), refusedPort]);
  const all = establishedConnections();
  return {
    upstream: all.filter(([, remote]) => upstreamPorts.has(remote)).length,
    client: all.filter(([local]) => local === gw.port).length,
  };
}
let socketsBefore: { upstream: number; client: number } | undefined;

/** One GET on a connection of its own; what came back, whether the gateway closed it, and when. */
async function rawGet(path: string, idleMs = 3 * TIMEOUT) {
  const start = Date.now();
  const conn = await rawConnect(gw.url);
  conn.write(`GET ${path} HTTP/1.1\r\nHost: shop.example\r\n\r\n`);
  const reply = await conn.done(idleMs);
  return { ...reply, ms: Date.now() - start };
}

test.serial('a healthy upstream answers (the baseline for the socket count)', async (t) => {
  const res = await request(gw.url, { path: '/f/ok' });
  t.is(res.status, 200);
  t.deepEqual(res.json, { ok: true });
  socketsBefore = gatewayConnections();
  t.true(socketsBefore.upstream >= 1, `the kept-alive connection to the upstream is counted although it is idle (${socketsBefore.upstream})`);
});

test.serial('upstream refusing connections → 502 upstream_unavailable JSON at once, counted as refused', async (t) => {
  const start = Date.now();
  const res = await request(gw.url, { path: '/refused/x' });
  t.is(res.status, 502);
  t.deepEqual(res.json, { error: 'upstream_unavailable', message: 'The upstream service could not be reached.' });
  t.true(Date.now() - start < 3000, `answered after ${Date.now() - start} ms (refused at once; the route timeout would be a 504)`);
  t.is(await errorsOf('refused', 'refused'), 1);
});

test.serial('upstream resetting the connection before answering → 502 upstream_unavailable, counted as reset', async (t) => {
  const res = await request(gw.url, { path: '/f/reset-before' });
  t.is(res.status, 502);
  t.is(res.json.error, 'upstream_unavailable');
  t.is(await errorsOf('faulty', 'reset'), 1);
});

test.serial('upstream resetting the connection in the middle of its answer → the client connection is cut at once, not left hanging; counted as reset', async (t) => {
  const before = await errorsOf('faulty', 'reset');
  const reply = await rawGet('/f/reset-mid');
  t.is(reply.responses[0]?.status, 200, 'the headers had gone out already');
  t.false(reply.responses[0]?.complete, 'the client can tell the answer is incomplete');
  t.true(reply.closedByServer, `the gateway kept the client connection open with half an answer (${reply.ms} ms, then the test gave up)`);
  t.true(reply.ms < TIMEOUT, `closed after ${reply.ms} ms`);
  t.is((await errorsOf('faulty', 'reset')) - before, 1);
});

test.serial('upstream silent before its headers beyond the route timeout → 504 upstream_timeout JSON at the timeout, counted as timeout', async (t) => {
  const start = Date.now();
  const res = await request(gw.url, { path: '/f/slow-headers' });
  const ms = Date.now() - start;
  t.is(res.status, 504);
  t.deepEqual(res.json, { error: 'upstream_timeout', message: 'The upstream service did not answer in time.' });
  t.is(res.headers['content-type'], 'application/json; charset=utf-8');
  // not before the timeout; after it, only a loaded machine's delay (the upstream itself never answers)
  t.true(ms >= TIMEOUT - 20 && ms < TIMEOUT + 3000, `answered after ${ms} ms (route timeout ${TIMEOUT} ms)`);
  t.is(await errorsOf('faulty', 'timeout'), 1);
});

test.serial('upstream stalling in the middle of its body beyond the route timeout → the client connection is closed at the timeout, not a hang', async (t) => {
  const reply = await rawGet('/f/slow-body');
  t.is(reply.responses[0]?.status, 200);
  t.false(reply.responses[0]?.complete);
  t.true(reply.closedByServer, 'the gateway closed the connection');
  // the cut comes at the timeout (a node timer, refreshed by each read of the body); the slack is a loaded machine's
  t.true(reply.ms >= TIMEOUT - 20 && reply.ms < TIMEOUT + 1200, `closed after ${reply.ms} ms (route timeout ${TIMEOUT} ms)`);
  t.is(await errorsOf('faulty', 'timeout'), 2);
});

test.serial("upstream 5xx answers are passed through untouched: status, headers and body are the upstream's", async (t) => {
  const res = await request(gw.url, { path: '/f/503' });
  t.is(res.status, 503);
  t.is(res.text, '{"type":"db-down","detail":"the database!"}\n');
  t.is(res.headers['content-type'], 'application/problem+json');
  t.is(res.headers['retry-after'], '7');
  t.is(res.headers['x-upstream-error'], 'db-down');
  const chunked = await request(gw.url, { path: '/f/500-chunked' });
  t.is(chunked.status, 500);
  t.is(chunked.text, '<html></html>');
  t.is(chunked.headers['content-type'], 'text/html');
  const text = await scrape(gw.url);
  t.is(metricValue(text, 'wxgate_upstream_errors_total', { route: 'faulty', kind: 'other' }), 0, 'an answer is not an upstream error');
  t.is(metricValue(text, 'wxgate_http_requests_total', { route: 'faulty', method: 'GET', status: '503' }), 1);
});

test.serial('an answer that is not HTTP (a malformed Content-Length) → 502 upstream_unavailable, counted as other', async (t) => {
  const res = await request(gw.url, { path: '/f/malformed' });
  t.is(res.status, 502);
  t.is(res.json.error, 'upstream_unavailable');
  t.is(await errorsOf('faulty', 'other'), 1);
});

test.serial('an informational answer (103) before the final one: the client gets the final one; a 101 to a request that asked for no upgrade → 502, counted as other', async (t) => {
  const hints = await request(gw.url, { path: '/f/hints' });
  t.is(hints.status, 200);
  t.is(hints.text, 'final');
  const before = await errorsOf('faulty', 'other');
  const switched = await request(gw.url, { path: '/f/switch' });
  t.is(switched.status, 502);
  t.is(switched.json.error, 'upstream_unavailable');
  t.is((await errorsOf('faulty', 'other')) - before, 1);
});

test.serial('a reused keep-alive connection the upstream had closed: a GET is sent again once, a POST with a body is not', async (t) => {
  const first = await request(gw.url, { path: '/ka/one' });
  t.is(first.status, 200);
  const second = await request(gw.url, { path: '/ka/two' });
  t.is(second.status, 200, 'the client never sees the stale connection');
  t.deepEqual(
    dropping.heads.map((h) => h.split('\r\n')[0]),
    ['GET /ka/one HTTP/1.1', 'GET /ka/two HTTP/1.1', 'GET /ka/two HTTP/1.1'],
  );
  const post = await request(gw.url, { method: 'POST', path: '/ka/three', headers: { 'content-type': 'text/plain' }, body: 'data' });
  t.is(post.status, 502, 'a request with a body may have been consumed: not sent twice');
  t.is(post.json.error, 'upstream_unavailable');
  t.is(dropping.heads.filter((h) => h.startsWith('POST /ka/three ')).length, 1);
  const text = await scrape(gw.url);
  t.is(metricValue(text, 'wxgate_upstream_retries_total', { route: 'dropping' }), 1);
  t.is(metricValue(text, 'wxgate_upstream_errors_total', { route: 'dropping', kind: 'reset' }), 1, 'the POST');
});

test.serial('after all of that: the gateway still serves, leaves no connection behind (counted by the OS, idle ones included), and counted every kind', async (t) => {
  t.is((await request(gw.url, { path: '/f/ok' })).status, 200);
  t.truthy(socketsBefore);
  const before = socketsBefore!;
  // Right after: the requests were one at a time, so each upstream's pool keeps at most one idle
  // connection (closes in flight may take a moment).
  let now = gatewayConnections();
  await waitFor(() => ((now = gatewayConnections()).upstream <= 2 && now.client <= before.client), { timeout: 2000, message: 'the closes in flight done' }).catch(() => {});
  t.log(`established connections: to the upstreams ${before.upstream} before the faults, ${now.upstream} right after; from clients ${before.client} before, ${now.client} after`);
  t.true(now.upstream <= 2, `${now.upstream} connections to the two upstreams right after the faults (one idle per pool at most)`);
  t.true(now.client <= before.client, `${now.client} client connections now, ${before.client} before the faults`);
  // Then every one of them ends with the pools' keepAliveTimeout (4 s after its last use); one that
  // does not is a leak (these upstreams never close a connection themselves).
  await waitFor(() => (now = gatewayConnections()).upstream === 0, { timeout: 4000 + 4000, interval: 100, message: "a connection to an upstream outlived the pool's keep-alive timeout" });
  const text = await scrape(gw.url);
  for (const kind of ['refused', 'reset', 'timeout', 'other']) {
    const n = ['faulty', 'refused', 'dropping'].reduce((sum, route) => sum + metricValue(text, 'wxgate_upstream_errors_total', { route, kind }), 0);
    t.true(n > 0, `wxgate_upstream_errors_total{kind="${kind}"} is ${n}`);
  }
});
