import test from 'ava';
import fc from 'fast-check';
import { startSimulator } from '../../src/dev/simulator.js';
import { allowedRedirect } from '../../src/web/state.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { Browser } from '../helpers/browser.js';
import { request } from '../helpers/http.js';

/**
 * Open redirects through `?redirect=` (issue 19, item 2): dot segments, encoded dots, slashes and
 * backslashes, whitespace and control characters the URL parser strips. A browser resolves the
 * Location against the page's URL (WHATWG URL), so that is what decides: every redirect the gateway
 * accepts must, so resolved, be on publicUrl's origin (under an allowed prefix) or on an allowed origin.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const PUBLIC = 'https://m.example.com';
const HOME = new URL(PUBLIC).origin;
const SHOP = 'https://shop.example.com';

/** The vectors and the rest of their class. */
const EVIL = [
  '/.//evil.example',
  '/..//evil.example',
  '/x/..//evil.example',
  '/%2e//evil.example',
  '/%2E//evil.example',
  '/%2e%2e//evil.example',
  '/.%2e//evil.example',
  '/x/%2e%2e//evil.example',
  '/././/evil.example',
  '/.///evil.example',
  '/x/../..//evil.example',
  '//evil.example',
  '///evil.example',
  '////evil.example',
  '/\\evil.example',
  '/.\\/evil.example',
  '\\/evil.example',
  '/\t/evil.example',
  '/\n/evil.example',
  '/.\t//evil.example',
  '\t//evil.example',
  ' //evil.example',
  '/\u0000/evil.example',
  'https://evil.example',
  'https:evil.example',
  'https:/evil.example',
  'http://m.example.com',
  'javascript:alert(1)',
  'data:text/html,x',
  'https://m.example.com@evil.example',
  'https://evil.example#@m.example.com',
];

test('allowedRedirect: dot segments that resolve to //host, and their whole class, are refused under rule "/"', (t) => {
  for (const rules of [['/'], ['/', SHOP], ['/x', '/shop']]) {
    for (const target of EVIL) t.is(allowedRedirect(target, rules, PUBLIC), undefined, `${JSON.stringify(target)} with ${rules}`);
  }
});

test('allowedRedirect: what stays accepted is returned resolved (dot segments gone), on its own origin', (t) => {
  const cases: Array<[string, string[], string]> = [
    ['/shop/./cart', ['/shop'], '/shop/cart'],
    ['/shop/x/../cart?a=1#b', ['/shop'], '/shop/cart?a=1#b'],
    ['/%2F/evil.example', ['/'], '/%2F/evil.example'], // an encoded slash is a path character, not a host
    ['/shop/.//x', ['/shop'], '/shop//x'],
    [`${SHOP}/.//evil.example`, [SHOP], `${SHOP}//evil.example`],
  ];
  for (const [target, rules, out] of cases) {
    t.is(allowedRedirect(target, rules, PUBLIC), out, target);
    t.is(new URL(out, PUBLIC).origin, rules[0]!.startsWith('/') ? HOME : SHOP);
  }
});

/** Pieces that meet in tricky ways: dots, slashes, escapes, hosts, schemes, whitespace. */
const piece = fc.constantFrom(
  '/', '//', '\\', '.', '..', '%2e', '%2E', '%2e%2e', '%2f', '%2F', '%5c', '%09', '%00', '\t', '\n', '\r', ' ', '@', ':', '?', '#', '&', '=',
  'x', 'shop', 'evil.example', 'm.example.com', 'shop.example.com', 'https:', 'http:', 'javascript:', 'https://', '\u3002', '\uff0e', '\u2215', 'user:pw@',
);
const target = fc
  .tuple(fc.constantFrom('', '/', '/shop/', '/x/', `${SHOP}/`, `${PUBLIC}/`), fc.array(piece, { minLength: 1, maxLength: 10 }))
  .map(([start, rest]) => start + rest.join(''));

