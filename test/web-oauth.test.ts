import http from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import { startSimulator, simulatedOpenid, simulatedUnionid } from '../src/dev/simulator.js';
import { WebCookies } from '../src/request/cookies.js';
import { OAuthStates, allowedRedirect } from '../src/web/state.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser, setCookies } from './helpers/browser.js';
import { request } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/**
 * Browser logins with WeChat OAuth, end to end: the gateway on real Redis, the simulator as WeChat (its
 * approval page called as a browser would submit it), a real upstream. publicUrl is https, so the
 * cookies are `__Host-` and Secure; requests reach the gateway over loopback HTTP all the same.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';
const PUBLIC = 'https://m.example.com';
const SESSION = '__Host-wxgate_session';
const STATE = '__Host-wxgate_session_state';

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let gw: TestGateway;
let prefixes = 0;

function config(web: Record<string, unknown> = {}) {
  return testConfig({
    apiBase: sim.url,
    wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: `w${++prefixes}:` } },
    routes: [
      { path: '/shop', upstream: up.url },
      { path: '/mp-only', upstream: up.url, apps: [MP] },
    ],
    web: {
      publicUrl: PUBLIC,
      redirects: ['/shop', 'https://shop.example.com'],
      mp: { appid: MP, secret: MP_SECRET, scope: 'snsapi_userinfo' },
      open: { appid: OPEN, secret: OPEN_SECRET },
      ...web,
    },
  });
}

test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
  up = await startUpstream();
  gw = await startTestGateway(config());
});
test.after.always(async () => {
  await gw?.close();
  await up?.close();
  await sim?.close();
  await redis?.close();
});

/** authorize → WeChat's page (approved as `user`) → the callback's URL, as the browser would be sent there. */
async function toCallback(b: Browser, flow: 'mp' | 'open', redirect: string, user: string, opts: { deny?: boolean } = {}) {
  const start = await b.go(`/oauth/${flow}/authorize?redirect=${encodeURIComponent(redirect)}`);
  if (start.status !== 302) throw new Error(`authorize: ${start.status} ${start.text}`);
  const wechat = new URL(start.headers.location!);
  const q = new URLSearchParams(wechat.search);
  q.set('user', user);
  if (opts.deny) q.set('deny', '1');
  const approved = await request(sim.url, { path: `/connect/approve?${q}` });
  if (approved.status !== 302) throw new Error(`approve: ${approved.status} ${approved.text}`);
  const back = new URL(approved.headers.location!);
  return { start, wechat, callback: back.pathname + back.search, code: back.searchParams.get('code'), state: back.searchParams.get('state')! };
}

async function webLogin(b: Browser, flow: 'mp' | 'open', user: string, redirect = '/shop/cart') {
  const { callback } = await toCallback(b, flow, redirect, user);
  const done = await b.go(callback);
  if (done.status !== 302) throw new Error(`callback: ${done.status} ${done.text}`);
  return done;
}

