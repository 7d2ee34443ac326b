import test from 'ava';
import { accountId } from '../src/session/accounts.js';
import { simulatedOpenid, simulatedUnionid, startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser } from './helpers/browser.js';
import { request } from './helpers/http.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/**
 * One person across apps (issue 16 item 2): X-User-Id, the same for every identity with the same unionid
 * (mini-program, Official Account, website), one per identity otherwise; the admin API lists a person's
 * identities and sessions and revokes them all. Two replicas (A, B) on one real redis-server, and C, a
 * replica whose Official Account logs in with snsapi_base (WeChat gives no unionid there); the simulator
 * as WeChat, a real upstream.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';
const PUBLIC = 'https://m.example.com';
const SESSION = '__Host-wxgate_session';
const ADMIN = 'admin-token-for-accounts-0123456789';

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let a: TestGateway;
let b: TestGateway;
let c: TestGateway;

function config(scope: 'snsapi_userinfo' | 'snsapi_base') {
  return testConfig({
    apiBase: sim.url,
    wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'acc:' } },
    routes: [
      { path: '/shop', upstream: up.url },
      { path: '/pub', upstream: up.url, auth: 'none' },
    ],
    web: { publicUrl: PUBLIC, redirects: ['/shop'], mp: { appid: MP, secret: MP_SECRET, scope }, open: { appid: OPEN, secret: OPEN_SECRET } },
    admin: { port: 0, token: ADMIN },
  });
}

test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
  up = await startUpstream();
  [a, b, c] = await Promise.all([startTestGateway(config('snsapi_userinfo')), startTestGateway(config('snsapi_userinfo')), startTestGateway(config('snsapi_base'))]);
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close(), c?.close()]);
  await up?.close();
  await sim?.close();
  await redis?.close();
});

let codes = 0;
/** A mini-program login: the Bearer token. */
const miniLogin = (gw: TestGateway, user: string) => login(gw.url, `${user}.${++codes}`);

/** A browser login through the Official Account ('mp') or the website ('open'): the browser with its cookie. */
async function webLogin(gw: TestGateway, flow: 'mp' | 'open', user: string): Promise<Browser> {
  const pc = new Browser(gw.url);
  const start = await pc.go(`/oauth/${flow}/authorize?redirect=/shop`);
  const q = new URL(start.headers.location!).searchParams;
  q.set('user', user);
  const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
  const done = await pc.go(back.pathname + back.search);
  if (done.status !== 302 || !pc.jar.get(SESSION)) throw new Error(`callback: ${done.status} ${done.text}`);
  return pc;
}

type Who = { token: string } | { pc: Browser };

/** What the upstream sees of a request to /shop with this login, on `gw`, with a spoofed X-User-Id. */
async function seen(gw: TestGateway, who: Who) {
  const spoof = { 'x-user-id': 'u-spoofed-by-client', 'x_user_id': 'evil', 'X-USER-ID': 'evil2' };
  const res =
    'token' in who
      ? await request(gw.url, { path: '/shop/me', headers: { authorization: `Bearer ${who.token}`, ...spoof } })
      : await who.pc.go('/shop/me', { base: gw.url, headers: spoof });
  if (res.status !== 200) throw new Error(`/shop/me: ${res.status} ${res.text}`);
  const h = up.seen.at(-1)!.headers;
  return { user: h['x-user-id'] as string | undefined, openid: h['x-openid'], appid: h['x-appid'], unionid: h['x-unionid'], spoofed: h.x_user_id };
}

const admin = (gw: TestGateway, path: string, method = 'GET') => request(gw.adminUrl!, { method, path, headers: { authorization: `Bearer ${ADMIN}` } });

test.serial('one person through the mini-program, the Official Account and the website is one X-User-Id; the client cannot send one', async (t) => {
  const mini = await miniLogin(a, 'union-zoe');
  const oa = await webLogin(b, 'mp', 'union-zoe');
  const site = await webLogin(a, 'open', 'union-zoe');
  const views = [await seen(a, { token: mini }), await seen(b, { pc: oa }), await seen(a, { pc: site }), await seen(b, { token: mini })];
  const id = views[0]!.user!;
  t.regex(id, /^u[A-Za-z0-9_-]{16}$/);
  t.is(id, accountId({ appid: APPID, openid: simulatedOpenid(APPID, 'union-zoe'), unionid: simulatedUnionid('union-zoe') }));
  for (const v of views) {
    t.is(v.user, id, `${v.appid}: the same person`);
    t.is(v.unionid, simulatedUnionid('union-zoe'));
    t.is(v.spoofed, undefined, "the client's X_User_Id is dropped");
  }
  t.deepEqual(new Set(views.map((v) => v.appid)), new Set([APPID, MP, OPEN]), 'three identities');
  t.is(new Set(views.map((v) => v.openid)).size, 3, 'three openids');

  // another person is another id; a public route gets none, whatever the client sends
  t.not((await seen(a, { token: await miniLogin(b, 'union-other') })).user, id);
  const pub = await request(a.url, { path: '/pub/x', headers: { 'x-user-id': id, authorization: `Bearer ${mini}` } });
  t.is(pub.status, 200);
  t.is(up.seen.at(-1)!.headers['x-user-id'], undefined);
});

