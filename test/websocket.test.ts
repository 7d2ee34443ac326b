import http from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import { accountId } from '../src/session/accounts.js';
import { buildConfig } from '../src/config/load.js';
import { createMetrics } from '../src/metrics/metrics.js';
import { Proxy } from '../src/proxy/proxy.js';
import { closeFrame, createUpgradeHandler, FrameCursor } from '../src/proxy/websocket.js';
import { createLogger } from '../src/base/logger.js';
import { MemoryStore } from '../src/session/memory-store.js';
import { Sessions } from '../src/session/sessions.js';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, spawnGateway, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startWsUpstream, wsConnect, type WsAnswer, type WsPeer, type WsUpstream } from './helpers/ws.js';
import { decodeFrames, encodeFrame, rawWebSocket } from './helpers/ws-raw.js';
import { sleep, waitFor, within } from './helpers/wait.js';

/**
 * WebSockets through the gateway (wx.connectSocket): a real gateway in this process, a real WebSocket
 * upstream and clients (test/helpers/ws.ts, on the ws package).
 */
const MP = 'wx1111111111111111';
const PUBLIC = 'https://m.example.com';
const COOKIE = '__Host-wxgate_session';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: WsUpstream;
let gw: TestGateway;

const routes = (url: string) => [
  { path: '/ws', upstream: url },
  { path: '/pub', upstream: url, auth: 'none' },
  { path: '/mp-only', upstream: url, apps: [MP] },
  { path: '/short', upstream: url, websocket: { maxLifetime: '700ms' } },
  { path: '/chat/v1', upstream: url, stripPrefix: true, headers: { 'X-Service': 'chat' } },
];

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: 'mp-secret' } });
  up = await startWsUpstream();
  gw = await startTestGateway(testConfig({ apiBase: sim.url, routes: routes(up.url), web: { publicUrl: PUBLIC, mp: { appid: MP, secret: 'mp-secret' } } }));
});
test.after.always(async () => {
  await gw?.close();
  await up?.close();
  await sim?.close();
});

function open(a: WsAnswer): WsPeer {
  if (a.status !== 101) throw new Error(`expected 101, got ${a.status}: ${'body' in a ? a.body : ''}`);
  return (a as { ws: WsPeer }).ws;
}

/** The upstream's side of the socket whose upgrade URL has this marker. */
async function upstreamPeer(marker: string): Promise<{ peer: WsPeer; headers: Record<string, unknown>; url: string }> {
  const u = await waitFor(() => up.upgrades.find((x) => x.url.includes(marker) && x.peer), { interval: 5, message: `an upgrade with ${marker} reached the upstream` });
  return { peer: u.peer!, headers: u.headers, url: u.url };
}

/** Waits until the gateway counts `n` closures of `route` for `reason` (the count follows the close). */
const closures = (base: string, route: string, reason: string, n = 1) =>
  waitFor(async () => metricValue(await scrape(base), 'wxgate_websocket_closures_total', { route, reason }) >= n, { message: `${n} ${reason} closures of ${route}` });