test.serial('Official Account: authorize sends the browser to WeChat with the exact parameters and a browser-bound state', async (t) => {
  const b = new Browser(gw.url);
  const { start, wechat, state } = await toCallback(b, 'mp', '/shop/cart?x=1', 'ann');
  t.is(`${wechat.origin}${wechat.pathname}`, `${sim.url}/connect/oauth2/authorize`);
  t.is(wechat.hash, '#wechat_redirect');
  t.deepEqual([...wechat.searchParams.keys()], ['appid', 'redirect_uri', 'response_type', 'scope', 'state'], 'in the order WeChat asks for');
  t.is(wechat.searchParams.get('appid'), MP);
  t.is(wechat.searchParams.get('redirect_uri'), `${PUBLIC}/oauth/mp/callback`, 'from web.publicUrl, never from Host');
  t.is(wechat.searchParams.get('response_type'), 'code');
  t.is(wechat.searchParams.get('scope'), 'snsapi_userinfo');
  t.true(state.length <= 128, 'WeChat takes states of up to 128 bytes');
  const cookie = setCookies(start).find((c) => c.name === STATE)!;
  t.truthy(cookie, 'the state cookie');
  t.deepEqual(
    [cookie.attrs.httponly, cookie.attrs.secure, cookie.attrs.samesite?.toLowerCase(), cookie.attrs.path, cookie.attrs.domain],
    ['', '', 'lax', '/', undefined],
  );
  t.is(cookie.attrs['max-age'], '300', 'as long as web.loginTimeout');
  t.is(start.headers['cache-control'], 'no-store');
  // Host and X-Forwarded-Host play no part
  const spoofed = await request(gw.url, { path: '/oauth/mp/authorize?redirect=/shop', headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example' } });
  t.is(new URL(spoofed.headers.location!).searchParams.get('redirect_uri'), `${PUBLIC}/oauth/mp/callback`);
});

test.serial('Official Account: the callback makes a cookie session; the upstream sees the same identity headers as for the mini-program', async (t) => {
  const b = new Browser(gw.url);
  const done = await webLogin(b, 'mp', 'union-ann', '/shop/cart?x=1');
  t.is(done.headers.location, '/shop/cart?x=1');
  const session = setCookies(done).find((c) => c.name === SESSION)!;
  t.truthy(session, 'the session cookie');
  t.deepEqual([session.attrs.httponly, session.attrs.secure, session.attrs.samesite?.toLowerCase(), session.attrs.path, session.attrs.domain], ['', '', 'lax', '/', undefined]);
  t.is(Number(session.attrs['max-age']), 30 * 86400, 'as long as session.maxAge; the server ends it earlier when idle');

  const res = await b.go('/shop/cart', { extraCookies: { theme: 'dark' } });
  t.is(res.status, 200, res.text);
  const seen = up.seen.at(-1)!;
  t.is(seen.headers['x-appid'], MP);
  t.is(seen.headers['x-openid'], simulatedOpenid(MP, 'union-ann'));
  t.is(seen.headers['x-unionid'], simulatedUnionid('union-ann'), 'unionid (scope snsapi_userinfo)');
  t.is(seen.headers.cookie, 'theme=dark', "the gateway's cookies stay with the gateway; the others pass");

  // the same person in the mini-program has the same unionid
  const token = await login(gw.url, 'union-ann.1');
  const me = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } });
  t.is(me.json.unionid, seen.headers['x-unionid']);
  t.not(me.json.openid, seen.headers['x-openid'], 'openids differ per app');

  // GET /session works with the cookie too
  const web = await b.go('/session');
  t.is(web.json.appid, MP);
});

test.serial('the callback is idempotent per code: a repeated redirect or the back button gets the same session, one exchange at WeChat', async (t) => {
  const before = metricValue(await scrape(gw.url), 'wxgate_wechat_requests_total', { api: 'oauth2_access_token', outcome: 'ok' });
  const b = new Browser(gw.url);
  const { callback } = await toCallback(b, 'mp', '/shop', 'bob');
  const first = await b.go(callback);
  const again = await b.go(callback);
  t.is(first.status, 302);
  t.is(again.status, 302, again.text);
  t.is(again.headers.location, '/shop');
  const tokenOf = (r: typeof first) => setCookies(r).find((c) => c.name === SESSION)?.value;
  t.is(tokenOf(again), tokenOf(first));
  const after = metricValue(await scrape(gw.url), 'wxgate_wechat_requests_total', { api: 'oauth2_access_token', outcome: 'ok' });
  t.is(after - before, 1, 'WeChat was asked once');
  // the code in another browser (no state cookie) is refused: the code alone is no credential
  const thief = new Browser(gw.url);
  const stolen = await thief.go(callback);
  t.is(stolen.status, 400);
  t.is(stolen.json.error, 'state_invalid');
});

