import test, { type ExecutionContext } from 'ava';
import nock from 'nock';
import { createMetrics } from '../src/metrics/metrics.js';
import { checkWxacodeParams, WechatClient } from '../src/wechat/client.js';
import { WechatError } from '../src/wechat/types.js';

/**
 * The exact shapes of sns/oauth2/access_token, sns/userinfo and wxa/getwxacodeunlimit, their documented
 * errors, and checkWxacodeParams, with nock standing in for WeChat. Each test has its own host.
 */
const MP_APPID = 'wx0123456789abcdef';
const MP_SECRET = 'the-mp-secret-value';
const WEB_APPID = 'wxfedcba9876543210';
const WEB_SECRET = 'the-website-secret-value';
const CODE = '061Abc0w3xyzDEF1234567890ghijK0A';
const USER_TOKEN = 'USER_ACCESS_TOKEN_value_0123456789';
const APP_TOKEN = 'APP_ACCESS_TOKEN_value_9876543210';
const OPENID = 'oAbCdEfGhIjKlMnOpQrStUvWxYz0';
const UNIONID = 'o6_bmasdasdsad6_2sgVt7hMZOPfL';
const PNG_SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let host = 0;
const base = () => `https://wxweb-${++host}.example`;

test.before(() => {
  nock.disableNetConnect();
});
test.after.always(() => {
  nock.cleanAll();
  nock.enableNetConnect();
});

// a generous default: nock answers at once, and a loaded machine must not turn that into a timeout; the
// timeout tests pass their own, well under their delayed answers
function client(apiBase: string, timeout = 5000) {
  const metrics = createMetrics({ defaultMetrics: false });
  const wx = new WechatClient({
    apiBase,
    timeout,
    apps: [
      { appid: MP_APPID, secret: MP_SECRET },
      { appid: WEB_APPID, secret: WEB_SECRET },
    ],
    metrics,
  });
  return { metrics, wx };
}

function noSecrets(t: ExecutionContext, err: Error, ...hidden: string[]) {
  for (const text of [err.message, JSON.stringify(err), String(err.stack), String((err as WechatError).errmsg)]) {
    for (const h of hidden) t.false(text.includes(h), `${h} in ${text}`);
  }
}

async function outcomes(metrics: ReturnType<typeof createMetrics>) {
  const { values } = await metrics.wechatRequests.get();
  return values.map((v) => [v.labels.api, v.labels.outcome, v.value]);
}

// ---- sns/oauth2/access_token ----

test('oauth2AccessToken: GET with appid, the app secret, code and grant_type; the answer mapped', async (t) => {
  const wxBase = base();
  let path = '';
  let accept: unknown;
  nock(wxBase)
    .get((uri) => ((path = uri), uri.startsWith('/sns/oauth2/access_token?')))
    .reply(function () {
      accept = this.req.headers.accept;
      return [
        200,
        { access_token: USER_TOKEN, expires_in: 7200, refresh_token: 'REFRESH', openid: OPENID, scope: 'snsapi_userinfo', unionid: UNIONID },
        { 'content-type': 'text/plain' },
      ];
    });
  const { wx, metrics } = client(wxBase);
  t.deepEqual(await wx.oauth2AccessToken(MP_APPID, CODE), {
    openid: OPENID,
    accessToken: USER_TOKEN,
    expiresIn: 7200,
    refreshToken: 'REFRESH',
    scope: 'snsapi_userinfo',
    unionid: UNIONID,
  });
  t.deepEqual(Object.fromEntries(new URL(path, wxBase).searchParams), {
    appid: MP_APPID,
    secret: MP_SECRET,
    code: CODE,
    grant_type: 'authorization_code',
  });
  t.is(accept, 'application/json');
  t.deepEqual(await outcomes(metrics), [['oauth2_access_token', 'ok', 1]]);
  wx.close();
});