test.serial('an authenticated upgrade: the upstream gets the session identity (never a spoofed one), messages go both ways', async (t) => {
  const token = await login(gw.url, 'ws-alice.1');
  const openid = (await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).json.openid;
  const a = await wsConnect(gw.url, '/ws/room?m=auth-1', { Authorization: `Bearer ${token}`, 'X-Openid': 'evil', X_Openid: 'evil2', 'X-Appid': 'wxevil', 'X-User-Id': 'evil3', 'X-Request-Id': 'req-ws-1' });
  const client = open(a);
  const { peer, headers } = await upstreamPeer('m=auth-1');
  t.is(headers['x-openid'], openid);
  t.is(headers['x-user-id'], accountId({ appid: APPID, openid }), "the person's account id, never the client's");
  t.is(headers['x-appid'], APPID);
  t.is(headers.x_openid, undefined);
  t.is(headers.authorization, undefined, "the gateway's token stays with the gateway");
  t.is(headers.upgrade, 'websocket');
  t.regex(String(headers.connection), /upgrade/i);
  t.is(headers['x-forwarded-for'], '127.0.0.1');
  t.is(headers['x-request-id'], 'req-ws-1');
  t.truthy(headers['sec-websocket-key']);

  client.send('hello');
  t.is(await client.message(0), 'echo:hello');
  peer.send('pushed by the upstream');
  t.is(await client.message(1), 'pushed by the upstream');
  // a message of 70 000 bytes (64-bit length), split across many TCP segments
  const big = 'x'.repeat(70_000);
  client.send(big);
  t.is((await client.message(2)).length, 'echo:'.length + big.length);

  let m = await scrape(gw.url);
  t.is(metricValue(m, 'wxgate_websockets_open', { route: 'ws' }), 1);
  t.true(metricValue(m, 'wxgate_http_requests_total', { route: 'ws', method: 'GET', status: '101' }) >= 1);
  client.close();
  await within(2000, client.closed, 'the closing handshake');
  t.deepEqual(client.closeFrame, { code: 1000, reason: '' }, "the upstream's close frame came through");
  await waitFor(async () => metricValue(await scrape(gw.url), 'wxgate_websockets_open', { route: 'ws' }) === 0, { message: 'no socket open' });
  m = await scrape(gw.url);
  t.is(metricValue(m, 'wxgate_websockets_open', { route: 'ws' }), 0);
  t.true(metricValue(m, 'wxgate_websocket_closures_total', { route: 'ws', reason: 'client' }) + metricValue(m, 'wxgate_websocket_closures_total', { route: 'ws', reason: 'upstream' }) >= 1);
});

test('no token: 401 JSON, the connection closed, and nothing reaches the upstream', async (t) => {
  const before = up.upgrades.length;
  const a = await wsConnect(gw.url, '/ws/room?m=anon');
  t.is(a.status, 401);
  t.like((a as { json: unknown }).json, { error: 'unauthorized' });
  t.is(a.headers['www-authenticate'], 'Bearer realm="wxgate"');
  t.is(a.headers.connection, 'close');
  const bad = await wsConnect(gw.url, '/ws/room?m=anon', { Authorization: 'Bearer not-a-token' });
  t.is(bad.status, 401);
  t.false(up.upgrades.slice(before).some((u) => u.url.includes('m=anon')));
  t.is((await wsConnect(gw.url, '/nowhere')).status, 404);
  t.is((await wsConnect(gw.url, '/ws/a%2Fb')).status, 400);
});

test('a public route: the upgrade passes without a session and without identity headers', async (t) => {
  const client = open(await wsConnect(gw.url, '/pub/feed?m=pub-1', { 'X-Openid': 'evil' }));
  const { headers } = await upstreamPeer('m=pub-1');
  t.is(headers['x-openid'], undefined);
  client.send('ping');
  t.is(await client.message(0), 'echo:ping');
  client.terminate();
});

test('stripPrefix and routes[].headers apply to upgrades too', async (t) => {
  const token = await login(gw.url, 'ws-strip.1');
  const client = open(await wsConnect(gw.url, '/chat/v1/room/9?m=strip-1', { Authorization: `Bearer ${token}`, 'X-Service': 'spoofed' }));
  const { url, headers } = await upstreamPeer('m=strip-1');
  t.is(url, '/room/9?m=strip-1');
  t.is(headers['x-service'], 'chat');
  client.terminate();
});