test.serial('state tampering, another browser, a second code for one state, and a denied login are refused', async (t) => {
  const b = new Browser(gw.url);
  const { callback, state, code } = await toCallback(b, 'mp', '/shop', 'cat');
  const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'a' ? 'b' : 'a') + s.slice(i + 1);
  for (const i of [0, 35, state.length - 1]) {
    const res = await b.go(`/oauth/mp/callback?code=${code}&state=${encodeURIComponent(flip(state, i))}`);
    t.is(res.status, 400, `state changed at ${i}`);
    t.is(res.json.error, 'state_invalid');
  }
  const other = new Browser(gw.url);
  await other.go('/oauth/mp/authorize?redirect=/shop'); // a state cookie of its own
  t.is((await other.go(callback)).json.error, 'state_invalid', "another browser's state cookie does not fit");
  t.is((await b.go(callback.replace('/oauth/mp/', '/oauth/open/'))).json.error, 'state_invalid', 'a state of one flow is not good for the other');

  // two codes for one state: the first wins, the second is a reuse
  const q = new URLSearchParams({ appid: MP, redirect_uri: `${PUBLIC}/oauth/mp/callback`, response_type: 'code', scope: 'snsapi_base', state, user: 'cat' });
  const second = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
  t.is((await b.go(callback)).status, 302);
  const reuse = await b.go(`/oauth/mp/callback?code=${second.searchParams.get('code')}&state=${encodeURIComponent(state)}`);
  t.is(reuse.status, 400);
  t.is(reuse.json.error, 'state_used');

  const denied = await toCallback(new Browser(gw.url), 'mp', '/shop', 'dan', { deny: true });
  t.is(denied.code, null, 'WeChat comes back with the state only');
  const d = new Browser(gw.url);
  const dd = await toCallback(d, 'mp', '/shop', 'dan', { deny: true });
  const res = await d.go(dd.callback);
  t.is(res.status, 403);
  t.is(res.json.error, 'login_denied');
  // a browser navigating gets a page, not JSON
  const page = await d.go(dd.callback, { headers: { accept: 'text/html,application/xhtml+xml' } });
  t.is(page.status, 403);
  t.regex(String(page.headers['content-type']), /text\/html/);
  t.regex(page.text, /did not allow/);
});

test('OAuthStates: a state expires with web.loginTimeout and is bound to its flow, nonce and redirect', async (t) => {
  const key = Buffer.alloc(32, 7);
  const states = new OAuthStates(async () => key, 60_000);
  const now = Date.now();
  const { state, cookie } = await states.issue('mp', '/shop', now);
  t.deepEqual(await states.verify('mp', state, cookie, now + 1000), { nonce: state.slice(0, 32), redirect: '/shop' });
  t.is(await states.verify('mp', state, cookie, now + 61_000), undefined, 'expired');
  t.is(await states.verify('open', state, cookie, now), undefined, 'another flow');
  const [nonce] = cookie.split('.');
  t.is(await states.verify('mp', state, `${nonce}.${Buffer.from('https://evil.example').toString('base64url')}`, now), undefined, 'a redirect swapped in the cookie');
  t.is(await states.verify('mp', state, undefined, now), undefined, 'no cookie');
  const other = new OAuthStates(async () => Buffer.alloc(32, 8), 60_000);
  t.is(await other.verify('mp', state, cookie, now), undefined, 'another key');
});

test('allowedRedirect: only allowed local path prefixes and origins; nothing a browser reads as another host', (t) => {
  const rules = ['/shop', 'https://shop.example.com'];
  const ok: Array<[string, string]> = [
    ['/shop', '/shop'],
    ['/shop/cart?x=1#top', '/shop/cart?x=1#top'],
    ['https://shop.example.com/a?b=1', 'https://shop.example.com/a?b=1'],
  ];
  for (const [target, out] of ok) t.is(allowedRedirect(target, rules, PUBLIC), out, target);
  for (const target of [
    '//evil.example/shop',
    '/\\evil.example',
    '\\\\evil.example',
    'https://evil.example/shop',
    'https://shop.example.com.evil.example/',
    'http://shop.example.com/',
    'https:shop',
    'javascript:alert(1)',
    '/shopping',
    '/shop/../admin',
    '/shop/%2e%2e/admin',
    '/admin',
    `/shop\r\nSet-Cookie: x=1`,
    'https://user:pw@shop.example.com/',
    '',
  ]) {
    t.is(allowedRedirect(target, rules, PUBLIC), undefined, JSON.stringify(target));
  }
  t.is(allowedRedirect('/anything', ['/'], PUBLIC), '/anything');
});

test.serial('open redirects are refused before anything else happens', async (t) => {
  for (const target of ['//evil.example', 'https://evil.example/', '/admin', '/shop/../admin']) {
    const res = await request(gw.url, { path: `/oauth/mp/authorize?redirect=${encodeURIComponent(target)}`, headers: { accept: 'application/json' } });
    t.is(res.status, 400, target);
    t.is(res.json.error, 'redirect_not_allowed');
    t.is(res.headers['set-cookie'], undefined, 'no state was issued');
  }
});

