import test from 'ava';
import nock from 'nock';
import { createMetrics } from '../src/metrics/metrics.js';
import { WechatClient } from '../src/wechat/client.js';
import { WechatError } from '../src/wechat/types.js';

/** nock stands in for WeChat only; loopback stays reachable. Tests here are serial: nock is global. */
const APPID = 'wx0123456789abcdef';
const SECRET = 'the-app-secret-value';
const WX = 'https://api.weixin.qq.com';

test.before(() => {
  nock.disableNetConnect();
  nock.enableNetConnect(/^(127\.0\.0\.1|localhost)(:\d+)?$/);
});
test.afterEach.always(() => nock.cleanAll());
test.after.always(() => nock.enableNetConnect());

function client(timeout = 500) {
  const metrics = createMetrics({ defaultMetrics: false });
  return { metrics, wx: new WechatClient({ apiBase: WX, timeout, apps: [{ appid: APPID, secret: SECRET }], metrics }) };
}

async function outcomes(metrics: ReturnType<typeof createMetrics>) {
  return Object.fromEntries((await metrics.wechatRequests.get()).values.map((v) => [String(v.labels.outcome), v.value]));
}

test.serial('sends the documented request, with the code URL-encoded', async (t) => {
  const code = 'a+b/c=d&secret=x y';
  const scope = nock(WX)
    .get('/sns/jscode2session')
    .query((q) => q.appid === APPID && q.secret === SECRET && q.js_code === code && q.grant_type === 'authorization_code' && Object.keys(q).length === 4)
    .reply(200, { openid: 'o-openid', session_key: 'c2Vzc2lvbmtleQ==' });
  const { wx, metrics } = client();
  t.deepEqual(await wx.code2Session(APPID, code), { openid: 'o-openid', sessionKey: 'c2Vzc2lvbmtleQ==' });
  t.true(scope.isDone());
  t.deepEqual(await outcomes(metrics), { ok: 1 });
  wx.close();
});

test.serial('passes unionid through when WeChat gives one', async (t) => {
  nock(WX).get('/sns/jscode2session').query(true).reply(200, { openid: 'o1', session_key: 'k', unionid: 'u1' });
  const { wx } = client();
  t.deepEqual(await wx.code2Session(APPID, 'c'), { openid: 'o1', sessionKey: 'k', unionid: 'u1' });
  wx.close();
});

for (const errcode of [40029, 40163, 45011, 40226, -1, 40125]) {
  test.serial(`errcode ${errcode} → WechatError errcode, without secret or code in the message`, async (t) => {
    nock(WX).get('/sns/jscode2session').query(true).reply(200, { errcode, errmsg: 'something, rid: 123' });
    const { wx, metrics } = client();
    const err = await t.throwsAsync(wx.code2Session(APPID, 'the-login-code'), { instanceOf: WechatError });
    t.is(err!.kind, 'errcode');
    t.is(err!.errcode, errcode);
    t.notRegex(err!.message, /the-app-secret-value|the-login-code/);
    t.deepEqual(await outcomes(metrics), { [`errcode_${errcode}`]: 1 });
    wx.close();
  });
}

const broken: Array<[string, (s: nock.Interceptor) => nock.Scope]> = [
  ['an HTML error page', (s) => s.reply(502, '<html>bad gateway</html>', { 'content-type': 'text/html' })],
  ['a 200 that is not JSON', (s) => s.reply(200, 'not json at all')],
  ['truncated JSON', (s) => s.reply(200, '{"openid":"o1","session_')],
  ['JSON without openid', (s) => s.reply(200, { session_key: 'k' })],
  ['a JSON array', (s) => s.reply(200, '[1,2]')],
];
for (const [what, reply] of broken) {
  test.serial(`${what} → bad_response`, async (t) => {
    reply(nock(WX).get('/sns/jscode2session').query(true));
    const { wx, metrics } = client();
    const err = await t.throwsAsync(wx.code2Session(APPID, 'c'), { instanceOf: WechatError });
    t.is(err!.kind, 'bad_response');
    t.deepEqual(await outcomes(metrics), { bad_response: 1 });
    wx.close();
  });
}

test.serial('slower than the timeout → timeout, at the deadline', async (t) => {
  nock(WX).get('/sns/jscode2session').query(true).delay(2000).reply(200, { openid: 'o', session_key: 'k' });
  const { wx, metrics } = client(300);
  const start = Date.now();
  const err = await t.throwsAsync(wx.code2Session(APPID, 'c'), { instanceOf: WechatError });
  t.is(err!.kind, 'timeout');
  t.true(Date.now() - start < 1000, `${Date.now() - start} ms`);
  t.deepEqual(await outcomes(metrics), { timeout: 1 });
  wx.close();
});

test.serial('a network failure → network, and no retry', async (t) => {
  const scope = nock(WX).get('/sns/jscode2session').query(true).replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
  const { wx } = client();
  const err = await t.throwsAsync(wx.code2Session(APPID, 'c'), { instanceOf: WechatError });
  t.is(err!.kind, 'network');
  t.true(scope.isDone());
  t.is(nock.pendingMocks().length, 0);
  wx.close();
});
