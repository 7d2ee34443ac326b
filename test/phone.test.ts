import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { buildConfig } from '../src/config/load.js';
import { hashToken, TOKEN_HASH_LENGTH, UID_LENGTH } from '../src/session/tokens.js';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { sleep, waitFor } from './helpers/wait.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/** POST /wx/phone end to end: real sessions, the simulator as WeChat, a real redis-server for the replica cases. */
type Sim = Awaited<ReturnType<typeof startSimulator>>;

let redis: RedisServer;
let prefixes = 0;

test.before(async () => {
  redis = await startRedis();
});
test.after.always(async () => {
  await redis?.close();
});

async function sim(): Promise<Sim> {
  return startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
}
async function stats(s: Sim): Promise<{ stable_token: number; stable_token_forced: number; token: number }> {
  return (await fetch(`${s.url}/dev/token-stats`)).json() as never;
}
async function phoneStats(s: Sim): Promise<{ calls: number; numbers: number }> {
  return (await fetch(`${s.url}/dev/phone-stats`)).json() as never;
}
const revokeTokens = (s: Sim) => fetch(`${s.url}/dev/revoke-tokens?appid=${APPID}`, { method: 'POST' });

function gateway(s: Sim, opts: { prefix?: string; endpoints?: object } = {}): Promise<TestGateway> {
  return startTestGateway(
    testConfig({
      apiBase: s.url,
      session: { store: 'redis', redis: { url: redis.url, keyPrefix: opts.prefix ?? `p${++prefixes}:` } },
      ...(opts.endpoints ? { endpoints: opts.endpoints } : {}),
    }),
  );
}

