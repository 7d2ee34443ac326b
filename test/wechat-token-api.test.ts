import test, { type ExecutionContext } from 'ava';
import nock from 'nock';
import { createMetrics } from '../src/metrics/metrics.js';
import { AccessTokenError, AccessTokens } from '../src/wechat/access-token.js';
import { MemoryTokenStore } from '../src/wechat/token-store.js';
import { WechatClient } from '../src/wechat/client.js';
import { WechatError } from '../src/wechat/types.js';

/**
 * The exact shapes of cgi-bin/stable_token, cgi-bin/token and wxa/business/getuserphonenumber, and
 * every documented error, with nock standing in for WeChat. Each test has its own host, so they can run
 * concurrently.
 */
const APPID = 'wx0123456789abcdef';
const SECRET = 'the-app-secret-value';
const TOKEN = 'ACCESS_TOKEN_value_0123456789';
const PHONE_CODE = 'e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144';
const OPENID = 'oAbCdEfGhIjKlMnOpQrStUvWxYz0';

let host = 0;
const base = () => `https://wx-${++host}.example`;

test.before(() => {
  nock.disableNetConnect();
});
test.after.always(() => {
  nock.cleanAll();
  nock.enableNetConnect();
});

function client(apiBase: string) {
  const metrics = createMetrics({ defaultMetrics: false });
  return { metrics, wx: new WechatClient({ apiBase, timeout: 500, apps: [{ appid: APPID, secret: SECRET }], metrics }) };
}

const silent = { info() {}, warn() {} };

function noSecrets(t: ExecutionContext, err: Error, ...hidden: string[]) {
  for (const text of [err.message, JSON.stringify(err), String(err.stack), String((err as WechatError).errmsg)]) {
    for (const h of hidden) t.false(text.includes(h), `${h} in ${text}`);
  }
}

test('stable_token: POST JSON {grant_type, appid, secret, force_refresh}', async (t) => {
  const wxBase = base();
  const bodies: unknown[] = [];
  const headers: Record<string, string | string[] | undefined>[] = [];
  const scope = nock(wxBase)
    .post('/cgi-bin/stable_token', (b) => (bodies.push(b), true))
    .times(2)
    .reply(function () {
      headers.push(this.req.headers);
      return [200, { access_token: TOKEN, expires_in: 7200 }, { 'content-type': 'text/plain' }];
    });
  const { wx } = client(wxBase);
  t.deepEqual(await wx.stableToken(APPID), { accessToken: TOKEN, expiresIn: 7200 });
  t.deepEqual(await wx.stableToken(APPID, true), { accessToken: TOKEN, expiresIn: 7200 });
  t.true(scope.isDone());
  t.deepEqual(bodies, [
    { grant_type: 'client_credential', appid: APPID, secret: SECRET, force_refresh: false },
    { grant_type: 'client_credential', appid: APPID, secret: SECRET, force_refresh: true },
  ]);
  t.regex(String(headers[0]!['content-type']), /^application\/json/);
  wx.close();
});

test('token: GET with grant_type, appid and secret in the query', async (t) => {
  const wxBase = base();
  let path = '';
  nock(wxBase)
    .get((uri) => ((path = uri), uri.startsWith('/cgi-bin/token?')))
    .reply(200, { access_token: TOKEN, expires_in: 7200 });
  const { wx } = client(wxBase);
  t.deepEqual(await wx.token(APPID), { accessToken: TOKEN, expiresIn: 7200 });
  const q = new URL(path, wxBase).searchParams;
  t.deepEqual(Object.fromEntries(q), { grant_type: 'client_credential', appid: APPID, secret: SECRET });
  wx.close();
});

test('stable_token without access_token or expires_in is a bad response', async (t) => {
  const wxBase = base();
  nock(wxBase).post('/cgi-bin/stable_token').reply(200, { expires_in: 7200 });
  nock(wxBase).post('/cgi-bin/stable_token').reply(200, { access_token: TOKEN });
  const { wx } = client(wxBase);
  t.is((await t.throwsAsync(wx.stableToken(APPID), { instanceOf: WechatError }))!.kind, 'bad_response');
  t.is((await t.throwsAsync(wx.stableToken(APPID), { instanceOf: WechatError }))!.kind, 'bad_response');
  wx.close();
});

