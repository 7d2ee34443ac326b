import http from 'node:http';
import type { AddressInfo } from 'node:net';
import test, { type ExecutionContext } from 'ava';
import { waitFor } from './helpers/wait.js';
import nock from 'nock';
import { createMetrics, type Metrics } from '../src/metrics/metrics.js';
import { WechatClient } from '../src/wechat/client.js';
import { WechatError } from '../src/wechat/types.js';

/** nock stands in for WeChat only; loopback stays reachable. Tests here are serial: nock is global. */
const APPID = 'wx0123456789abcdef';
const SECRET = 'the-app-secret-value';
const CODE = 'the-login-code-0123';
const WX = 'https://api.weixin.qq.com';
const PATH = '/sns/jscode2session';

test.before(() => {
  nock.disableNetConnect();
  nock.enableNetConnect(/127\.0\.0\.1|localhost/);
});
test.afterEach.always(() => nock.cleanAll());
test.after.always(() => nock.enableNetConnect());

// a generous default: nock answers at once, and a loaded machine must not turn that into a timeout;
// the timeout tests pass their own, well under their delayed answers
function client(timeout = 5000, apiBase = WX) {
  const metrics = createMetrics({ defaultMetrics: false });
  return { metrics, wx: new WechatClient({ apiBase, timeout, apps: [{ appid: APPID, secret: SECRET }], metrics }) };
}

/** outcome label → count, for api="jscode2session". */
async function outcomes(metrics: Metrics) {
  const { values } = await metrics.wechatRequests.get();
  return Object.fromEntries(values.filter((v) => v.labels.api === 'jscode2session').map((v) => [String(v.labels.outcome), v.value]));
}

async function observations(metrics: Metrics) {
  const { values } = await metrics.wechatDuration.get();
  return values.find((v) => v.metricName === 'wxgate_wechat_request_duration_seconds_count' && v.labels.api === 'jscode2session')?.value ?? 0;
}

/** Calls code2Session expecting a WechatError of `kind`, and checks nothing secret leaked into it. */
async function fails(t: ExecutionContext, wx: WechatClient, kind: WechatError['kind'], code = CODE): Promise<WechatError> {
  const err = await t.throwsAsync(wx.code2Session(APPID, code), { instanceOf: WechatError });
  t.is(err!.kind, kind);
  t.is(err!.api, 'jscode2session');
  for (const text of [err!.message, String(err!.errmsg), JSON.stringify(err), String(err!.stack)]) {
    t.false(text.includes(SECRET), `secret in ${text}`);
    t.false(text.includes(code), `code in ${text}`);
  }
  return err!;
}

test.serial('sends the documented request, with the code URL-encoded', async (t) => {
  const code = 'a+b/c=d&secret=x y';
  let rawPath = '';
  const scope = nock(WX)
    .get((uri) => {
      rawPath = uri;
      return uri.startsWith(`${PATH}?`);
    })
    .reply(200, { openid: 'o-openid', session_key: 'c2Vzc2lvbmtleQ==' });
  const { wx, metrics } = client();
  t.deepEqual(await wx.code2Session(APPID, code), { openid: 'o-openid', sessionKey: 'c2Vzc2lvbmtleQ==' });
  t.true(scope.isDone());
  const q = new URL(rawPath, WX).searchParams;
  t.deepEqual([...q.keys()].sort(), ['appid', 'grant_type', 'js_code', 'secret']);
  t.is(q.get('appid'), APPID);
  t.is(q.get('secret'), SECRET);
  t.is(q.get('grant_type'), 'authorization_code');
  t.is(q.get('js_code'), code);
  // The code's "&" and "=" must not make a second "secret" parameter or cut the code short.
  t.true(rawPath.includes('js_code=a%2Bb%2Fc%3Dd%26secret%3Dx+y'), rawPath);
  t.deepEqual(await outcomes(metrics), { ok: 1 });
  t.is(await observations(metrics), 1);
  wx.close();
});

test.serial('keeps a path prefix of apiBase', async (t) => {
  const scope = nock('https://wx-egress.example').get(`/wechat${PATH}`).query(true).reply(200, { openid: 'o1', session_key: 'k' });
  const { wx } = client(5000, 'https://wx-egress.example/wechat/');
  t.deepEqual(await wx.code2Session(APPID, CODE), { openid: 'o1', sessionKey: 'k' });
  t.true(scope.isDone());
  wx.close();
});