test('cookie sessions: an upgrade from an allowed Origin passes; a foreign Origin or none is refused (cross-site WebSocket hijacking)', async (t) => {
  const token = await login(gw.url, 'ws-cookie.1');
  const cookie = `${COOKIE}=${token}; theme=dark`;
  const before = up.upgrades.length;
  const foreign = await wsConnect(gw.url, '/ws/c?m=cookie-evil', { Cookie: cookie, Origin: 'https://evil.example' });
  t.is(foreign.status, 403);
  t.like((foreign as { json: unknown }).json, { error: 'csrf_failed' });
  const none = await wsConnect(gw.url, '/ws/c?m=cookie-none', { Cookie: cookie });
  t.is(none.status, 403);
  t.false(up.upgrades.slice(before).some((u) => /m=cookie-(evil|none)/.test(u.url)), 'neither reached the upstream');

  const client = open(await wsConnect(gw.url, '/ws/c?m=cookie-ok', { Cookie: cookie, Origin: PUBLIC }));
  const { headers } = await upstreamPeer('m=cookie-ok');
  t.truthy(headers['x-openid']);
  t.is(headers.cookie, 'theme=dark', "the gateway's cookie is not passed on");
  client.send('c');
  t.is(await client.message(0), 'echo:c');
  client.terminate();
  // Bearer needs no Origin check: a browser cannot add an Authorization header
  open(await wsConnect(gw.url, '/ws/c?m=bearer-foreign', { Authorization: `Bearer ${token}`, Origin: 'https://evil.example' })).terminate();
});

test('POST /logout closes the open socket at once: 4401 to both sides', async (t) => {
  const token = await login(gw.url, 'ws-logout.1');
  const client = open(await wsConnect(gw.url, '/ws/l?m=logout-1', { Authorization: `Bearer ${token}` }));
  const other = open(await wsConnect(gw.url, '/ws/l?m=logout-other', { Authorization: `Bearer ${await login(gw.url, 'ws-logout-other.1')}` }));
  const { peer } = await upstreamPeer('m=logout-1');
  client.send('before');
  t.is(await client.message(0), 'echo:before');
  const start = Date.now();
  t.is((await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${token}` } })).status, 204);
  await within(5000, client.closed, 'the socket closed after logout');
  t.log(`closed ${Date.now() - start} ms after the logout`);
  t.deepEqual(client.closeFrame, { code: 4401, reason: 'session ended' });
  await within(5000, peer.closed, 'the upstream side closed');
  t.deepEqual(peer.closeFrame, { code: 4401, reason: 'session ended' });
  // another user's socket is untouched
  other.send('still here');
  t.is(await other.message(0), 'echo:still here');
  other.terminate();
  await closures(gw.url, 'ws', 'session_ended');
  t.pass();
});

test('routes[].websocket.maxLifetime closes the socket (1001)', async (t) => {
  const token = await login(gw.url, 'ws-short.1');
  const start = Date.now();
  const client = open(await wsConnect(gw.url, '/short/x?m=short-1', { Authorization: `Bearer ${token}` }));
  client.send('a');
  t.is(await client.message(0), 'echo:a');
  await within(5000, client.closed, 'closed at maxLifetime');
  const lived = Date.now() - start;
  t.true(lived >= 650, `lived ${lived} ms: not closed before maxLifetime (700 ms)`);
  t.deepEqual(client.closeFrame, { code: 1001, reason: 'maximum lifetime reached' });
  await closures(gw.url, 'short', 'max_lifetime');
  t.is(metricValue(await scrape(gw.url), 'wxgate_websocket_closures_total', { route: 'short', reason: 'max_lifetime' }), 1);
});

test('an app-restricted route refuses another app\'s session (403 app_not_allowed)', async (t) => {
  const token = await login(gw.url, 'ws-app.1');
  const a = await wsConnect(gw.url, '/mp-only/x?m=app-1', { Authorization: `Bearer ${token}` });
  t.is(a.status, 403);
  t.like((a as { json: unknown }).json, { error: 'app_not_allowed' });
  t.false(up.upgrades.some((u) => u.url.includes('m=app-1')));
});

test("an upstream that refuses the upgrade: its answer is passed back and the connection closed", async (t) => {
  const token = await login(gw.url, 'ws-refuse.1');
  const a = await wsConnect(gw.url, '/ws/refuse?m=refuse-1', { Authorization: `Bearer ${token}` });
  t.is(a.status, 403);
  t.deepEqual((a as { json: unknown }).json, { refused: true });
  t.is(a.headers['x-from'], 'upstream');
});

test('an upgrade to an own endpoint, or a non-WebSocket upgrade, is answered as a plain request', async (t) => {
  const token = await login(gw.url, 'ws-own.1');
  const a = await wsConnect(gw.url, '/session', { Authorization: `Bearer ${token}` });
  t.is(a.status, 200);
  t.truthy((a as { json: { openid?: string } }).json.openid);
  t.is(a.headers.connection, 'close');
});

test('an upstream that cannot be reached: 502 JSON', async (t) => {
  const g = await startTestGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/down', upstream: 'http://127.0.0.1:1', auth: 'none' }] }));
  t.teardown(() => g.close());
  const a = await wsConnect(g.url, '/down/x');
  t.is(a.status, 502);
  t.like((a as { json: unknown }).json, { error: 'upstream_unavailable' });
});

test('a session at its absolute deadline (session.maxAge): its socket is closed (4401)', async (t) => {
  const g = await startTestGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/ws', upstream: up.url }], session: { store: 'memory', maxAge: '1500ms' } }));
  t.teardown(() => g.close());
  const token = await login(g.url, 'ws-maxage.1');
  const client = open(await wsConnect(g.url, '/ws/x?m=maxage', { Authorization: `Bearer ${token}` }));
  await within(3000, client.closed, 'closed at the session deadline');
  t.deepEqual(client.closeFrame, { code: 4401, reason: 'session ended' });
});

test('shutdown closes open sockets at once (1001), and the gateway stops promptly', async (t) => {
  const g = await startTestGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/ws', upstream: up.url }] }));
  const token = await login(g.url, 'ws-shutdown.1');
  const client = open(await wsConnect(g.url, '/ws/x?m=shutdown', { Authorization: `Bearer ${token}` }));
  client.send('x');
  await client.message(0);
  const start = Date.now();
  await within(3000, g.close(), 'close()');
  t.true(Date.now() - start < 3000, `${Date.now() - start} ms`);
  await within(1000, client.closed, 'the socket closed');
  t.deepEqual(client.closeFrame, { code: 1001, reason: 'gateway shutting down' });
});

test('a revocation on another replica (Redis) closes the socket', async (t) => {
  const redis: RedisServer = await startRedis();
  const session = { store: 'redis', redis: { url: redis.url, keyPrefix: 'wstest:' } };
  const a = await startTestGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/ws', upstream: up.url }], session }));
  const b = await startTestGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/ws', upstream: up.url }], session }));
  t.teardown(async () => {
    await a.close();
    await b.close();
    await redis.close();
  });
  const token = await login(a.url, 'ws-replica.1');
  const client = open(await wsConnect(a.url, '/ws/x?m=replica', { Authorization: `Bearer ${token}` }));
  client.send('r');
  t.is(await client.message(0), 'echo:r');
  t.is((await request(b.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${token}` } })).status, 204);
  await within(5000, client.closed, 'closed after the logout on the other replica');
  t.is(client.closeFrame?.code, 4401);
});