test.serial('website QR login (Open Platform): qrconnect with snsapi_login; the unionid ties the web user to the mini-program user', async (t) => {
  const b = new Browser(gw.url);
  const { wechat, callback } = await toCallback(b, 'open', 'https://shop.example.com/welcome', 'union-eve');
  t.is(`${wechat.origin}${wechat.pathname}`, `${sim.url}/connect/qrconnect`);
  t.is(wechat.searchParams.get('scope'), 'snsapi_login');
  t.is(wechat.searchParams.get('appid'), OPEN);
  const done = await b.go(callback);
  t.is(done.status, 302, done.text);
  t.is(done.headers.location, 'https://shop.example.com/welcome');
  const res = await b.go('/shop/x');
  t.is(res.status, 200);
  const seen = up.seen.at(-1)!;
  t.is(seen.headers['x-appid'], OPEN);
  t.is(seen.headers['x-openid'], simulatedOpenid(OPEN, 'union-eve'));
  t.is(seen.headers['x-unionid'], simulatedUnionid('union-eve'));
  // routes[].apps may name web apps: this one takes the Official Account only
  const restricted = await b.go('/mp-only/x');
  t.is(restricted.status, 403);
  t.is(restricted.json.error, 'app_not_allowed');
});

test.serial('CSRF (origin): a cookie session changes nothing without an allowed Origin; GET and Bearer need none', async (t) => {
  const b = new Browser(gw.url);
  await webLogin(b, 'mp', 'fay');
  const post = (headers: Record<string, string>) => b.go('/shop/order', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });
  const before = up.seen.length;
  for (const [what, headers] of [
    ['no Origin', {}],
    ['another origin', { origin: 'https://evil.example' }],
    ['a look-alike origin', { origin: 'https://m.example.com.evil.example' }],
    ['Origin null', { origin: 'null' }],
    ['a Referer elsewhere', { referer: 'https://evil.example/m.example.com' }],
  ] as Array<[string, Record<string, string>]>) {
    const res = await post(headers);
    t.is(res.status, 403, what);
    t.is(res.json.error, 'csrf_failed', what);
  }
  t.is(up.seen.length, before, 'none of them reached the upstream');
  t.is((await post({ origin: PUBLIC })).status, 200);
  t.is((await post({ referer: `${PUBLIC}/shop/page` })).status, 200, 'without Origin, the Referer');
  t.is((await b.go('/shop/list')).status, 200, 'GET needs no Origin');
  const token = await login(gw.url, 'fay.1');
  const bearer = await request(gw.url, { method: 'POST', path: '/shop/order', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
  t.is(bearer.status, 200, 'a Bearer request is no CSRF');
  // own endpoints too: logout needs the Origin with a cookie
  t.is((await b.go('/logout', { method: 'POST' })).json?.error, 'csrf_failed');
  const out = await b.go('/logout', { method: 'POST', headers: { origin: PUBLIC } });
  t.is(out.status, 204);
  t.is(setCookies(out).find((c) => c.name === SESSION)?.attrs['max-age'], '0', 'the cookie is deleted');
  t.is((await b.go('/shop/list')).status, 401, 'and the session is over');
});

test.serial('CSRF (double-submit): the X-CSRF-Token must be the session cookie companion; an Origin alone is not enough', async (t) => {
  const ds = await startTestGateway(config({ cookie: { csrf: 'double-submit' } }));
  try {
    const b = new Browser(ds.url);
    const done = await webLogin(b, 'mp', 'gus');
    const csrf = setCookies(done).find((c) => c.name === '__Host-wxgate_session_csrf')!;
    t.truthy(csrf);
    t.is(csrf.attrs.httponly, undefined, 'page scripts read it');
    const post = (headers: Record<string, string>) => b.go('/shop/order', { method: 'POST', headers, body: '' });
    t.is((await post({ origin: PUBLIC })).json.error, 'csrf_failed');
    t.is((await post({ 'x-csrf-token': csrf.value.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) })).json.error, 'csrf_failed');
    t.is((await post({ 'x-csrf-token': csrf.value })).status, 200);
    // another user's CSRF token does not fit this session
    const other = new Browser(ds.url);
    const otherCsrf = setCookies(await webLogin(other, 'mp', 'hal')).find((c) => c.name === '__Host-wxgate_session_csrf')!.value;
    t.is((await post({ 'x-csrf-token': otherCsrf })).json.error, 'csrf_failed');
  } finally {
    await ds.close();
  }
});