test("oauth2AccessToken uses each app's own secret; snsapi_base without unionid; is_snapshotuser is kept", async (t) => {
  const wxBase = base();
  const queries: Record<string, string>[] = [];
  nock(wxBase)
    .get('/sns/oauth2/access_token')
    .query((q) => (queries.push(q as Record<string, string>), true))
    .reply(200, { access_token: USER_TOKEN, expires_in: 7200, refresh_token: 'R', openid: OPENID, scope: 'snsapi_login' });
  nock(wxBase)
    .get('/sns/oauth2/access_token')
    .query((q) => (queries.push(q as Record<string, string>), true))
    .reply(200, { access_token: USER_TOKEN, expires_in: '7200', openid: OPENID, scope: 'snsapi_base', is_snapshotuser: 1 });
  const { wx } = client(wxBase);
  const web = await wx.oauth2AccessToken(WEB_APPID, 'web-code');
  t.is(web.scope, 'snsapi_login');
  t.false('unionid' in web);
  t.false('isSnapshotuser' in web);
  const snap = await wx.oauth2AccessToken(MP_APPID, 'mp-code');
  t.deepEqual(snap, { openid: OPENID, accessToken: USER_TOKEN, expiresIn: 7200, scope: 'snsapi_base', isSnapshotuser: true });
  t.deepEqual(
    queries.map((q) => [q.appid, q.secret, q.code]),
    [
      [WEB_APPID, WEB_SECRET, 'web-code'],
      [MP_APPID, MP_SECRET, 'mp-code'],
    ],
  );
  wx.close();
});

test('oauth2AccessToken for an appid not in apps throws before any request', async (t) => {
  const { wx } = client(base());
  await t.throwsAsync(wx.oauth2AccessToken('wxnotconfigured0000', CODE), { message: 'unknown appid' });
  wx.close();
});

test('oauth2AccessToken without openid, access_token or expires_in is a bad response', async (t) => {
  const wxBase = base();
  nock(wxBase).get('/sns/oauth2/access_token').query(true).reply(200, { access_token: USER_TOKEN, expires_in: 7200 });
  nock(wxBase).get('/sns/oauth2/access_token').query(true).reply(200, { openid: OPENID, expires_in: 7200 });
  nock(wxBase).get('/sns/oauth2/access_token').query(true).reply(200, { openid: OPENID, access_token: USER_TOKEN });
  nock(wxBase).get('/sns/oauth2/access_token').query(true).reply(200, '<html>oops</html>');
  const { wx } = client(wxBase);
  for (let i = 0; i < 4; i++) {
    const err = await t.throwsAsync(wx.oauth2AccessToken(MP_APPID, CODE), { instanceOf: WechatError });
    t.is(err!.kind, 'bad_response');
    t.is(err!.api, 'oauth2_access_token');
  }
  wx.close();
});

for (const errcode of [-1, 40029, 40163, 40125, 40013, 41002, 41004, 41008, 45011]) {
  test(`oauth2AccessToken errcode ${errcode} → WechatError, neither secret nor code in it, one request`, async (t) => {
    const wxBase = base();
    const scope = nock(wxBase)
      .get('/sns/oauth2/access_token')
      .query(true)
      .reply(200, { errcode, errmsg: `invalid code ${CODE} for secret ${MP_SECRET}, rid: 1` });
    nock(wxBase).get('/sns/oauth2/access_token').query(true).reply(200, { access_token: USER_TOKEN, expires_in: 7200, openid: OPENID });
    const { wx, metrics } = client(wxBase);
    const err = await t.throwsAsync(wx.oauth2AccessToken(MP_APPID, CODE), { instanceOf: WechatError });
    t.is(err!.kind, 'errcode');
    t.is(err!.errcode, errcode);
    t.true(err!.errmsg!.includes('***'));
    noSecrets(t, err!, CODE, MP_SECRET);
    t.true(scope.isDone());
    t.is(nock.pendingMocks().filter((m) => m.includes(wxBase.slice(8))).length, 1, 'never retried');
    t.deepEqual(await outcomes(metrics), [['oauth2_access_token', `errcode_${errcode}`, 1]]);
    wx.close();
  });
}

test('oauth2AccessToken: an HTTP 5xx or a timeout is not retried either', async (t) => {
  const wxBase = base();
  nock(wxBase).get('/sns/oauth2/access_token').query(true).reply(502, 'bad gateway');
  nock(wxBase).get('/sns/oauth2/access_token').query(true).delay(3000).reply(200, { access_token: USER_TOKEN, expires_in: 7200, openid: OPENID });
  nock(wxBase).get('/sns/oauth2/access_token').query(true).reply(200, { access_token: USER_TOKEN, expires_in: 7200, openid: OPENID });
  const { wx } = client(wxBase, 1000);
  t.is((await t.throwsAsync(wx.oauth2AccessToken(MP_APPID, CODE), { instanceOf: WechatError }))!.kind, 'bad_response');
  const err = await t.throwsAsync(wx.oauth2AccessToken(MP_APPID, CODE), { instanceOf: WechatError });
  t.is(err!.kind, 'timeout');
  noSecrets(t, err!, CODE, MP_SECRET);
  t.is(nock.pendingMocks().filter((m) => m.includes(wxBase.slice(8))).length, 1, 'never retried');
  wx.close();
});

