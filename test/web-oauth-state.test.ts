import test from 'ava';
import fc from 'fast-check';
import { startSimulator } from '../src/dev/simulator.js';
import { OAuthStates } from '../src/web/state.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser } from './helpers/browser.js';
import { request } from './helpers/http.js';

/**
 * The OAuth `state` (issue 18, item 2): WeChat documents it as `[A-Za-z0-9]`, at most 128 bytes. Every
 * state the gateway issues fits; and every property it had holds as before: bound to the browser's
 * state cookie, to its flow, its expiry and its approved redirect, and any change is refused.
 */
const WECHAT_STATE = /^[A-Za-z0-9]{1,128}$/;
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';
const PUBLIC = 'https://m.example.com';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
      web: { publicUrl: PUBLIC, redirects: ['/', 'https://shop.example.com'], mp: { appid: MP, secret: MP_SECRET }, open: { appid: OPEN, secret: OPEN_SECRET } },
    }),
  );
});
test.after.always(async () => {
  await gw?.close();
  await sim?.close();
});

test('every state the real endpoint issues is [A-Za-z0-9], at most 128 bytes, and travels unescaped', async (t) => {
  const redirects = ['/', '/a/b?c=d&e=%20f#g', 'https://shop.example.com/x?y=1', `/${'long'.repeat(400)}`, '/中文'];
  for (const flow of ['mp', 'open']) {
    for (let i = 0; i < 40; i++) {
      const redirect = redirects[i % redirects.length]!;
      const res = await request(gw.url, { path: `/oauth/${flow}/authorize?redirect=${encodeURIComponent(redirect)}` });
      t.is(res.status, 302, res.text);
      const raw = /[?&]state=([^&#]*)/.exec(res.headers.location!)![1]!;
      t.regex(raw, WECHAT_STATE, `${flow} ${redirect}`);
      t.true(Buffer.byteLength(raw) <= 128);
    }
  }
});

test('OAuthStates: any issued state matches, for any redirect and time; one character changed anywhere, or the case of one, is refused', async (t) => {
  const states = new OAuthStates(async () => Buffer.alloc(32, 3), 300_000);
  await fc.assert(
    fc.asyncProperty(fc.string({ unit: 'grapheme', maxLength: 300 }), fc.integer({ min: 0, max: 4_000_000_000_000 }), async (redirect, now) => {
      const { state, cookie } = await states.issue('open', redirect, now);
      if (!WECHAT_STATE.test(state)) return false;
      const ok = await states.verify('open', state, cookie, now);
      return ok?.redirect === redirect;
    }),
    { numRuns: 300, seed: 182 },
  );
  const now = Date.now();
  const { state, cookie } = await states.issue('mp', '/shop', now);
  for (let i = 0; i < state.length; i++) {
    for (const c of new Set(['0', '9', 'a', 'f', state[i]!.toUpperCase(), 'z'])) {
      if (c === state[i]) continue;
      const changed = state.slice(0, i) + c + state.slice(i + 1);
      t.is(await states.verify('mp', changed, cookie, now), undefined, `position ${i} -> ${c}`);
    }
  }
  t.is(await states.verify('mp', state + '0', cookie, now), undefined, 'longer');
  t.is(await states.verify('mp', state.slice(0, -1), cookie, now), undefined, 'shorter');
  t.is(await states.verify('mp', state, cookie, now + 301_000), undefined, 'expired');
  t.is(await states.verify('open', state, cookie, now), undefined, 'another flow');
  t.is(await states.verify('mp', state, `${cookie.split('.')[0]}.${Buffer.from('/admin').toString('base64url')}`, now), undefined, 'another redirect in the cookie');
  const other = await states.issue('mp', '/shop', now);
  t.is(await states.verify('mp', state, other.cookie, now), undefined, "another browser's cookie");
  // a later expiry written into the state is not the one the mac is over
  const later = state.slice(0, 32) + (parseInt(state.slice(32, 40), 16) + 3600).toString(16).padStart(8, '0') + state.slice(40);
  t.is(await states.verify('mp', later, cookie, now + 301_000), undefined, 'expiry moved');
});

test('end to end: a state changed at its nonce, expiry or mac is 400 state_invalid at the callback', async (t) => {
  const b = new Browser(gw.url);
  const start = await b.go('/oauth/mp/authorize?redirect=/');
  const q = new URLSearchParams(new URL(start.headers.location!).search);
  const state = q.get('state')!;
  q.set('user', 'tamper');
  const code = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!).searchParams.get('code')!;
  for (const i of [0, 31, 32, 39, 40, 71]) {
    const changed = state.slice(0, i) + (state[i] === '1' ? '2' : '1') + state.slice(i + 1);
    const res = await b.go(`/oauth/mp/callback?code=${code}&state=${changed}`);
    t.is(res.status, 400, `position ${i}`);
    t.is(res.json.error, 'state_invalid');
  }
  const good = await b.go(`/oauth/mp/callback?code=${code}&state=${state}`);
  t.is(good.status, 302, good.text);
});