test.serial("an upstream cannot set or delete the gateway's cookies; its own cookies pass", async (t) => {
  const setter = http.createServer((_req, res) => {
    res.writeHead(200, [
      ['Set-Cookie', `${SESSION}=planted; Path=/`],
      ['Set-Cookie', `${STATE}=; Max-Age=0`],
      ['Set-Cookie', 'cart=3; Path=/'],
      ['Content-Length', '2'],
    ].flat());
    res.end('ok');
  });
  await new Promise<void>((r) => setter.listen(0, '127.0.0.1', r));
  const target = `http://127.0.0.1:${(setter.address() as AddressInfo).port}`;
  const g = await startTestGateway({ ...config(), routes: [{ path: '/set', upstream: target, auth: 'none' }] });
  try {
    const res = await request(g.url, { path: '/set/x' });
    t.is(res.status, 200);
    t.deepEqual(setCookies(res).map((c) => c.name), ['cart']);
  } finally {
    await g.close();
    await new Promise((r) => setter.close(r));
  }
});

test('cookies: __Host- and Secure on an https publicUrl; bare names without Secure on http (development)', (t) => {
  const https = new WebCookies('https://m.example.com', 'wxgate_session');
  t.is(https.session, '__Host-wxgate_session');
  t.regex(https.set(https.session, 'v', 60), /^__Host-wxgate_session=v; Max-Age=60; Path=\/; HttpOnly; Secure; SameSite=Lax$/);
  const plain = new WebCookies('http://localhost:8080', 'sid');
  t.is(plain.session, 'sid');
  t.notRegex(plain.set(plain.session, 'v', 60), /Secure/);
});

test.serial('a Moments snapshot user gets no session', async (t) => {
  const b = new Browser(gw.url);
  const { callback } = await toCallback(b, 'mp', '/shop', 'snapshot-joe');
  const res = await b.go(callback);
  t.is(res.status, 403);
  t.is(res.json.error, 'login_denied');
  t.false([...b.jar.keys()].includes(SESSION));
});

test.serial('a Moments snapshot page in a browser: an HTML page telling the user to open the full page, with a link that starts the login again', async (t) => {
  const b = new Browser(gw.url);
  const { callback } = await toCallback(b, 'mp', '/shop', 'snapshot-amy');
  const res = await b.go(callback, { headers: { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' } });
  t.is(res.status, 403);
  t.regex(String(res.headers['content-type']), /^text\/html/);
  t.regex(res.text, /朋友圈的快照页/);
  t.regex(res.text, /使用完整服务/);
  t.regex(res.text, /Open the full page/);
  t.false([...b.jar.keys()].includes(SESSION));
  const href = /id="retry" href="([^"]+)"/.exec(res.text)?.[1]?.replace(/&#38;/g, '&');
  t.truthy(href, 'a link to log in again');
  const again = await b.go(new URL(href!).pathname + new URL(href!).search);
  t.is(again.status, 302, 'the link starts a new login (redirect allowed)');
  t.regex(String(again.headers.location), /connect\/oauth2\/authorize\?.*redirect_uri=/);
});

test('config: web apps are not mini-programs, paths under /oauth and /scan are taken, scan.app must be a mini-program', (t) => {
  const cfg = (web: object, routes: object[] = []) => () =>
    startTestGateway(testConfig({ apiBase: 'http://127.0.0.1:1', routes, web: { publicUrl: PUBLIC, ...web } }));
  return Promise.all([
    t.throwsAsync(cfg({ mp: { appid: APPID, secret: 'x' } }), { message: /web\.mp\.appid.*a mini-program of wechat\.apps/s }),
    t.throwsAsync(cfg({ mp: { appid: MP, secret: 'x' } }, [{ path: '/oauth/x', upstream: 'http://127.0.0.1:2' }]), { message: /routes\[0\]\.path.*\/oauth\//s }),
    t.throwsAsync(cfg({ scan: { app: MP } }), { message: /web\.scan\.app.*not one of wechat\.apps/s }),
    t.throwsAsync(cfg({}), { message: /web.*enables nothing/s }),
    t.throwsAsync(cfg({ mp: { appid: MP, secret: 'x' }, publicUrl: 'https://m.example.com/path' }), { message: /web\.publicUrl/ }),
  ]).then(() => undefined);
});