test.serial('passes unionid through when WeChat gives one, and leaves it out when empty', async (t) => {
  nock(WX).get(PATH).query(true).reply(200, { openid: 'o1', session_key: 'k', unionid: 'u1' });
  nock(WX).get(PATH).query(true).reply(200, { openid: 'o2', session_key: 'k2', unionid: '' });
  const { wx } = client();
  t.deepEqual(await wx.code2Session(APPID, 'c1'), { openid: 'o1', sessionKey: 'k', unionid: 'u1' });
  const second = await wx.code2Session(APPID, 'c2');
  t.deepEqual(second, { openid: 'o2', sessionKey: 'k2' });
  t.false('unionid' in second);
  wx.close();
});

test.serial('errcode 0 with openid and session_key is a success', async (t) => {
  nock(WX).get(PATH).query(true).reply(200, { errcode: 0, errmsg: 'ok', openid: 'o1', session_key: 'k' });
  const { wx, metrics } = client();
  t.deepEqual(await wx.code2Session(APPID, CODE), { openid: 'o1', sessionKey: 'k' });
  t.deepEqual(await outcomes(metrics), { ok: 1 });
  wx.close();
});

for (const errcode of [40029, 40163, 45011, 40226, -1, 40125, 40013]) {
  test.serial(`errcode ${errcode} → WechatError errcode with errcode and errmsg`, async (t) => {
    nock(WX).get(PATH).query(true).reply(200, { errcode, errmsg: 'something, rid: 6512ab-1' }, { 'content-type': 'text/plain' });
    const { wx, metrics } = client();
    const err = await fails(t, wx, 'errcode');
    t.is(err.errcode, errcode);
    t.is(err.errmsg, 'something, rid: 6512ab-1');
    t.regex(err.message, new RegExp(`errcode ${errcode}\\b`));
    t.deepEqual(await outcomes(metrics), { [`errcode_${errcode}`]: 1 });
    t.is(await observations(metrics), 1);
    wx.close();
  });
}

test.serial('an errmsg that echoes the secret or the code is cut before it reaches the error', async (t) => {
  nock(WX).get(PATH).query(true).reply(200, { errcode: 40029, errmsg: `invalid code ${CODE} for secret ${SECRET}` });
  const { wx } = client();
  const err = await fails(t, wx, 'errcode');
  t.is(err.errmsg, 'invalid code *** for secret ***');
});

const broken: Array<[string, (s: nock.Interceptor) => nock.Scope]> = [
  ['an HTML error page (502)', (s) => s.reply(502, '<html>bad gateway</html>', { 'content-type': 'text/html' })],
  ['HTTP 500 with JSON', (s) => s.reply(500, { openid: 'o1', session_key: 'k' })],
  ['a 200 that is not JSON', (s) => s.reply(200, 'not json at all')],
  ['truncated JSON', (s) => s.reply(200, '{"openid":"o1","session_')],
  ['JSON without openid', (s) => s.reply(200, { session_key: 'k' })],
  ['JSON without session_key', (s) => s.reply(200, { openid: 'o1' })],
  ['an openid that is not a string', (s) => s.reply(200, { openid: 12, session_key: 'k' })],
  ['a JSON array', (s) => s.reply(200, '[1,2]')],
  ['an errcode that is not a number', (s) => s.reply(200, { errcode: 'oops' })],
  ['an answer over 64 KiB', (s) => s.reply(200, { openid: 'o1', session_key: 'k', pad: 'x'.repeat(70 * 1024) })],
];
for (const [what, reply] of broken) {
  test.serial(`${what} → bad_response`, async (t) => {
    reply(nock(WX).get(PATH).query(true));
    const { wx, metrics } = client();
    await fails(t, wx, 'bad_response');
    t.deepEqual(await outcomes(metrics), { bad_response: 1 });
    wx.close();
  });
}

test.serial('slower than the timeout → timeout, at the deadline and not later', async (t) => {
  nock(WX).get(PATH).query(true).delay(2000).reply(200, { openid: 'o', session_key: 'k' });
  const { wx, metrics } = client(300);
  const start = performance.now();
  await fails(t, wx, 'timeout');
  const took = performance.now() - start;
  // not before the deadline, and well before the answer (2 s) would have come, however loaded the machine
  t.true(took >= 290 && took < 1800, `${Math.round(took)} ms`);
  t.deepEqual(await outcomes(metrics), { timeout: 1 });
  t.is(await observations(metrics), 1);
  wx.close();
});

