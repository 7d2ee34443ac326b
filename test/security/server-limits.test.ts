import test from 'ava';
import { buildConfig, ConfigError } from '../../src/config/load.js';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { rawConnect, rawRequest, request, type RawReply } from '../helpers/http.js';
import { sleep } from '../helpers/wait.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

/**
 * What the main listener holds a client to: the size of a request head (server.maxHeaderSize), the
 * number of connections (server.maxConnections), a route's body size (routes[].bodyLimit), and the
 * time to send the head (server.headersTimeout) and the whole request (server.requestTimeout).
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let gw: TestGateway;
let token: string;

const LIMIT = 1024;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  up = await startUpstream();
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      server: { host: '127.0.0.1', port: 0, maxHeaderSize: '4kb', headersTimeout: '1s', requestTimeout: '2s' },
      routes: [
        { path: '/small', upstream: up.url, auth: 'none', bodyLimit: '1kb' },
        { path: '/authed', upstream: up.url, bodyLimit: '1kb' },
        { path: '/big', upstream: up.url, auth: 'none' },
      ],
    }),
  );
  token = await login(gw.url, 'limits-user.1');
});
test.after.always(async () => {
  await gw?.close();
  await up?.close();
  await sim?.close();
});

const seen = (path: string) => up.seen.filter((s) => s.url === path);

function assertTooLarge(t: { is: Function; regex: Function }, reply: RawReply | { status: number; json: any; headers: Record<string, unknown> }, what: string) {
  const res = 'responses' in reply ? reply.responses[0] : reply;
  t.is(res?.status, 413, what);
  const body = 'responses' in reply ? JSON.parse(reply.responses[0]?.body ?? 'null') : reply.json;
  t.is(body?.error, 'payload_too_large', what);
  t.regex(String(body?.message), /larger than 1024 bytes/, what);
}

test('server.maxHeaderSize: a head beyond it is refused with 431 by node, before the gateway; one within it is served', async (t) => {
  const within = await request(gw.url, { path: '/big/head-within', headers: { 'x-pad': 'a'.repeat(3000) } });
  t.is(within.status, 200);
  const beyond = await rawRequest(gw.url, `GET /big/head-beyond HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(5000)}\r\n\r\n`);
  t.is(beyond.responses[0]?.status, 431);
  t.true(beyond.closedByServer);
  t.is(seen('/big/head-beyond').length, 0, 'the upstream never saw it');
});

test('routes[].bodyLimit: a larger Content-Length is 413 JSON before anything reaches the upstream, and the connection closes', async (t) => {
  const at = await request(gw.url, { method: 'POST', path: '/small/at-limit', headers: { 'content-type': 'text/plain' }, body: 'x'.repeat(LIMIT) });
  t.is(at.status, 200, 'exactly the limit passes');
  t.is(seen('/small/at-limit')[0]?.body.length, LIMIT);

  const over = await request(gw.url, { method: 'POST', path: '/small/over', headers: { 'content-type': 'text/plain' }, body: 'x'.repeat(LIMIT + 1) });
  assertTooLarge(t, over, 'one byte over');
  t.is(over.headers.connection, 'close');
  t.is(over.headers['cache-control'], 'no-store');

  // a huge declared length is answered at once, without waiting for (or reading) the body
  const conn = await rawConnect(gw.url);
  conn.write('PUT /small/huge HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10737418240\r\n\r\n');
  conn.write('y'.repeat(4096));
  await conn.waitFor(/"message":"[^"]*"\}/, 2000);
  const huge = await conn.done(300);
  assertTooLarge(t, huge, '10 GiB declared');
  t.true(huge.closedByServer, 'the connection is closed rather than drained');

  // on an auth-required route, with or without a session
  const authed = await request(gw.url, { method: 'POST', path: '/authed/over', headers: { authorization: `Bearer ${token}` }, body: 'x'.repeat(LIMIT + 1) });
  assertTooLarge(t, authed, 'with a session');
  const anonymous = await request(gw.url, { method: 'POST', path: '/authed/over', body: 'x'.repeat(LIMIT + 1) });
  t.true([401, 413].includes(anonymous.status));
  t.is(seen('/small/over').length + seen('/small/huge').length + seen('/authed/over').length, 0, 'the upstream saw none of them');

  const next = await request(gw.url, { path: '/small/after' });
  t.is(next.status, 200, 'and the gateway goes on serving');
});

test('routes[].bodyLimit: a chunked body is counted as it streams; past the limit it is cut (413, or the connection closed), never delivered whole', async (t) => {
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
  const within = await rawRequest(
    gw.url,
    `POST /small/chunked-within HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk('a'.repeat(600))}${chunk('b'.repeat(424))}0\r\n\r\n`,
  );
  t.is(within.responses[0]?.status, 200);
  t.is(seen('/small/chunked-within')[0]?.body.length, LIMIT);

  for (const [path, headers] of [
    ['/small/chunked-over', ''],
    ['/authed/chunked-over', `Authorization: Bearer ${token}\r\n`],
  ] as const) {
    const conn = await rawConnect(gw.url);
    conn.write(`POST ${path} HTTP/1.1\r\nHost: x\r\n${headers}Transfer-Encoding: chunked\r\n\r\n`);
    for (let i = 0; i < 4; i++) {
      conn.write(chunk('c'.repeat(400)));
      await sleep(20); // a slow sender: the chunks arrive apart
    }
    conn.write('0\r\n\r\n');
    const reply = await conn.done(500);
    t.true(reply.closedByServer, `${path}: the connection is closed`);
    if (reply.responses.length > 0) assertTooLarge(t, reply, path);
    t.is(seen(path).length, 0, `${path}: the upstream never received a complete request`);
  }
  t.is((await request(gw.url, { path: '/small/after-chunked' })).status, 200);
});

test('a route without bodyLimit streams any size', async (t) => {
  const body = 'z'.repeat(1024 * 1024);
  const res = await request(gw.url, { method: 'POST', path: '/big/upload', headers: { 'content-type': 'application/octet-stream' }, body });
  t.is(res.status, 200);
  t.is(seen('/big/upload')[0]?.body.length, body.length);
});

test('slowloris: a client sending its head one byte every 500 ms is cut off at server.headersTimeout', async (t) => {
  const conn = await rawConnect(gw.url);
  const started = Date.now();
  conn.write('GET /big/slowloris HTTP/1.1\r\n');
  const rest = 'Host: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n';
  let i = 0;
  const drip = setInterval(() => conn.write(rest[i++ % rest.length]!), 500);
  t.teardown(() => clearInterval(drip));
  const reply = await conn.done(6000);
  clearInterval(drip);
  const elapsed = Date.now() - started;
  t.true(reply.closedByServer, 'closed by the gateway');
  t.true(elapsed >= 900 && elapsed < 4000, `cut after ${elapsed} ms (headersTimeout 1 s; the whole head would take ${rest.length / 2} s)`);
  if (reply.responses.length) t.is(reply.responses[0]!.status, 408);
  t.is(seen('/big/slowloris').length, 0);
});

test('a slow body is cut off at server.requestTimeout; the upstream never gets a complete request', async (t) => {
  const conn = await rawConnect(gw.url);
  const started = Date.now();
  conn.write('POST /big/slow-body HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n');
  const drip = setInterval(() => conn.write('b'), 300);
  t.teardown(() => clearInterval(drip));
  const reply = await conn.done(7000);
  clearInterval(drip);
  const elapsed = Date.now() - started;
  t.true(reply.closedByServer, 'closed by the gateway');
  t.true(elapsed >= 1900 && elapsed < 5000, `cut after ${elapsed} ms (requestTimeout 2 s; the body would take 30 s)`);
  if (reply.responses.length) t.is(reply.responses[0]!.status, 408);
  t.is(seen('/big/slow-body').length, 0);
});

test('server.maxConnections: connections beyond it are closed at once; the open ones are served', async (t) => {
  const small = await startTestGateway(
    testConfig({ apiBase: sim.url, server: { host: '127.0.0.1', port: 0, maxConnections: 3 }, routes: [{ path: '/big', upstream: up.url, auth: 'none' }] }),
  );
  t.teardown(() => small.close());
  const open = await Promise.all([0, 1, 2].map(() => rawConnect(small.url)));
  // the server has taken all three (a request on each is answered) before the fourth arrives
  for (const c of open) c.write('GET /big/held HTTP/1.1\r\nHost: x\r\n\r\n');
  await Promise.all(open.map((c) => c.waitFor(/^HTTP\/1\.1 200/)));

  const extra = await rawConnect(small.url);
  extra.write('GET /big/extra HTTP/1.1\r\nHost: x\r\n\r\n');
  const refused = await extra.done(1000);
  t.true(refused.closedByServer, 'the fourth connection is closed');
  t.is(refused.responses.length, 0, 'without an answer');
  t.is(seen('/big/extra').length, 0);

  open[0]!.write('GET /big/held-again HTTP/1.1\r\nHost: x\r\n\r\n');
  await open[0]!.waitFor(/held-again/);
  await open[1]!.done(0); // one leaves: room for a new one
  const deadline = Date.now() + 2000;
  let status: number | undefined;
  while (status !== 200 && Date.now() < deadline) {
    const r = await rawRequest(small.url, 'GET /big/later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 300);
    status = r.responses[0]?.status;
  }
  t.is(status, 200, 'a new connection is served once one closed');
  await Promise.all([open[0]!.done(0), open[2]!.done(0)]);
});

test('the limits are validated: defaults 16kb, 10000 connections, no body limit; nonsense refused with the key named', (t) => {
  const base = { wechat: { apps: [{ appid: APPID, secret: 's' }] }, routes: [{ path: '/api', upstream: 'http://u' }] };
  const c = buildConfig(base, 'x', {});
  t.is(c.server.maxHeaderSize, 16 * 1024);
  t.is(c.server.maxConnections, 10_000);
  t.is(c.routes[0]!.bodyLimit, undefined);
  t.is(buildConfig({ ...base, routes: [{ path: '/api', upstream: 'http://u', bodyLimit: '10mb' }] }, 'x', {}).routes[0]!.bodyLimit, 10 * 1024 * 1024);
  const err = t.throws(
    () =>
      buildConfig(
        { ...base, server: { maxHeaderSize: '100b', maxConnections: -5 }, routes: [{ path: '/api', upstream: 'http://u', bodyLimit: 'lots' }] },
        'x',
        {},
      ),
    { instanceOf: ConfigError },
  ) as ConfigError;
  const text = err.problems.join('\n');
  t.regex(text, /server\.maxHeaderSize: must be at least 1kb/);
  t.regex(text, /server\.maxConnections/);
  t.regex(text, /routes\[0\]\.bodyLimit: must be a size/);
});
