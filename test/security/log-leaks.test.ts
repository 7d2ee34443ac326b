/**
 * No credential or phone number in any log line: one gateway at log level trace (access log on, real
 * Redis, the simulator as WeChat, real upstreams) driven through every flow — mini-program logins
 * (fresh, replayed, refused by WeChat, malformed), sessions, logout, bad and misplaced tokens, phone
 * numbers (and a route forwarding them), decrypt (good and failing), Official Account and website OAuth
 * (with a replayed callback), scan-to-login, proxied requests by Bearer and by cookie, a WebSocket, a
 * token sent as X-Request-Id, upstream failures — and then every line it wrote is searched for every
 * token, code, session_key, secret, access_token, ticket secret and phone number the test handed out or
 * saw, and for their shapes (test/helpers/log-leaks.ts). Every other test's gateway is searched by shape
 * and for its configuration's secrets when it closes (test/helpers/gateway.ts).
 */
import test from 'ava';
import { simulatedSessionKey, startSimulator } from '../../src/dev/simulator.js';
import { Browser } from '../helpers/browser.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { leaks } from '../helpers/log-leaks.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { startWsUpstream, wsConnect, type WsUpstream } from '../helpers/ws.js';

const MP = 'wx11112222333344cc';
const MP_SECRET = 'mp-secret-leaks-0123456789';
const OPEN = 'wx55556666777788dd';
const OPEN_SECRET = 'open-secret-leaks-0123456789';
const STATE_SECRET = 'state-secret-leaks-0123456789-abcdefghij';
const ADMIN_TOKEN = 'admin-token-leaks-0123456789';
const PUBLIC = 'https://m.example.com';

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let wsUp: WsUpstream;
let gw: TestGateway;

test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
  up = await startUpstream();
  wsUp = await startWsUpstream();
});
test.after.always(async () => {
  await gw?.close().catch(() => {});
  await up?.close();
  await wsUp?.close();
  await sim?.close();
  await redis?.close();
});

const json = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