for (const code of ['ECONNREFUSED', 'ENOTFOUND', 'ECONNRESET']) {
  test.serial(`${code} → network, named in the message, and no retry`, async (t) => {
    // An Error, not a plain object: nock 14 never delivers a plain-object error (nock/nock#2789).
    const failure = Object.assign(new Error(`connect ${code} ${WX}${PATH}?secret=${SECRET}&js_code=${CODE}`), { code });
    const scope = nock(WX).get(PATH).query(true).replyWithError(failure);
    const { wx, metrics } = client();
    const err = await fails(t, wx, 'network');
    t.true(err.message.includes(code), err.message);
    t.true(scope.isDone());
    t.deepEqual(nock.pendingMocks(), []);
    t.deepEqual(await outcomes(metrics), { network: 1 });
    wx.close();
  });
}

test.serial('a failed call is not retried: a second interceptor stays unused', async (t) => {
  nock(WX).get(PATH).query(true).reply(200, { errcode: -1, errmsg: 'system error' });
  const second = nock(WX).get(PATH).query(true).reply(200, { openid: 'o1', session_key: 'k' });
  const { wx, metrics } = client();
  await fails(t, wx, 'errcode');
  t.false(second.isDone());
  t.deepEqual(await outcomes(metrics), { 'errcode_-1': 1 });
  wx.close();
});

test.serial('an appid that is not configured is refused without calling WeChat', async (t) => {
  const scope = nock(WX).get(PATH).query(true).reply(200, { openid: 'o1', session_key: 'k' });
  const { wx, metrics } = client();
  const err = await t.throwsAsync(wx.code2Session('wxffffffffffffffff', CODE));
  t.false(err instanceof WechatError);
  t.is(err!.message, 'unknown appid');
  t.false(scope.isDone());
  t.deepEqual(await outcomes(metrics), {});
  wx.close();
});

test.serial('outcomes add up over several calls', async (t) => {
  nock(WX).get(PATH).query(true).times(2).reply(200, { openid: 'o1', session_key: 'k' });
  nock(WX).get(PATH).query(true).reply(200, { errcode: 45011, errmsg: 'api minute-quota reach limit' });
  nock(WX).get(PATH).query(true).reply(200, 'nope');
  const { wx, metrics } = client();
  await wx.code2Session(APPID, 'c1');
  await wx.code2Session(APPID, 'c2');
  await fails(t, wx, 'errcode', 'c3-code');
  await fails(t, wx, 'bad_response', 'c4-code');
  t.deepEqual(await outcomes(metrics), { ok: 2, errcode_45011: 1, bad_response: 1 });
  t.is(await observations(metrics), 4);
  wx.close();
});

/** A loopback server (nock lets 127.0.0.1 through) for failures nock cannot fake: real sockets. */
async function loopback(handler: http.RequestListener): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

test.serial('a real refused connection → network, naming ECONNREFUSED', async (t) => {
  const gone = await loopback(() => {});
  await gone.close();
  const { wx, metrics } = client(2000, gone.url);
  const err = await fails(t, wx, 'network');
  t.regex(err.message, /ECONNREFUSED/);
  t.deepEqual(await outcomes(metrics), { network: 1 });
  wx.close();
});

test.serial('a connection cut in the middle of the answer → network, at once', async (t) => {
  const cut = await loopback((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
    res.write('{"openid":"o1",');
    setTimeout(() => res.socket?.destroy(), 20);
  });
  const { wx, metrics } = client(2000, cut.url);
  const start = performance.now();
  await fails(t, wx, 'network');
  t.true(performance.now() - start < 1000);
  t.deepEqual(await outcomes(metrics), { network: 1 });
  wx.close();
  await cut.close();
});

test.serial('a server that accepts but never answers → timeout at the deadline, and the socket is closed', async (t) => {
  let closed = false;
  const silent = await loopback((req) => req.socket.on('close', () => (closed = true)));
  const { wx, metrics } = client(250, silent.url);
  const start = performance.now();
  await fails(t, wx, 'timeout');
  const took = performance.now() - start;
  // not before the deadline; the upper bound only keeps out a hang (the outcome says it was the timeout)
  t.true(took >= 240 && took < 2500, `${Math.round(took)} ms`);
  await waitFor(() => closed, { message: 'the timed-out request was destroyed' });
  t.deepEqual(await outcomes(metrics), { timeout: 1 });
  wx.close();
  await silent.close();
});