// ---- sns/userinfo ----

test('snsUserinfo: GET with access_token, openid and lang (zh_CN by default); empty fields left out', async (t) => {
  const wxBase = base();
  const paths: string[] = [];
  nock(wxBase)
    .get((uri) => uri.startsWith('/sns/userinfo?') && (paths.push(uri), true))
    .times(2)
    .reply(200, {
      openid: OPENID,
      nickname: 'Alice',
      sex: 0,
      province: '',
      city: '',
      country: '',
      headimgurl: 'https://thirdwx.qlogo.cn/mmopen/abc/132',
      privilege: [],
      unionid: UNIONID,
    });
  const { wx, metrics } = client(wxBase);
  const expected = { openid: OPENID, nickname: 'Alice', sex: 0, headimgurl: 'https://thirdwx.qlogo.cn/mmopen/abc/132', unionid: UNIONID };
  t.deepEqual(await wx.snsUserinfo(USER_TOKEN, OPENID), expected);
  t.deepEqual(await wx.snsUserinfo(USER_TOKEN, OPENID, 'en'), expected);
  t.deepEqual(Object.fromEntries(new URL(paths[0]!, wxBase).searchParams), { access_token: USER_TOKEN, openid: OPENID, lang: 'zh_CN' });
  t.is(new URL(paths[1]!, wxBase).searchParams.get('lang'), 'en');
  t.deepEqual(await outcomes(metrics), [['sns_userinfo', 'ok', 2]]);
  wx.close();
});

test('snsUserinfo keeps places and sex when WeChat gives them', async (t) => {
  const wxBase = base();
  nock(wxBase)
    .get('/sns/userinfo')
    .query(true)
    .reply(200, { openid: OPENID, nickname: 'Bob', sex: 1, province: 'Guangdong', city: 'Shenzhen', country: 'CN', headimgurl: '' });
  const { wx } = client(wxBase);
  t.deepEqual(await wx.snsUserinfo(USER_TOKEN, OPENID), {
    openid: OPENID,
    nickname: 'Bob',
    sex: 1,
    province: 'Guangdong',
    city: 'Shenzhen',
    country: 'CN',
  });
  wx.close();
});

test('snsUserinfo: no openid, or another openid than asked for, is a bad response', async (t) => {
  const wxBase = base();
  nock(wxBase).get('/sns/userinfo').query(true).reply(200, { nickname: 'x' });
  nock(wxBase).get('/sns/userinfo').query(true).reply(200, { openid: 'oSomebodyElse000000000000000', nickname: 'x' });
  const { wx } = client(wxBase);
  for (let i = 0; i < 2; i++) {
    const err = await t.throwsAsync(wx.snsUserinfo(USER_TOKEN, OPENID), { instanceOf: WechatError });
    t.is(err!.kind, 'bad_response');
    t.is(err!.api, 'sns_userinfo');
  }
  wx.close();
});

for (const errcode of [40001, 40003, 41001, 42001, 48001, -1]) {
  test(`snsUserinfo errcode ${errcode} → WechatError without the token`, async (t) => {
    const wxBase = base();
    nock(wxBase).get('/sns/userinfo').query(true).reply(200, { errcode, errmsg: `bad token ${USER_TOKEN}` });
    const { wx } = client(wxBase);
    const err = await t.throwsAsync(wx.snsUserinfo(USER_TOKEN, OPENID), { instanceOf: WechatError });
    t.is(err!.errcode, errcode);
    noSecrets(t, err!, USER_TOKEN);
    wx.close();
  });
}

// ---- wxa/getwxacodeunlimit ----

const png = (size: number) => Buffer.concat([PNG_SIG, Buffer.alloc(size - PNG_SIG.length, 7)]);