for (const errcode of [-1, 40002, 40013, 40125, 40164, 40243, 41002, 41004, 45009, 45011]) {
  test(`stable_token errcode ${errcode} → WechatError, the secret never in it`, async (t) => {
    const wxBase = base();
    nock(wxBase).post('/cgi-bin/stable_token').reply(200, { errcode, errmsg: `something about ${SECRET}, rid: 1` });
    const { wx, metrics } = client(wxBase);
    const err = await t.throwsAsync(wx.stableToken(APPID), { instanceOf: WechatError });
    t.is(err!.errcode, errcode);
    t.is(err!.api, 'stable_token');
    noSecrets(t, err!, SECRET);
    const { values } = await metrics.wechatRequests.get();
    t.deepEqual(values.map((v) => [v.labels.api, v.labels.outcome, v.value]), [['stable_token', `errcode_${errcode}`, 1]]);
    wx.close();
  });
}

test('getuserphonenumber: POST ?access_token= with {code, openid}; phone_info is answered', async (t) => {
  const wxBase = base();
  let path = '';
  let body: unknown;
  nock(wxBase)
    .post((uri) => ((path = uri), uri.startsWith('/wxa/business/getuserphonenumber?')), (b) => ((body = b), true))
    .reply(200, {
      errcode: 0,
      errmsg: 'ok',
      phone_info: { phoneNumber: '+1 5550100', purePhoneNumber: '5550100', countryCode: 1, watermark: { timestamp: 1637744274, appid: APPID } },
    });
  const { wx } = client(wxBase);
  t.deepEqual(await wx.getPhoneNumber(TOKEN, PHONE_CODE, OPENID), { phoneNumber: '+1 5550100', purePhoneNumber: '5550100', countryCode: '1' });
  t.deepEqual(Object.fromEntries(new URL(path, wxBase).searchParams), { access_token: TOKEN });
  t.deepEqual(body, { code: PHONE_CODE, openid: OPENID });
  wx.close();
});

test('getuserphonenumber without phone_info is a bad response', async (t) => {
  const wxBase = base();
  nock(wxBase).post('/wxa/business/getuserphonenumber').query(true).reply(200, { errcode: 0, errmsg: 'ok' });
  const { wx } = client(wxBase);
  t.is((await t.throwsAsync(wx.getPhoneNumber(TOKEN, PHONE_CODE, OPENID), { instanceOf: WechatError }))!.kind, 'bad_response');
  wx.close();
});

for (const errcode of [-1, 40001, 40013, 40014, 40029, 42001, 45011]) {
  test(`getuserphonenumber errcode ${errcode} → WechatError, neither token nor code in it`, async (t) => {
    const wxBase = base();
    nock(wxBase)
      .post('/wxa/business/getuserphonenumber')
      .query(true)
      .reply(200, { errcode, errmsg: `invalid ${PHONE_CODE} ${TOKEN} hint: [x]` });
    const { wx } = client(wxBase);
    const err = await t.throwsAsync(wx.getPhoneNumber(TOKEN, PHONE_CODE, OPENID), { instanceOf: WechatError });
    t.is(err!.errcode, errcode);
    noSecrets(t, err!, TOKEN, PHONE_CODE);
    wx.close();
  });
}

function service(wxBase: string, retryDelays = [5, 5]) {
  const { wx, metrics } = client(wxBase);
  const tokens = new AccessTokens({
    apps: [{ appid: APPID, tokenSource: 'stable_token' }],
    wechat: wx,
    store: new MemoryTokenStore(),
    metrics,
    log: silent,
    timeout: 500,
    retryDelays,
  });
  return { wx, metrics, tokens };
}

test('stable_token is tried up to 3 times on passing failures (-1, timeouts, HTTP 5xx), then given up', async (t) => {
  const wxBase = base();
  nock(wxBase).post('/cgi-bin/stable_token').reply(200, { errcode: -1, errmsg: 'system error' });
  nock(wxBase).post('/cgi-bin/stable_token').reply(502, 'bad gateway');
  nock(wxBase).post('/cgi-bin/stable_token').reply(200, { access_token: TOKEN, expires_in: 7200 });
  const { wx, tokens } = service(wxBase);
  t.is((await tokens.get(APPID)).token, TOKEN);
  t.true(nock.isDone());

  const other = base();
  const scope = nock(other).post('/cgi-bin/stable_token').times(3).reply(200, { errcode: -1, errmsg: 'system error' });
  nock(other).post('/cgi-bin/stable_token').reply(200, { access_token: 'never-fetched', expires_in: 7200 });
  const s2 = service(other);
  await t.throwsAsync(s2.tokens.get(APPID), { instanceOf: AccessTokenError });
  t.true(scope.isDone());
  t.is(nock.pendingMocks().filter((m) => m.includes(other.slice(8))).length, 1, 'no 4th try');
  wx.close();
  s2.wx.close();
});

