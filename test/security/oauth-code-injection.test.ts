import test from 'ava';
import { APPID, SECRET, type TestGateway } from '../helpers/gateway.js';
import { Browser, setCookies } from '../helpers/browser.js';
import { request } from '../helpers/http.js';
import { useStack } from '../helpers/stack.js';

/**
 * OAuth code injection (issue 19, item 1): a victim's authorization code, leaked after the victim's own
 * login spent it (a Referer, a log, a shared link), put into the attacker's own login. The gateway
 * remembers a code's answer so that the victim's repeated callback is idempotent; that remembered
 * session must go to the victim's login only, never to another state, on any replica. Two gateways on
 * one real Redis, the simulator as WeChat.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';
const PUBLIC = 'https://m.example.com';
const SESSION = '__Host-wxgate_session';
const STATE = '__Host-wxgate_session_state';

const stack = useStack(test, { redis: true, apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
let a: TestGateway;
let b: TestGateway;

test.before(async () => {
  await stack.start();
  const config = {
    wechat: { apiBase: stack.sim.url, oauthBase: stack.sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
    session: { store: 'redis', redis: { url: stack.redis.url, keyPrefix: 'inj:' } },
    routes: [{ path: '/shop', upstream: stack.up.url }],
    web: {
      publicUrl: PUBLIC,
      redirects: ['/shop'],
      mp: { appid: MP, secret: MP_SECRET, scope: 'snsapi_base' },
      open: { appid: OPEN, secret: OPEN_SECRET },
    },
  };
  // two replicas sharing the store (and the state key kept in it)
  a = await stack.gateway(config);
  b = await stack.gateway(config);
});

type Flow = 'mp' | 'open';

/** authorize in `browser` → WeChat approves as `user` → the callback URL WeChat sends the browser to. */
async function toCallback(browser: Browser, flow: Flow, user: string) {
  const start = await browser.go(`/oauth/${flow}/authorize?redirect=/shop`);
  if (start.status !== 302) throw new Error(`authorize: ${start.status} ${start.text}`);
  const q = new URLSearchParams(new URL(start.headers.location!).search);
  q.set('user', user);
  const approved = await request(stack.sim.url, { path: `/connect/approve?${q}` });
  if (approved.status !== 302) throw new Error(`approve: ${approved.status} ${approved.text}`);
  const back = new URL(approved.headers.location!);
  return { callback: back.pathname + back.search, code: back.searchParams.get('code')!, state: back.searchParams.get('state')! };
}

/** An authorize of the attacker's own: a good state and its cookie in the attacker's browser. */
async function ownState(browser: Browser, flow: Flow): Promise<string> {
  const start = await browser.go(`/oauth/${flow}/authorize?redirect=/shop`);
  return new URL(start.headers.location!).searchParams.get('state')!;
}

const sessionOf = (res: Awaited<ReturnType<Browser['go']>>) => setCookies(res).find((c) => c.name === SESSION)?.value;

for (const flow of ['mp', 'open'] as const) {
  test.serial(`${flow}: the victim's spent code in the attacker's own fresh login gets no session, on either replica; the victim's repeated callback still does`, async (t) => {
    const victim = new Browser(a.url);
    const { callback, code } = await toCallback(victim, flow, `victim-${flow}`);
    const first = await victim.go(callback);
    t.is(first.status, 302, first.text);
    const victimToken = sessionOf(first);
    t.truthy(victimToken);

    for (const gw of [a, b]) {
      const attacker = new Browser(gw.url);
      const state = await ownState(attacker, flow);
      const res = await attacker.go(`/oauth/${flow}/callback?code=${encodeURIComponent(code)}&state=${encodeURIComponent(state)}`);
      t.is(res.status, 400, res.text);
      t.is(res.json.error, 'state_used');
      t.is(sessionOf(res), undefined, 'no session cookie');
      t.false(res.text.includes(victimToken!), 'the token is nowhere in the answer');
      t.is((await attacker.go('/session')).status, 401, 'the attacker has no session');
    }

    // the victim's own callback again (a repeated redirect, the back button) on either replica: the same session
    for (const gw of [a, b]) {
      const again = await victim.go(callback, { base: gw.url });
      t.is(again.status, 302, again.text);
      t.is(again.headers.location, '/shop');
      t.is(sessionOf(again), victimToken);
    }
  });

  test.serial(`${flow}: a leaked callback URL (code and state) does not tell the attacker how to make the state cookie`, async (t) => {
    const victim = new Browser(a.url);
    const { callback, state } = await toCallback(victim, flow, `leaky-${flow}`);
    t.is((await victim.go(callback)).status, 302);
    const nonce = state.slice(0, 32);
    // every cookie the attacker can build from what the URL shows
    for (const value of [`${nonce}.${Buffer.from('/shop').toString('base64url')}`, nonce, `${state}.${Buffer.from('/shop').toString('base64url')}`]) {
      const attacker = new Browser(b.url);
      const res = await attacker.go(callback, { extraCookies: { [STATE]: value } });
      t.is(res.status, 400, `${value}: ${res.text}`);
      t.is(res.json.error, 'state_invalid');
      t.is(sessionOf(res), undefined);
    }
  });

  test.serial(`${flow}: the victim and the attacker at the same moment on two replicas: one session, for one of them only`, async (t) => {
    const victim = new Browser(a.url);
    const { callback, code } = await toCallback(victim, flow, `race-${flow}`);
    const attacker = new Browser(b.url);
    const state = await ownState(attacker, flow);
    const [v, x] = await Promise.all([
      victim.go(callback),
      attacker.go(`/oauth/${flow}/callback?code=${encodeURIComponent(code)}&state=${encodeURIComponent(state)}`),
    ]);
    const won = [v, x].filter((r) => r.status === 302 && sessionOf(r));
    t.is(won.length, 1, `${v.status} ${v.text} / ${x.status} ${x.text}`);
    const lost = v === won[0] ? x : v;
    t.is(lost.status, 400);
    t.is(lost.json.error, 'state_used');
    t.is(sessionOf(lost), undefined);
  });
}

test.serial('the mini-program login (POST /login) keeps its replay: the same code, sent again, gets the same token (no browser, no state to bind to)', async (t) => {
  const post = (gw: TestGateway) => request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 'mp-user.1' }) });
  const first = await post(a);
  const again = await post(b);
  t.is(first.status, 200);
  t.is(again.status, 200);
  t.is(again.json.token, first.json.token);
});