test('getwxacodeUnlimit: POST ?access_token= with the documented JSON; the image bytes come back', async (t) => {
  const wxBase = base();
  let path = '';
  let body: unknown;
  let headers: Record<string, unknown> = {};
  const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(200_000, 1)]);
  nock(wxBase)
    .post((uri) => ((path = uri), uri.startsWith('/wxa/getwxacodeunlimit?')), (b) => ((body = b), true))
    .reply(function () {
      headers = this.req.headers;
      return [200, jpeg, { 'content-type': 'image/jpeg', 'content-length': String(jpeg.length) }];
    });
  const { wx, metrics } = client(wxBase);
  const image = await wx.getwxacodeUnlimit(APP_TOKEN, {
    scene: 'tk=Ab3-_.~!',
    page: 'pages/scan/confirm',
    checkPath: false,
    envVersion: 'trial',
    width: 280,
  });
  t.is(image.contentType, 'image/jpeg');
  t.true(Buffer.isBuffer(image.body));
  t.true(image.body.equals(jpeg));
  t.deepEqual(Object.fromEntries(new URL(path, wxBase).searchParams), { access_token: APP_TOKEN });
  t.deepEqual(body, { scene: 'tk=Ab3-_.~!', page: 'pages/scan/confirm', check_path: false, env_version: 'trial', width: 280 });
  t.regex(String(headers['content-type']), /^application\/json/);
  t.regex(String(headers.accept), /image\//);
  t.deepEqual(await outcomes(metrics), [['getwxacodeunlimit', 'ok', 1]]);
  wx.close();
});

test('getwxacodeUnlimit with only a scene sends only the scene; a PNG with parameters in its content type', async (t) => {
  const wxBase = base();
  let body: unknown;
  nock(wxBase)
    .post('/wxa/getwxacodeunlimit', (b) => ((body = b), true))
    .query(true)
    .reply(200, png(1000), { 'content-type': 'Image/PNG; charset=binary' });
  const { wx } = client(wxBase);
  const image = await wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'abc' });
  t.is(image.contentType, 'image/png');
  t.is(image.body.length, 1000);
  t.deepEqual(body, { scene: 'abc' });
  wx.close();
});

test('getwxacodeUnlimit: images up to 2 MiB are read (far beyond the JSON limit), larger ones are a bad response', async (t) => {
  const wxBase = base();
  nock(wxBase).post('/wxa/getwxacodeunlimit').query(true).reply(200, png(2 * 1024 * 1024), { 'content-type': 'image/png' });
  nock(wxBase).post('/wxa/getwxacodeunlimit').query(true).reply(200, png(2 * 1024 * 1024 + 1), { 'content-type': 'image/png' });
  const { wx } = client(wxBase, 2000);
  t.is((await wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'big' })).body.length, 2 * 1024 * 1024);
  const err = await t.throwsAsync(wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'big' }), { instanceOf: WechatError });
  t.is(err!.kind, 'bad_response');
  t.regex(err!.message, /larger than 2097152 bytes/);
  wx.close();
});

test('JSON answers stay limited to 64 KiB, and other APIs do not take images', async (t) => {
  const wxBase = base();
  nock(wxBase)
    .post('/wxa/getwxacodeunlimit')
    .query(true)
    .reply(200, JSON.stringify({ errcode: 40169, errmsg: 'x'.repeat(70_000) }), { 'content-type': 'application/json' });
  nock(wxBase).get('/sns/userinfo').query(true).reply(200, png(100), { 'content-type': 'image/png' });
  const { wx } = client(wxBase);
  const big = await t.throwsAsync(wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'abc' }), { instanceOf: WechatError });
  t.is(big!.kind, 'bad_response');
  t.regex(big!.message, /larger than 65536 bytes/);
  const notJson = await t.throwsAsync(wx.snsUserinfo(USER_TOKEN, OPENID), { instanceOf: WechatError });
  t.is(notJson!.kind, 'bad_response');
  t.regex(notJson!.message, /not JSON/);
  wx.close();
});

test('getwxacodeUnlimit: image/* bytes that are no image, and JSON without errcode, are bad responses', async (t) => {
  const wxBase = base();
  nock(wxBase).post('/wxa/getwxacodeunlimit').query(true).reply(200, Buffer.from('{"errcode":0}'), { 'content-type': 'image/jpeg' });
  nock(wxBase).post('/wxa/getwxacodeunlimit').query(true).reply(200, Buffer.alloc(0), { 'content-type': 'image/png' });
  nock(wxBase).post('/wxa/getwxacodeunlimit').query(true).reply(200, { errcode: 0, errmsg: 'ok' });
  const { wx } = client(wxBase);
  for (const detail of [/not a PNG, JPEG or GIF/, /not a PNG, JPEG or GIF/, /JSON without an image/]) {
    const err = await t.throwsAsync(wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'abc' }), { instanceOf: WechatError });
    t.is(err!.kind, 'bad_response');
    t.regex(err!.message, detail);
  }
  wx.close();
});