test('errors that another try cannot fix (40125, 40164, 45009) are not retried', async (t) => {
  for (const errcode of [40125, 40164, 45009]) {
    const wxBase = base();
    const scope = nock(wxBase).post('/cgi-bin/stable_token').reply(200, { errcode, errmsg: 'no' });
    const { wx, tokens, metrics } = service(wxBase);
    await t.throwsAsync(tokens.get(APPID), { instanceOf: AccessTokenError });
    t.true(scope.isDone());
    const { values } = await metrics.wechatRequests.get();
    t.is(values.reduce((n, v) => n + v.value, 0), 1, `errcode ${errcode}: one call`);
    const refreshes = await metrics.wechatTokenRefreshes.get();
    t.deepEqual(refreshes.values.map((v) => [v.labels.outcome, v.value]), [['error', 1]]);
    wx.close();
  }
});

// serial (ava runs serial tests before the concurrent ones): its pending interceptors would show in the
// other tests' global nock.isDone(), and their load would blur its timings
test.serial('the waits between stable_token tries are jittered: they differ from run to run and stay within ±50% of retryDelays', async (t) => {
  // retryDelays [150, 450]: the wait before the 2nd try is 75–225 ms, before the 3rd 225–675 ms
  const DELAYS = [150, 450];
  const RUNS = 8;
  /** the gaps between the arrivals of a run's three calls at WeChat, ms */
  const gaps: number[][] = [];
  for (let run = 0; run < RUNS; run++) {
    const wxBase = base();
    const arrivals: number[] = [];
    const at = () => arrivals.push(performance.now());
    nock(wxBase)
      .post('/cgi-bin/stable_token')
      .times(2)
      .reply(() => (at(), [200, { errcode: -1, errmsg: 'system error' }]));
    nock(wxBase)
      .post('/cgi-bin/stable_token')
      .reply(() => (at(), [200, { access_token: TOKEN, expires_in: 7200 }]));
    const { wx, tokens } = service(wxBase, DELAYS);
    t.is((await tokens.get(APPID)).token, TOKEN);
    t.is(arrivals.length, 3, `run ${run}: three tries`);
    gaps.push([arrivals[1]! - arrivals[0]!, arrivals[2]! - arrivals[1]!]);
    wx.close();
  }
  t.log(`gaps (ms): ${gaps.map((g) => g.map((x) => x.toFixed(0)).join('/')).join(', ')}`);
  // setTimeout never fires early (1 ms for its rounding); a late one is load, bounded generously
  const SLACK = 40;
  for (const [i, delay] of DELAYS.entries()) {
    const xs = gaps.map((g) => g[i]!);
    for (const x of xs) {
      t.true(x >= delay * 0.5 - 1, `wait ${i + 1}: ${x.toFixed(1)} ms is under ${delay * 0.5} ms (−50% of ${delay})`);
      t.true(x <= delay * 1.5 + SLACK, `wait ${i + 1}: ${x.toFixed(1)} ms is over ${delay * 1.5} ms (+50% of ${delay})`);
    }
    // Without jitter the 8 waits are the same ±10 ms (the calls' own time). Uniform over a window of `delay`
    // ms, the chance that 8 of them fall within a fifth of it is 8 · 0.2^7 ≈ 0.01%.
    const spread = Math.max(...xs) - Math.min(...xs);
    t.true(spread > delay / 5, `wait ${i + 1} varies by ${spread.toFixed(1)} ms over ${RUNS} runs (jitter window ${delay} ms)`);
    t.true(new Set(xs.map((x) => Math.round(x / 5))).size >= 3, `wait ${i + 1}: at least three different values`);
  }
  // and the waits are independent draws: the second is not the first scaled (the first's ratio to its delay
  // differs from the second's in some run)
  t.true(gaps.some(([a, b]) => Math.abs(a! / DELAYS[0]! - b! / DELAYS[1]!) > 0.1));
});