test.serial('without a unionid, identities never merge: one id per (appid, openid), even for the same user name in two apps', async (t) => {
  const mini = await seen(a, { token: await miniLogin(a, 'bob') });
  const oa = await seen(c, { pc: await webLogin(c, 'mp', 'bob') }); // snsapi_base: no unionid
  t.is(mini.unionid, undefined);
  t.is(oa.unionid, undefined);
  t.regex(mini.user!, /^i[A-Za-z0-9_-]{16}$/);
  t.is(mini.user, accountId({ appid: APPID, openid: simulatedOpenid(APPID, 'bob') }));
  t.not(oa.user, mini.user);
  t.is((await seen(b, { token: await miniLogin(b, 'bob') })).user, mini.user, 'the same identity again, on the other replica: the same id');
});

test.serial('an identity first seen without a unionid joins the unionid\'s person once WeChat gives one, and stays there when a later login has none', async (t) => {
  const user = 'union-yan';
  const person = accountId({ appid: APPID, openid: simulatedOpenid(APPID, user), unionid: simulatedUnionid(user) });
  // the Official Account with snsapi_base first: no unionid, its own id
  const firstPc = await webLogin(c, 'mp', user);
  const first = await seen(c, { pc: firstPc });
  t.is(first.unionid, undefined);
  t.is(first.user, accountId({ appid: MP, openid: simulatedOpenid(MP, user) }));
  // the mini-program gives the unionid: the person's id
  t.is((await seen(a, { token: await miniLogin(a, user) })).user, person);
  // the Official Account with snsapi_userinfo: the unionid now, the same person
  const linked = await webLogin(b, 'mp', user);
  t.is((await seen(b, { pc: linked })).user, person);
  // snsapi_base again (no unionid from WeChat): still the person, with the unionid remembered
  const later = await seen(c, { pc: await webLogin(c, 'mp', user) });
  t.is(later.user, person);
  t.is(later.unionid, simulatedUnionid(user));
  // the unionid is kept per identity, not per session: the session made before the link is the person's
  // now too (at once where it was not cached; a replica's cached copy until session.cache.ttl)
  t.is((await seen(a, { pc: firstPc })).user, person);
  t.is((await seen(b, { pc: firstPc })).user, person);
  // and the admin API lists the identity under the person
  const got = await admin(b, `/accounts/${person}`);
  t.is(got.status, 200, got.text);
  t.deepEqual(got.json.identities.map((i: { appid: string }) => i.appid).sort(), [APPID, MP].sort());
});

test.serial('admin: a person\'s identities and sessions from either replica, and one call revokes them all everywhere', async (t) => {
  const user = 'union-kim';
  const mini = await miniLogin(a, user);
  const mini2 = await miniLogin(b, user);
  const oa = await webLogin(b, 'mp', user);
  const site = await webLogin(a, 'open', user);
  const bystander = await miniLogin(a, 'union-lee');
  const id = (await seen(a, { token: mini })).user!;

  t.is((await request(a.adminUrl!, { path: `/accounts/${id}` })).status, 401, 'the admin token is needed');
  const got = await admin(b, `/accounts/${id}`);
  t.is(got.status, 200, got.text);
  t.is(got.json.id, id);
  t.is(got.json.unionid, simulatedUnionid(user));
  const byApp = Object.fromEntries(got.json.identities.map((i: { appid: string }) => [i.appid, i]));
  t.deepEqual(Object.keys(byApp).sort(), [APPID, MP, OPEN].sort());
  t.is(byApp[APPID].openid, simulatedOpenid(APPID, user));
  t.deepEqual(byApp[APPID].sessions.map((s: { flow: string }) => s.flow), ['miniprogram', 'miniprogram']);
  t.deepEqual(byApp[MP].sessions.map((s: { flow: string }) => s.flow), ['mp']);
  t.deepEqual(byApp[OPEN].sessions.map((s: { flow: string }) => s.flow), ['open']);
  t.false(got.text.includes(mini) || got.text.includes(oa.jar.get(SESSION)!), 'no token in the answer');
  // found from any of its identities too
  const fromOa = await admin(a, `/users/${MP}/${simulatedOpenid(MP, user)}/account`);
  t.is(fromOa.status, 200, fromOa.text);
  t.is(fromOa.json.id, id);
  t.is((await admin(a, `/users/${APPID}/${simulatedOpenid(APPID, user)}/sessions`)).json.account, id);
  t.is((await admin(a, '/accounts/unope')).status, 404);
  t.is((await admin(a, `/accounts/u${'A'.repeat(16)}`)).status, 404);

  const del = await admin(a, `/accounts/${id}/sessions`, 'DELETE');
  t.is(del.status, 200, del.text);
  t.deepEqual(del.json, { revoked: 4, identities: 3 });
  for (const gw of [a, b]) {
    for (const token of [mini, mini2]) t.is((await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).status, 401);
    for (const pc of [oa, site]) t.is((await pc.go('/session', { base: gw.url })).status, 401);
  }
  t.is((await request(b.url, { path: '/session', headers: { authorization: `Bearer ${bystander}` } })).status, 200, 'another person is left alone');
  t.is((await admin(b, `/accounts/${id}`)).status, 404, 'nothing of the person is left');

  // a person without unionid: their one identity
  const solo = await miniLogin(b, 'sol');
  const soloId = (await seen(b, { token: solo })).user!;
  const one = await admin(a, `/accounts/${soloId}`);
  t.is(one.status, 200, one.text);
  t.deepEqual(one.json.identities.map((i: { openid: string; sessions: unknown[] }) => [i.openid, i.sessions.length]), [[simulatedOpenid(APPID, 'sol'), 1]]);
  t.deepEqual((await admin(b, `/accounts/${soloId}/sessions`, 'DELETE')).json, { revoked: 1, identities: 1 });
  t.is((await request(a.url, { path: '/session', headers: { authorization: `Bearer ${solo}` } })).status, 401);
});