test('every flow at trace level: no token, code, session_key, secret, access_token, ticket secret or phone number in any log line', async (t) => {
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      wechat: {
        apiBase: sim.url,
        oauthBase: sim.url,
        timeout: '1s',
        apps: [{ appid: APPID, secret: SECRET }],
      },
      session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'leaks:' } },
      routes: [
        { path: '/api/public', upstream: up.url, auth: 'none' },
        { path: '/api/phone', upstream: up.url, forwardPhone: true },
        { path: '/api/down', upstream: 'http://127.0.0.1:9' },
        { path: '/api', upstream: up.url },
        { path: '/ws', upstream: wsUp.url },
      ],
      web: {
        publicUrl: PUBLIC,
        stateSecret: STATE_SECRET,
        redirects: ['/api'],
        mp: { appid: MP, secret: MP_SECRET, scope: 'snsapi_userinfo' },
        open: { appid: OPEN, secret: OPEN_SECRET },
        scan: { page: 'pages/scan/index', checkPath: false, envVersion: 'develop' },
      },
      admin: { port: 0, host: '127.0.0.1', token: ADMIN_TOKEN },
      log: { level: 'trace', access: true },
    }),
    { logLevel: 'trace' },
  );
  /** every value that must not be logged */
  const known: string[] = [SECRET, MP_SECRET, OPEN_SECRET, STATE_SECRET, ADMIN_TOKEN];
  const codes: string[] = [];
  const code = (c: string) => {
    codes.push(c);
    known.push(c, simulatedSessionKey(APPID, c));
    return c;
  };

  // ---- mini-program logins: fresh, a union user, the same code again (the remembered answer), refused by WeChat, malformed
  const alice = await login(gw.url, code('leaky-alice.1'));
  const union = await login(gw.url, code('union-leaky.1'));
  const replayed = await request(gw.url, { path: '/login', ...json({ code: 'leaky-alice.1' }) });
  t.is(replayed.status, 200);
  known.push(alice, union, replayed.json.token);
  for (const c of ['fail-40029', 'fail-45011', 'fail-40226', 'fail--1', 'garbage', 'html', 'leaky-bob.1']) {
    const r = await request(gw.url, { path: '/login', ...json({ code: code(c), appid: c === 'leaky-bob.1' ? 'wx0000000000000000' : undefined }) });
    t.not(r.status, 200, c);
  }
  await request(gw.url, { path: '/login', ...json({ code: code('leaky-slow-secret-code'), extra: SECRET }) });
  await request(gw.url, { path: '/login', method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"code":"${code('leaky-broken-json')}"` });

  // ---- sessions: good, with a token changed, misplaced (query, cookie, other header), as X-Request-Id
  t.is((await request(gw.url, { path: '/session', headers: bearer(alice) })).status, 200);
  const changed = `${alice.slice(0, -1)}${alice.endsWith('A') ? 'B' : 'A'}`;
  known.push(changed);
  t.is((await request(gw.url, { path: '/session', headers: bearer(changed) })).status, 401);
  await request(gw.url, { path: `/api/orders?access_token=${alice}&token=${alice}`, headers: { cookie: `token=${alice}`, 'x-token': alice } });
  await request(gw.url, { path: '/api/orders', headers: { ...bearer(alice), 'x-request-id': alice } });
  await request(gw.url, { path: '/session', headers: { ...bearer(alice), 'x-request-id': union } });

  // ---- phone numbers: the endpoint, then a route that forwards it (X-Wx-Phone upstream)
  known.push('13800138000', '13900139000');
  const phone = await request(gw.url, { path: '/wx/phone', ...json({ code: code('phone-13800138000') }), headers: { 'content-type': 'application/json', ...bearer(alice) } });
  t.is(phone.status, 200, phone.text);
  const fwd = await request(gw.url, { path: '/api/phone/me', headers: bearer(alice) });
  t.is(fwd.status, 200);
  t.regex(String(up.seen.at(-1)?.headers['x-wx-phone']), /13800138000$/, 'the number went upstream (and only there)');
  // within limits.phone.window: the kept number, WeChat not asked
  const kept = await request(gw.url, { path: '/wx/phone', ...json({ code: 'phone-13800138000' }), headers: { 'content-type': 'application/json', ...bearer(alice) } });
  t.is(kept.json.source, 'kept', kept.text);
  // force: WeChat is asked (and refuses the spent code)
  const reused = await request(gw.url, { path: '/wx/phone', ...json({ code: 'phone-13800138000', force: true }), headers: { 'content-type': 'application/json', ...bearer(alice) } });
  t.is(reused.status, 400);
  await request(gw.url, { path: '/wx/phone', ...json({ code: code('phone-13900139000@someone-else'), force: true }), headers: { 'content-type': 'application/json', ...bearer(alice) } });

  // ---- decrypt: good, then data for another login (session_key_stale / decrypt_failed)
  const made = await request(sim.url, { path: '/dev/encrypt', ...json({ appid: APPID, code: 'leaky-alice.1', data: { phoneNumber: '13800138000', secretNote: 'x' } }) });
  t.is(made.status, 200, made.text);
  known.push(made.json.encryptedData);
  const opened = await request(gw.url, { path: '/wx/decrypt', ...json({ encryptedData: made.json.encryptedData, iv: made.json.iv }), headers: { 'content-type': 'application/json', ...bearer(alice) } });
  t.is(opened.status, 200, opened.text);
  const foreign = await request(sim.url, { path: '/dev/encrypt', ...json({ appid: APPID, code: 'union-leaky.1', data: { a: 1 } }) });
  const bad = await request(gw.url, { path: '/wx/decrypt', ...json({ encryptedData: foreign.json.encryptedData, iv: foreign.json.iv }), headers: { 'content-type': 'application/json', ...bearer(alice) } });
  t.is(bad.status, 400);

  // ---- web logins: Official Account and website OAuth (the callback replayed), a cookie session on a proxied route
  for (const flow of ['mp', 'open'] as const) {
    const b = new Browser(gw.url);
    const start = await b.go(`/oauth/${flow}/authorize?redirect=/api/cart`);
    t.is(start.status, 302, `${flow} authorize: ${start.text}`);
    const q = new URLSearchParams(new URL(start.headers.location!).search);
    q.set('user', `leaky-web-${flow}`);
    const approved = await request(sim.url, { path: `/connect/approve?${q}` });
    t.is(approved.status, 302);
    const back = new URL(approved.headers.location!);
    const oauthCode = back.searchParams.get('code')!;
    codes.push(oauthCode);
    known.push(oauthCode, back.searchParams.get('state')!);
    const done = await b.go(back.pathname + back.search);
    t.is(done.status, 302, `${flow} callback: ${done.text}`);
    for (const v of b.jar.values()) known.push(v);
    t.is((await b.go('/api/cart')).status, 200);
    // the same callback again, and the code with another browser's state
    await b.go(back.pathname + back.search);
    const other = new Browser(gw.url);
    const s2 = await other.go(`/oauth/${flow}/authorize?redirect=/api/cart`);
    const state2 = new URLSearchParams(new URL(s2.headers.location!).search).get('state')!;
    await other.go(`/oauth/${flow}/callback?code=${oauthCode}&state=${state2}`);
  }

  // ---- scan-to-login: ticket, the phone confirms with its Bearer token, the PC page gets its session
  const ticket = await request(gw.url, { method: 'POST', path: '/scan/tickets', headers: { accept: 'application/json' } });
  t.is(ticket.status, 201, ticket.text);
  known.push(ticket.json.secret);
  const confirm = await request(gw.url, { method: 'POST', path: `/scan/tickets/${ticket.json.ticket}/confirm`, headers: { accept: 'application/json', ...bearer(alice) } });
  t.is(confirm.status, 200, confirm.text);
  const pc = new Browser(gw.url);
  const polled = await pc.go(`/scan/tickets/${ticket.json.ticket}`, { headers: { 'x-scan-secret': ticket.json.secret } });
  t.is(polled.status, 200, polled.text);
  for (const v of pc.jar.values()) known.push(v);
  if (typeof polled.json?.token === 'string') known.push(polled.json.token);
  await pc.go(`/scan/tickets/${ticket.json.ticket}`, { headers: { 'x-scan-secret': `${ticket.json.secret}x` } });

  // ---- proxied: a WebSocket, an upstream that is down, logout, then the dead token
  const ws = await wsConnect(gw.url, '/ws/room', bearer(union));
  t.is(ws.status, 101);
  if ('ws' in ws) ws.ws.terminate();
  t.is((await request(gw.url, { path: '/api/down/x', headers: bearer(union) })).status, 502);
  t.is((await request(gw.url, { method: 'POST', path: '/logout', headers: bearer(union) })).status, 204);
  t.is((await request(gw.url, { path: '/api/orders', headers: bearer(union) })).status, 401);

  // the access_tokens the simulator issued to the gateway (for the phone number and the scan QR code)
  const stats = await fetch(`${sim.url}/dev/token-stats`).then((r) => r.json() as Promise<Record<string, unknown>>);
  t.true(Number(stats.stable_token ?? 0) + Number(stats.token ?? 0) >= 1, 'the gateway fetched an access_token');

  await gw.close().catch(() => {}); // the helper's own check is this test's below, with the values
  const lines = gw.logs;
  t.true(lines.length > 50, `the scenario logged (${lines.length} lines)`);
  t.true(
    lines.some((l) => l.includes('"level":20')),
    'debug lines were written (the gateway writes none at trace)',
  );
  t.true(codes.length > 10);
  t.deepEqual(leaks(lines, known), []);
});

test('the search finds what it looks for (a planted token, code, session_key, secret, phone number, access_token)', (t) => {
  const token = 'AbCdEfGhIjKlMnOp' + 'q1R2s3T4u5V6w7X8y9Z0-_abcdefghijklmnopqrstu';
  t.is(token.length, 59);
  const planted = [
    `{"level":30,"msg":"login","token":"${token}"}`,
    `{"msg":"x","detail":"Bearer ${token}"}`,
    '{"msg":"exchange","session_key":"tiihtNczf5v6AKRyjwEUhQ=="}',
    '{"msg":"granted","phone":"+8613800138000"}',
    '{"msg":"granted","n":"13912345678"}',
    '{"msg":"token","t":"simtok_abcdefghijklmnopqrstuvwxyz012345"}',
  ];
  t.is(leaks(planted).length, planted.length);
  t.is(leaks(['{"msg":"login ok","c":"leaky-alice.1"}'], ['leaky-alice.1']).length, 1);
  // and does not cry wolf over what the gateway logs on purpose
  const clean = [
    '{"level":30,"time":1764680000123,"pid":4242,"msg":"request","req_id":"3f2b8c9e-1d4a-4f6b-9c2e-7a8b9c0d1e2f","path":"/api/orders","ms":0.4}',
    '{"level":30,"msg":"request","user":"k3J9xQ2mZp8aB1cD","appid":"wx0123456789abcdef","status":200}',
  ];
  t.deepEqual(leaks(clean), []);
});