test('the gateway\'s close frame goes in between two frames, never inside one', async (t) => {
  // frames of every length class, cut into pieces at every offset: the cursor always knows the boundaries
  const frames = [encodeFrame(1, Buffer.from('a'), true), encodeFrame(2, Buffer.alloc(300, 7), false), encodeFrame(1, Buffer.alloc(70_000, 1), true), encodeFrame(9, Buffer.alloc(0), false)];
  const stream = Buffer.concat(frames);
  const ends = frames.reduce<number[]>((acc, f) => [...acc, (acc.at(-1) ?? 0) + f.length], []);
  for (const size of [1, 2, 3, 7, 13, 100, 4096, stream.length]) {
    const cursor = new FrameCursor();
    const seenEnds: number[] = [];
    for (let off = 0; off < stream.length; off += size) {
      const chunk = stream.subarray(off, off + size);
      let base = 0;
      for (;;) {
        const end = cursor.advance(chunk.subarray(base), true);
        if (end < 0) break;
        base += end;
        seenEnds.push(off + base);
        if (base >= chunk.length) break;
      }
    }
    t.deepEqual(seenEnds, ends, `chunks of ${size}`);
    t.true(cursor.atBoundary);
  }
  const decoded = decodeFrames(Buffer.concat([stream, closeFrame(4401, 'session ended', true)])).frames;
  t.deepEqual(decoded.map((f) => f.opcode), [1, 2, 1, 9, 8]);
  t.is(decoded[4]!.payload.readUInt16BE(0), 4401);
  t.is(decoded[4]!.payload.subarray(2).toString(), 'session ended');
});