test('property: every accepted redirect, resolved by WHATWG URL against publicUrl, is on the gateway origin under a prefix, or on an allowed origin', (t) => {
  const seed = Number(process.env.FUZZ_SEED ?? 19_2);
  const ruleSets = [['/'], ['/shop'], ['/shop', SHOP], [SHOP]];
  let accepted = 0;
  fc.assert(
    fc.property(target, fc.constantFrom(...ruleSets), (raw, rules) => {
      const out = allowedRedirect(raw, rules, PUBLIC);
      if (out === undefined) return true;
      accepted++;
      const seen = new URL(out, PUBLIC);
      if (seen.username || seen.password) return false;
      if (seen.origin === HOME) {
        if (!out.startsWith('/') || out.startsWith('//') || out.startsWith('/\\')) return false;
        return rules.some((r) => r === '/' || (r.startsWith('/') && (seen.pathname === r || seen.pathname.startsWith(`${r}/`))));
      }
      return rules.includes(seen.origin);
    }),
    { numRuns: 5000, seed },
  );
  t.true(accepted > 50, `the generator reaches accepted targets too (${accepted})`);
});

let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET } });
  // the default web.redirects: ['/'], the configuration the vectors were found on
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
      web: { publicUrl: PUBLIC, mp: { appid: MP, secret: MP_SECRET } },
    }),
  );
});
test.after.always(async () => {
  await gw?.close();
  await sim?.close();
});

test.serial('the real endpoint: each vector is 400 redirect_not_allowed, no state issued, no Location', async (t) => {
  for (const target of EVIL) {
    const res = await request(gw.url, { path: `/oauth/mp/authorize?redirect=${encodeURIComponent(target)}`, headers: { accept: 'application/json' } });
    t.is(res.status, 400, JSON.stringify(target));
    t.is(res.json.error, 'redirect_not_allowed');
    t.is(res.headers.location, undefined);
    t.is(res.headers['set-cookie'], undefined);
  }
});

test.serial('the real endpoint, end to end: the Location after the login is the resolved target, on the gateway origin', async (t) => {
  for (const [target, expected] of [
    ['/shop/x/../cart', '/shop/cart'],
    ['/a/.//b', '/a//b'],
    ['/%2F/evil.example', '/%2F/evil.example'],
  ]) {
    const b = new Browser(gw.url);
    const start = await b.go(`/oauth/mp/authorize?redirect=${encodeURIComponent(target!)}`);
    t.is(start.status, 302, start.text);
    const q = new URLSearchParams(new URL(start.headers.location!).search);
    q.set('user', 'redirected');
    const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
    const done = await b.go(back.pathname + back.search);
    t.is(done.status, 302, done.text);
    t.is(done.headers.location, expected);
    t.is(new URL(done.headers.location!, PUBLIC).origin, HOME);
  }
});

test.serial('the callback checks the redirect again by the same rule: one approved before web.redirects changed goes to "/"', async (t) => {
  const STATE_SECRET = 'state-secret-0123456789-0123456789-abcdef';
  const make = (redirects: string[]) =>
    startTestGateway(
      testConfig({
        apiBase: sim.url,
        wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
        web: { publicUrl: PUBLIC, stateSecret: STATE_SECRET, redirects, mp: { appid: MP, secret: MP_SECRET } },
      }),
    );
  const before = await make(['/shop', 'https://shop.example.com']);
  const after = await make(['/shop']);
  try {
    const b = new Browser(before.url);
    const start = await b.go(`/oauth/mp/authorize?redirect=${encodeURIComponent('https://shop.example.com/welcome')}`);
    t.is(start.status, 302);
    const q = new URLSearchParams(new URL(start.headers.location!).search);
    q.set('user', 'rules-changed');
    const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
    const done = await b.go(back.pathname + back.search, { base: after.url });
    t.is(done.status, 302, done.text);
    t.is(done.headers.location, '/');
  } finally {
    await before.close();
    await after.close();
  }
});