function phone(gw: TestGateway, token: string | undefined, body: unknown, path = '/wx/phone') {
  return request(gw.url, {
    method: 'POST',
    path,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

function nothingSecretLogged(t: { false(v: boolean, m?: string): void }, gw: TestGateway, ...values: string[]) {
  for (const line of gw.logs) for (const v of values) t.false(line.includes(v), `${v} in log line ${line}`);
}

test('a logged-in user gets the phone number of their getPhoneNumber code', async (t) => {
  const s = await sim();
  const gw = await gateway(s);
  try {
    const token = await login(gw.url, 'alice.1');
    const res = await phone(gw, token, { code: 'phone-13800138000@alice' });
    t.is(res.status, 200, res.text);
    t.deepEqual(res.json, { phoneNumber: '13800138000', purePhoneNumber: '13800138000', countryCode: '86', source: 'wechat' });
    t.is(res.headers['cache-control'], 'no-store');
    t.deepEqual(await phoneStats(s), { calls: 1, numbers: 1 });
    // the code is single-use, as at WeChat (force: the gateway asks WeChat even though it keeps the number)
    const again = await phone(gw, token, { code: 'phone-13800138000@alice', force: true });
    t.is(again.status, 400);
    t.is(again.json.error, 'phone_code_invalid');
    // a code made for another user: WeChat checks it against the session's openid
    const bobs = await phone(gw, token, { code: 'phone-13900139000@bob', force: true });
    t.is(bobs.status, 400);
    t.is(bobs.json.error, 'phone_code_invalid');
    t.is((await stats(s)).stable_token, 1, 'one access_token for all of it');
    t.deepEqual(await phoneStats(s), { calls: 3, numbers: 1 });
    const text = await scrape(gw.url);
    t.is(metricValue(text, 'wxgate_http_requests_total', { route: 'phone', method: 'POST', status: '200' }), 1);
    t.is(metricValue(text, 'wxgate_wechat_requests_total', { api: 'getuserphonenumber', outcome: 'ok' }), 1);
    nothingSecretLogged(t, gw, token, '13800138000', 'phone-139', SECRET);
  } finally {
    await gw.close();
    await s.close();
  }
});

test('bad requests: no session 401, no code 400, wrong method 405, not JSON 400', async (t) => {
  const s = await sim();
  const gw = await gateway(s, { endpoints: { phone: '/api/phone-number' } });
  try {
    const token = await login(gw.url, 'carol.1');
    const anon = await phone(gw, undefined, { code: 'phone-13800138000' }, '/api/phone-number');
    t.is(anon.status, 401);
    t.is(anon.json.error, 'unauthorized');
    t.is(anon.headers['www-authenticate'], 'Bearer realm="wxgate"');
    t.is((await phone(gw, 'not-a-session-token', { code: 'phone-13800138000' }, '/api/phone-number')).status, 401);
    for (const body of [{}, { code: '' }, { code: 42 }, { code: 'x'.repeat(129) }, { code: 'with space' }, { code: 'phone-13800138000', force: 'yes' }, { code: 'phone-13800138000', force: 1 }]) {
      const r = await phone(gw, token, body, '/api/phone-number');
      t.is(r.status, 400, JSON.stringify(body));
      t.is(r.json.error, 'invalid_request');
    }
    const notJson = await phone(gw, token, '{"code":', '/api/phone-number');
    t.is(notJson.status, 400);
    t.is(notJson.json.error, 'invalid_json');
    const get = await request(gw.url, { path: '/api/phone-number', headers: { authorization: `Bearer ${token}` } });
    t.is(get.status, 405);
    t.is(get.headers.allow, 'POST');
    t.is((await phone(gw, token, { code: 'phone-13800138000' })).status, 404, 'the default path is gone when configured elsewhere');
    t.is((await stats(s)).stable_token, 0, 'no token fetched for refused requests');
  } finally {
    await gw.close();
    await s.close();
  }
});

test("WeChat's errors are the catalogue's", async (t) => {
  const s = await sim();
  const gw = await gateway(s);
  try {
    const token = await login(gw.url, 'dave.1');
    const cases: Array<[string, number, string]> = [
      ['fail-40029', 400, 'phone_code_invalid'],
      ['not-a-phone-code', 400, 'phone_code_invalid'],
      ['fail-45011', 429, 'wechat_rate_limited'],
      ['fail--1', 503, 'wechat_unavailable'],
      ['fail-40013', 502, 'wechat_error'],
    ];
    for (const [code, status, error] of cases) {
      const r = await phone(gw, token, { code });
      t.is(r.status, status, code);
      t.is(r.json.error, error, code);
      t.is(typeof r.json.message, 'string');
    }
    t.is((await stats(s)).stable_token, 1);
  } finally {
    await gw.close();
    await s.close();
  }
});

test('a rejected token (40001) is dropped only where it is still stored, and fetched again once', async (t) => {
  const s = await sim();
  const prefix = `p${++prefixes}:`;
  const a = await gateway(s, { prefix });
  const b = await gateway(s, { prefix });
  try {
    const ta = await login(a.url, 'erin.1');
    const tb = await login(b.url, 'frank.1');
    t.is((await phone(a, ta, { code: 'phone-13800000001' })).status, 200);
    t.is((await phone(b, tb, { code: 'phone-13800000002' })).status, 200);
    t.is((await stats(s)).stable_token, 1, 'both replicas use the one token');

    await revokeTokens(s); // WeChat no longer takes it
    // replica a meets 40001: deletes the stored token, fetches a new one, succeeds
    const ra = await phone(a, ta, { code: 'phone-13800000003', force: true });
    t.is(ra.status, 200, ra.text);
    t.is((await stats(s)).stable_token, 2);
    // replica b still holds the old token: its 40001 must not delete a's new token, and b fetches nothing
    const rb = await phone(b, tb, { code: 'phone-13800000004', force: true });
    t.is(rb.status, 200, rb.text);
    t.is((await stats(s)).stable_token, 2);
    t.is((await stats(s)).stable_token_forced, 0);
  } finally {
    await a.close();
    await b.close();
    await s.close();
  }
});

test('a token WeChat keeps rejecting: one force_refresh per 30 s, then 503', async (t) => {
  const s = await sim();
  const prefix = `p${++prefixes}:`;
  const a = await gateway(s, { prefix });
  const b = await gateway(s, { prefix });
  try {
    const ta = await login(a.url, 'gina.1');
    const tb = await login(b.url, 'hank.1');
    // "fail-40001": the simulator rejects every token for this code
    const first = await phone(a, ta, { code: 'fail-40001' });
    t.is(first.status, 503);
    t.is(first.json.error, 'wechat_unavailable');
    t.is((await stats(s)).stable_token_forced, 1, 'the normal refetch did not help: one force_refresh');
    const fromB = await phone(b, tb, { code: 'fail-40001' });
    const fromA = await phone(a, ta, { code: 'fail-40001' });
    t.is(fromB.status, 503);
    t.is(fromA.status, 503);
    t.is((await stats(s)).stable_token_forced, 1, 'no second force_refresh within 30 s, on any replica');
    // the app keeps working for good codes
    t.is((await phone(b, tb, { code: 'phone-13800000005' })).status, 200);
    const forced = await Promise.all([a, b].map(async (g) => metricValue(await scrape(g.url), 'wxgate_wechat_token_refreshes_total', { appid: APPID, outcome: 'forced' })));
    t.is(forced[0]! + forced[1]!, 1);
  } finally {
    await a.close();
    await b.close();
    await s.close();
  }
});

/**
 * Two replicas on one Redis prefix (an hour of LRU: what each forwards after a change is the
 * invalidation's doing, not expiry), with their simulator and upstream; closed when the test ends.
 */
async function replicas(t: ExecutionContext, routes: (up: Upstream) => object[], opts: { admin?: boolean } = {}) {
  const s = await sim();
  const up = await startUpstream();
  const prefix = `p${++prefixes}:`;
  const config = () =>
    testConfig({
      apiBase: s.url,
      session: { store: 'redis', redis: { url: redis.url, keyPrefix: prefix }, cache: { ttl: '1h' } },
      routes: routes(up),
      ...(opts.admin ? { admin: { port: 0, token: ADMIN } } : {}),
    });
  const a = await startTestGateway(config());
  const b = await startTestGateway(config());
  t.teardown(async () => {
    await a.close();
    await b.close();
    await up.close();
    await s.close();
  });
  return { s, up, a, b };
}

test('routes[].forwardPhone: once granted, every replica sends X-Wx-Phone (E.164) on that route only; a client never can', async (t) => {
  const { up, a, b } = await replicas(t, (up) => [
    { path: '/shop', upstream: up.url, forwardPhone: true },
    { path: '/api', upstream: up.url },
  ]);
  const spoof = { 'x-wx-phone': '+10000000000', X_Wx_Phone: '+10000000001' };
  const seenFor = async (gw: TestGateway, token: string, path: string) => {
    const res = await request(gw.url, { path, headers: { authorization: `Bearer ${token}`, ...spoof } });
    t.is(res.status, 200, res.text);
    const seen = up.seen.at(-1)!;
    t.is(seen.url, path);
    return Object.entries(seen.headers).filter(([k]) => k.replace(/_/g, '-').toLowerCase() === 'x-wx-phone');
  };
  const token = await login(a.url, 'carol.1');
  // b caches the session before the number is granted (its LRU ttl is an hour)
  t.deepEqual(await seenFor(b, token, '/shop/cart'), [], 'no number before it is granted, and no spoofed one');
  t.is((await phone(a, token, { code: 'phone-13800138000@carol' })).status, 200);
  const onB = await waitFor(async () => {
    const seen = await seenFor(b, token, '/shop/cart');
    return seen.length > 0 && seen;
  }, { message: 'B forwards a number' });
  t.deepEqual(onB, [['x-wx-phone', '+8613800138000']], 'the other replica dropped its cached copy and sends the number');
  t.deepEqual(await seenFor(a, token, '/shop/cart'), [['x-wx-phone', '+8613800138000']]);
  t.deepEqual(await seenFor(a, token, '/api/orders'), [], 'a route without forwardPhone never gets it');
  t.is(up.seen.at(-1)!.headers['x-openid'], (await (await fetch(`${a.url}/session`, { headers: { authorization: `Bearer ${token}` } })).json() as { openid: string }).openid);
  // another session of the same user has it too: the number is the user's
  const other = await login(a.url, 'carol.2');
  t.deepEqual(await seenFor(a, other, '/shop/cart'), [['x-wx-phone', '+8613800138000']]);
  const stranger = await login(a.url, 'zed.1');
  t.deepEqual(await seenFor(a, stranger, '/shop/cart'), [], 'another user never');
  nothingSecretLogged(t, a, '13800138000', token);
  nothingSecretLogged(t, b, '13800138000', token);
});

test('the phone number is kept with the user in both stores, and the session keeps its deadlines', async (t) => {
  for (const store of ['memory', 'redis'] as const) {
    const s = await sim();
    const up = await startUpstream();
    const prefix = store === 'redis' ? `p${++prefixes}:` : undefined;
    const gw = await startTestGateway(
      testConfig({
        apiBase: s.url,
        session: prefix ? { store, redis: { url: redis.url, keyPrefix: prefix }, cache: { max: 0 } } : { store, cache: { max: 0 } },
        routes: [{ path: '/shop', upstream: up.url, forwardPhone: true }],
      }),
    );
    try {
      const token = await login(gw.url, 'dave.1');
      const before = (await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).json;
      t.is((await phone(gw, token, { code: 'phone-13900139000@dave' })).status, 200);
      const res = await request(gw.url, { path: '/shop/x', headers: { authorization: `Bearer ${token}` } });
      t.is(res.status, 200, `${store}: ${res.text}`);
      t.is(up.seen.at(-1)!.headers['x-wx-phone'], '+8613900139000', `${store}: read from the store (no LRU)`);
      const after = (await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).json;
      t.is(after.openid, before.openid);
      t.true(after.expires_in > 0 && after.expires_in <= before.expires_in + 1, `${store}: the session lives on as before`);
      if (prefix) {
        const client = new Redis(redis.url);
        try {
          const h = hashToken(token);
          t.is(h.length, TOKEN_HASH_LENGTH);
          const key = `${prefix}u:${h.slice(0, UID_LENGTH)}`;
          t.true((await client.pttl(key)) > 0, "the user's key keeps its expiry");
          t.regex((await client.hget(key, 'p'))!, /^13900139000\t13900139000\t86\t[0-9a-z]+$/, "the number is in the user's hash");
          t.regex((await client.hget(key, h.slice(UID_LENGTH)))!, /^[0-9a-z]+\t[0-9a-z]+\t[0-9a-z]+$/, "and not in the session's field");
        } finally {
          client.disconnect();
        }
      }
    } finally {
      await gw.close();
      await up.close();
      await s.close();
    }
  }
});

const ADMIN = 'phone-admin-token-0123456789abcdef';

/** What the upstream saw as X-Wx-Phone for a request with this token through this replica. */
async function upstreamPhone(t: { is(a: unknown, b: unknown, m?: string): void }, up: Awaited<ReturnType<typeof startUpstream>>, gw: TestGateway, token: string): Promise<string | undefined> {
  const res = await request(gw.url, { path: '/shop/cart', headers: { authorization: `Bearer ${token}` } });
  t.is(res.status, 200, res.text);
  const h = up.seen.at(-1)!.headers['x-wx-phone'];
  return Array.isArray(h) ? h.join(',') : h;
}
/** Polls until the replica forwards `want` (another replica hears of a change through Redis pub/sub). */
async function eventually(read: () => Promise<string | undefined>, want: string | undefined): Promise<string | undefined> {
  let got: string | undefined;
  await waitFor(async () => (got = await read()) === want, { message: `the replica forwards ${want}` }).catch(() => {});
  return got; // the caller's assertion names what came instead
}

test("the number is the user's: granted in one session, every session of the user on every replica (a later login on another replica too) forwards it; within the window a new code is answered without calling WeChat, force calls it; the admin revoke drops it everywhere", async (t) => {
  const { s, up, a, b } = await replicas(t, (up) => [{ path: '/shop', upstream: up.url, forwardPhone: true }], { admin: true });
  const first = await login(a.url, 'ivy.1');
  const onB = await login(b.url, 'ivy.2'); // another device, cached on B before the grant
  t.is(await upstreamPhone(t, up, a, first), undefined);
  t.is(await upstreamPhone(t, up, b, onB), undefined);
  const granted = await phone(a, first, { code: 'phone-13800138000@ivy' });
  t.is(granted.status, 200, granted.text);
  t.is(granted.json.source, 'wechat');
  t.deepEqual(await phoneStats(s), { calls: 1, numbers: 1 });

  t.is(await upstreamPhone(t, up, a, first), '+8613800138000');
  t.is(await eventually(() => upstreamPhone(t, up, b, onB), '+8613800138000'), '+8613800138000', "B dropped its cached copy of the user's other session");
  const later = await login(b.url, 'ivy.3'); // a later login, on the other replica
  t.is(await upstreamPhone(t, up, b, later), '+8613800138000', 'a new session of the same user has it at once');

  // a second getPhoneNumber within the window: the kept number, no paid call
  const kept = await phone(b, later, { code: 'phone-13800138000@ivy' });
  t.is(kept.status, 200, kept.text);
  t.deepEqual(kept.json, { phoneNumber: '13800138000', purePhoneNumber: '13800138000', countryCode: '86', source: 'kept' });
  t.is(kept.headers['cache-control'], 'no-store');
  t.deepEqual(await phoneStats(s), { calls: 1, numbers: 1 }, 'WeChat was not called');
  // force: WeChat is asked again, and its newer number is the user's everywhere
  const forced = await phone(b, onB, { code: 'phone-13900139000@ivy', force: true });
  t.is(forced.status, 200, forced.text);
  t.deepEqual(forced.json, { phoneNumber: '13900139000', purePhoneNumber: '13900139000', countryCode: '86', source: 'wechat' });
  t.deepEqual(await phoneStats(s), { calls: 2, numbers: 2 });
  t.is(await eventually(() => upstreamPhone(t, up, a, first), '+8613900139000'), '+8613900139000');
  t.is(await upstreamPhone(t, up, b, later), '+8613900139000');

  // the admin revoke (on either replica) drops it for every session, everywhere
  const openid = (await request(a.url, { path: '/session', headers: { authorization: `Bearer ${first}` } })).json.openid as string;
  const revoke = (gw: TestGateway) => request(gw.adminUrl!, { method: 'DELETE', path: `/users/${APPID}/${openid}/phone`, headers: { authorization: `Bearer ${ADMIN}` } });
  const unauthorized = await request(b.adminUrl!, { method: 'DELETE', path: `/users/${APPID}/${openid}/phone` });
  t.is(unauthorized.status, 401);
  const revoked = await revoke(b);
  t.is(revoked.status, 200, revoked.text);
  t.deepEqual(revoked.json, { revoked: true });
  t.is(await eventually(() => upstreamPhone(t, up, a, first), undefined), undefined, 'A no longer forwards it');
  t.is(await upstreamPhone(t, up, b, onB), undefined);
  t.is(await upstreamPhone(t, up, b, later), undefined);
  t.deepEqual((await revoke(a)).json, { revoked: false }, 'nothing left to revoke');
  // the next getPhoneNumber goes to WeChat again
  const asked = await phone(a, first, { code: 'phone-13700137000@ivy' });
  t.is(asked.status, 200, asked.text);
  t.is(asked.json.source, 'wechat');
  t.deepEqual(await phoneStats(s), { calls: 3, numbers: 3 });
  t.is(await eventually(() => upstreamPhone(t, up, b, later), '+8613700137000'), '+8613700137000');
  for (const gw of [a, b]) nothingSecretLogged(t, gw, '13800138000', '13900139000', first, later);
});

test('a block drops the kept number: after the unblock the user logs in without it, on every replica, and the next code goes to WeChat', async (t) => {
  const { s, up, a, b } = await replicas(t, (up) => [{ path: '/shop', upstream: up.url, forwardPhone: true }], { admin: true });
  const admin = (gw: TestGateway, method: string, path: string) => request(gw.adminUrl!, { method, path, headers: { authorization: `Bearer ${ADMIN}` } });
  const token = await login(a.url, 'kim.1');
  t.is((await phone(a, token, { code: 'phone-13800138000@kim' })).status, 200);
  t.is(await upstreamPhone(t, up, a, token), '+8613800138000');
  const openid = (await request(a.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).json.openid as string;
  const blocked = await admin(b, 'POST', `/users/${APPID}/${openid}/block`);
  t.is(blocked.status, 200, blocked.text);
  t.is((await request(a.url, { path: '/shop/cart', headers: { authorization: `Bearer ${token}` } })).status === 200, false, 'the session ended');
  t.is((await admin(a, 'DELETE', `/users/${APPID}/${openid}/block`)).status, 200);
  const again = await login(b.url, 'kim.2');
  t.is(await upstreamPhone(t, up, b, again), undefined, 'the number went with the block');
  t.deepEqual((await admin(a, 'DELETE', `/users/${APPID}/${openid}/phone`)).json, { revoked: false });
  const asked = await phone(b, again, { code: 'phone-13900139000@kim' });
  t.is(asked.status, 200, asked.text);
  t.is(asked.json.source, 'wechat', 'the user is asked again, and WeChat with them');
  t.deepEqual(await phoneStats(s), { calls: 2, numbers: 2 });
});

test('limits.phone.window: past it a new code goes to WeChat again; 0 sends every code to WeChat (memory store alike)', async (t) => {
  // 2 s: wide enough that two requests in a row fall inside it on a loaded CI machine (300 ms was not)
  for (const window of ['2s', '0s']) {
    const s = await sim();
    const gw = await startTestGateway(testConfig({ apiBase: s.url, limits: { login: { perIp: 0 }, phone: { window } } }));
    try {
      const token = await login(gw.url, 'jill.1');
      t.is((await phone(gw, token, { code: 'phone-13800138000@jill' })).json.source, 'wechat');
      const soon = await phone(gw, token, { code: 'phone-13800138001@jill' });
      t.is(soon.status, 200, soon.text);
      if (window === '0s') {
        t.is(soon.json.source, 'wechat', 'no window: WeChat is asked every time');
        t.is(soon.json.phoneNumber, '13800138001');
        t.is((await phoneStats(s)).calls, 2);
        continue;
      }
      t.is(soon.json.source, 'kept');
      t.is(soon.json.phoneNumber, '13800138000');
      t.is((await phoneStats(s)).calls, 1);
      await sleep(2100); // real time: past the 2 s window
      const after = await phone(gw, token, { code: 'phone-13800138002@jill' });
      t.is(after.json.source, 'wechat', 'past the window');
      t.is(after.json.phoneNumber, '13800138002');
      t.is((await phoneStats(s)).calls, 2);
    } finally {
      await gw.close();
      await s.close();
    }
  }
});

test('config: limits.phone.window is a duration', (t) => {
  t.is(buildConfig(testConfig({ apiBase: 'http://127.0.0.1:1' })).limits.phone.window, 30 * 24 * 3600_000, 'default 30d');
  const err = t.throws(() => buildConfig(testConfig({ apiBase: 'http://127.0.0.1:1', limits: { phone: { window: 'soon' } } })));
  t.regex(err!.message, /limits\.phone\.window/);
});

test('config: forwardPhone needs auth: required', async (t) => {
  const err = t.throws(() =>
    buildConfig(testConfig({ apiBase: 'http://127.0.0.1:1', routes: [{ path: '/pub', upstream: 'http://127.0.0.1:2', auth: 'none', forwardPhone: true }] })),
  );
  t.regex(err!.message, /routes\[0\]\.forwardPhone.*needs auth: required/s);
});