for (const errcode of [-1, 40001, 40097, 40129, 40169, 41030, 42001, 45009, 85096]) {
  test(`getwxacodeUnlimit errcode ${errcode} (JSON, application/json) → WechatError without the token, one request`, async (t) => {
    const wxBase = base();
    const scope = nock(wxBase)
      .post('/wxa/getwxacodeunlimit')
      .query(true)
      .reply(200, { errcode, errmsg: `token ${APP_TOKEN} hint: [x]` }, { 'content-type': 'application/json; encoding=utf-8' });
    nock(wxBase).post('/wxa/getwxacodeunlimit').query(true).reply(200, png(100), { 'content-type': 'image/png' });
    const { wx, metrics } = client(wxBase);
    const err = await t.throwsAsync(wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'abc' }), { instanceOf: WechatError });
    t.is(err!.errcode, errcode);
    noSecrets(t, err!, APP_TOKEN);
    t.true(scope.isDone());
    t.is(nock.pendingMocks().filter((m) => m.includes(wxBase.slice(8))).length, 1, 'never retried');
    t.deepEqual(await outcomes(metrics), [['getwxacodeunlimit', `errcode_${errcode}`, 1]]);
    wx.close();
  });
}

test('getwxacodeUnlimit checks its parameters before sending anything', async (t) => {
  const wxBase = base();
  const scope = nock(wxBase).post('/wxa/getwxacodeunlimit').query(true).reply(200, png(100), { 'content-type': 'image/png' });
  const { wx, metrics } = client(wxBase);
  await t.throwsAsync(wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'a%20b' }), { message: /invalid wxacode parameters: scene/ });
  await t.throwsAsync(wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'ok', page: '/pages/index/index' }), { message: /page/ });
  await t.throwsAsync(wx.getwxacodeUnlimit(APP_TOKEN, { scene: 'ok', envVersion: 'beta' as 'trial' }), { message: /envVersion/ });
  t.false(scope.isDone());
  t.deepEqual(await outcomes(metrics), []);
  wx.close();
});

// ---- checkWxacodeParams ----

test('checkWxacodeParams accepts every documented scene character, 1 to 32 of them', (t) => {
  const allowed = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$&'()*+,/:;=?@-._~";
  for (let i = 0; i < allowed.length; i += 32) t.is(checkWxacodeParams({ scene: allowed.slice(i, i + 32) }), undefined);
  for (const c of allowed) t.is(checkWxacodeParams({ scene: c }), undefined, c);
  t.is(checkWxacodeParams({ scene: 'x'.repeat(32) }), undefined);
  t.is(checkWxacodeParams({ scene: 'id=1&u=2', page: 'pages/index/index', envVersion: 'release' }), undefined);
  for (const envVersion of ['release', 'trial', 'develop']) t.is(checkWxacodeParams({ scene: 'a', envVersion }), undefined);
});

test('checkWxacodeParams refuses empty or long scenes, %, spaces, quotes, non-ASCII; bad pages and env versions', (t) => {
  t.regex(checkWxacodeParams({ scene: '' })!, /scene is required/);
  t.regex(checkWxacodeParams({ scene: undefined })!, /scene is required/);
  t.regex(checkWxacodeParams({ scene: 12 })!, /scene is required/);
  t.regex(checkWxacodeParams({ scene: 'x'.repeat(33) })!, /longer than 32/);
  for (const bad of ['a%20b', 'a b', 'a"b', 'a<b', 'a>b', 'a\\b', 'a^b', 'a`b', 'a{b', 'a|b', 'a[b', '票据', 'a\nb', 'é']) {
    t.regex(checkWxacodeParams({ scene: bad }) ?? 'accepted', /may only contain/, JSON.stringify(bad));
  }
  t.regex(checkWxacodeParams({ scene: 'a', page: '/pages/index/index' })!, /must not start with "\/"/);
  t.regex(checkWxacodeParams({ scene: 'a', page: 'pages/index/index?x=1' })!, /query/);
  t.regex(checkWxacodeParams({ scene: 'a', page: '' })!, /non-empty/);
  for (const envVersion of ['Release', 'beta', '', 1]) t.regex(checkWxacodeParams({ scene: 'a', envVersion })!, /envVersion/);
});