test('a close in the middle of a frame waits for its end: the upstream gets the whole message, then the close', async (t) => {
  const token = await login(gw.url, 'ws-midframe.1');
  // a raw client: the ws package never sends half a frame, nor leaves a close frame unanswered
  const client = await rawWebSocket(gw.url, '/ws/x?m=midframe', { Authorization: `Bearer ${token}` });
  const { peer } = await upstreamPeer('m=midframe');
  const frame = encodeFrame(1, Buffer.from('a message in two halves'), true);
  client.raw(frame.subarray(0, 10));
  await sleep(50); // nothing observable marks the half frame's arrival at the gateway: give it real time
  t.is((await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${token}` } })).status, 204);
  // the client's direction was between two frames: its close frame came at once
  await waitFor(() => client.closeFrame, { message: "the gateway's close frame to the client" });
  t.is(client.closeFrame?.code, 4401);
  t.is(peer.closeFrame, undefined, 'half a frame on its way up: no close frame inside it');
  t.deepEqual(peer.messages, []);
  client.raw(frame.subarray(10));
  await within(2000, peer.closed, 'the upstream side closed');
  t.deepEqual(peer.messages, ['a message in two halves'], 'the whole frame went up');
  t.deepEqual(peer.closeFrame, { code: 4401, reason: 'session ended' }, 'then the close frame');
  await within(3000, client.closed, 'the client side closed');
});

test('an idle-expired session is found by the periodic check and its socket closed (4401)', async (t) => {
  // the upgrade handler on its own server, with a fast check: sessions idle for 800 ms are gone
  const metrics = createMetrics({ defaultMetrics: false });
  const log = createLogger('silent');
  const store = new MemoryStore();
  const sessions = new Sessions(store, { ttl: 800, maxAge: 60_000, refreshInterval: 60_000, maxPerUser: 10, cache: { max: 100, ttl: 10_000 } }, metrics, log);
  const config = buildConfig({ wechat: { apps: [{ appid: APPID, secret: 's' }] }, routes: [{ path: '/ws', upstream: up.url }] }, 't', {});
  const proxy = new Proxy(metrics, log);
  const handler = createUpgradeHandler({ config: () => config, sessions, proxy, metrics, log, fallback: (_req, res) => res.writeHead(404).end(), checkInterval: 200 });
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(async () => {
    await handler.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await proxy.close();
    await store.close();
  });
  const { token } = await sessions.create({ appid: APPID, openid: 'o-idle' }, 'key', 'miniprogram');
  const start = Date.now();
  const client = open(await wsConnect(url, '/ws/x?m=idle', { Authorization: `Bearer ${token}` }));
  t.is(handler.open, 1);
  client.send('still talking');
  t.is(await client.message(0), 'echo:still talking');
  await within(5000, client.closed, 'closed once the session idled out');
  const lived = Date.now() - start;
  t.true(lived >= 750, `an open socket does not keep the session alive, but it lived its idle time (${lived} ms)`);
  t.deepEqual(client.closeFrame, { code: 4401, reason: 'session ended' });
  await waitFor(() => handler.open === 0, { message: 'the handler counts no open socket' });
  t.is(handler.open, 0);
});

test.serial('SIGTERM: the gateway process closes its open WebSockets (1001) and exits 0', async (t) => {
  const proc = await spawnGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/ws', upstream: up.url }], server: { host: '127.0.0.1', port: 0, shutdownTimeout: '10s' } }));
  t.teardown(() => proc.stop('SIGKILL'));
  const token = await login(proc.url, 'ws-sigterm.1');
  const client = open(await wsConnect(proc.url, '/ws/x?m=sigterm', { Authorization: `Bearer ${token}` }));
  client.send('x');
  await client.message(0);
  const start = Date.now();
  const exited = proc.stop('SIGTERM');
  await within(3000, client.closed, 'the socket closed at SIGTERM');
  t.deepEqual(client.closeFrame, { code: 1001, reason: 'gateway shutting down' });
  t.is(await within(5000, exited, 'exit'), 0);
  t.true(Date.now() - start < 5000, `exited ${Date.now() - start} ms after SIGTERM, not at the 10 s drain deadline`);
});

/** The access log lines (msg "request") with this marker in their path or id. */
function accessLines(logs: string[], marker: string): Array<Record<string, unknown>> {
  return logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request' && (String(l.req_id).includes(marker) || String(l.path).includes(marker)));
}

test('an upgrade writes an access log line with the fields of a proxied request: opened (101), refused (401), and the id it was sent on with', async (t) => {
  const token = await login(gw.url, 'ws-access.1');
  const client = open(await wsConnect(gw.url, '/ws/access-open', { Authorization: `Bearer ${token}`, 'X-Request-Id': 'ws-access-101' }));
  client.terminate();
  t.is((await wsConnect(gw.url, '/ws/access-refused', { 'X-Request-Id': 'ws-access-401' })).status, 401);
  t.is((await request(gw.url, { path: '/pub/access-http', headers: { authorization: `Bearer ${token}`, 'x-request-id': 'ws-access-http' } })).status, 200);
  await waitFor(() => ['ws-access-101', 'ws-access-401', 'ws-access-http'].every((m) => accessLines(gw.logs, m).length > 0), { message: 'the three access log lines' });
  const [opened] = accessLines(gw.logs, 'ws-access-101');
  const [refused] = accessLines(gw.logs, 'ws-access-401');
  const [http] = accessLines(gw.logs, 'ws-access-http');
  t.like(opened, { route: 'ws', method: 'GET', path: '/ws/access-open', status: 101, upstream: up.url, appid: APPID });
  t.like(refused, { route: 'ws', method: 'GET', path: '/ws/access-refused', status: 401 });
  t.truthy(http, 'the proxied request, for comparison');
  t.deepEqual(Object.keys(opened!).filter((k) => k !== 'user' && k !== 'appid').sort(), Object.keys(http!).sort(), 'the same fields as a proxied request');
  t.is(typeof opened!.ms, 'number');
  t.is(typeof opened!.user, 'string', 'the user, hashed');
});

test('an upgrade with a body is refused (400): the parser stops at the head, so the body would reach no one', async (t) => {
  const before = up.upgrades.length;
  const a = await wsConnect(gw.url, '/pub/body?m=with-body', { 'Content-Length': '5' });
  t.is(a.status, 400);
  t.like((a as { json: unknown }).json, { error: 'bad_request' });
  t.false(up.upgrades.slice(before).some((u) => u.url.includes('m=with-body')));
});

test('an upstream that does not answer the upgrade in routes[].timeout: 504 JSON; one refused target: the next one gets it', async (t) => {
  const silent = http.createServer();
  silent.on('upgrade', () => {}); // holds the upgrade, answers nothing
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => silent.closeAllConnections() ?? silent.close());
  const slow = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const g = await startTestGateway(
    testConfig({ apiBase: sim.url, routes: [{ path: '/slow', upstream: slow, auth: 'none', timeout: '300ms' }, { path: '/two', upstream: ['http://127.0.0.1:1', up.url], auth: 'none' }] }),
  );
  t.teardown(() => g.close());
  const a = await wsConnect(g.url, '/slow/x');
  t.is(a.status, 504);
  t.like((a as { json: unknown }).json, { error: 'upstream_timeout' });
  open(await wsConnect(g.url, '/two/x?m=failover-1')).terminate();
  t.truthy(up.upgrades.find((u) => u.url.includes('m=failover-1')), 'the second target got it');
  const m = await scrape(g.url);
  t.is(metricValue(m, 'wxgate_upstream_errors_total', { route: 'slow', kind: 'timeout' }), 1);
  t.true(metricValue(m, 'wxgate_upstream_retries_total', { route: 'two' }) >= 1);
});
