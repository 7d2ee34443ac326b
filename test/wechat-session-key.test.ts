import { createHmac } from 'node:crypto';
import test from 'ava';
import nock from 'nock';
import { createMetrics } from '../src/metrics/metrics.js';
import { loginStateSignature, WechatClient } from '../src/wechat/client.js';
import { WechatError } from '../src/wechat/types.js';

/**
 * wxa/checksession and wxa/resetusersessionkey in the WeChat client (issue 16 item 3), nock standing in
 * for WeChat: the documented request (GET, access_token, openid, signature = hmac_sha256 keyed with the
 * session_key over "", sig_method), 87009 as "no longer valid", other errcodes, timeouts, and nothing of
 * the key, its signature or the access_token in an error.
 */
const WX = 'https://api.weixin.qq.com';
const APPID = 'wx0123456789abcdef';
const TOKEN = 'ACCESS_TOKEN_0123456789abcdef';
const OPENID = 'oGZUI0egBJY1zhBYw2KhdUfwVJJE';
const KEY = 'o0q0otL8aEzpcZL/FT9WsQ==';

test.before(() => {
  nock.disableNetConnect();
  nock.enableNetConnect(/127\.0\.0\.1|localhost/);
});
test.afterEach.always(() => nock.cleanAll());
test.after.always(() => nock.enableNetConnect());

// a generous default: nock answers at once, and a loaded machine must not turn that into a timeout;
// the timeout tests pass their own, well under their delayed answers
function client(timeout = 5000) {
  const metrics = createMetrics({ defaultMetrics: false });
  return { metrics, wx: new WechatClient({ apiBase: WX, timeout, apps: [{ appid: APPID, secret: 'secret-0123456789' }], metrics }) };
}

/** Captures the one request to `path` and answers `body`. */
function expect(path: string, body: object | string, opts: { delay?: number } = {}) {
  const seen: { query?: URLSearchParams } = {};
  const scope = nock(WX)
    .get((uri) => {
      if (!uri.startsWith(`${path}?`)) return false;
      seen.query = new URL(uri, WX).searchParams;
      return true;
    })
    .delay(opts.delay ?? 0)
    .reply(200, body, { 'content-type': 'text/plain' });
  return { seen, scope };
}

function noSecrets(t: import('ava').ExecutionContext, err: unknown): void {
  const sig = loginStateSignature(KEY);
  for (const text of [String((err as Error).message), String((err as WechatError).errmsg), JSON.stringify(err), String((err as Error).stack)]) {
    for (const s of [KEY, sig, TOKEN]) t.false(text.includes(s), `${s.slice(0, 6)}… in ${text}`);
  }
}

test('the login state signature is WeChat\'s: its published example, keyed with the base64 text of the session_key', (t) => {
  // WeChat's "user login state signature" page: hmac_sha256('{"foo":"bar"}', 'o0q0otL8aEzpcZL/FT9WsQ==')
  t.is(loginStateSignature(KEY, '{"foo":"bar"}'), '654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b');
  t.is(loginStateSignature(KEY), createHmac('sha256', KEY).update('').digest('hex'));
  t.regex(loginStateSignature(KEY), /^[0-9a-f]{64}$/);
});

test.serial('checkSessionKey: the documented GET; errcode 0 is valid, 87009 is not; counted per outcome', async (t) => {
  const { wx, metrics } = client();
  const ok = expect('/wxa/checksession', { errcode: 0, errmsg: 'ok' });
  t.true(await wx.checkSessionKey(TOKEN, OPENID, KEY));
  t.true(ok.scope.isDone());
  const q = ok.seen.query!;
  t.deepEqual([...q.keys()].sort(), ['access_token', 'openid', 'sig_method', 'signature']);
  t.is(q.get('access_token'), TOKEN);
  t.is(q.get('openid'), OPENID);
  t.is(q.get('sig_method'), 'hmac_sha256');
  t.is(q.get('signature'), loginStateSignature(KEY));
  t.false([...q.values()].includes(KEY), 'the session_key itself is never sent');

  expect('/wxa/checksession', { errcode: 87009, errmsg: 'invalid signature' });
  t.false(await wx.checkSessionKey(TOKEN, OPENID, KEY));
  const { values } = await metrics.wechatRequests.get();
  const byOutcome = Object.fromEntries(values.filter((v) => v.labels.api === 'checksession').map((v) => [v.labels.outcome, v.value]));
  t.deepEqual(byOutcome, { ok: 1, errcode_87009: 1 });
  wx.close();
});

test.serial('checkSessionKey: other errcodes, timeouts and bad answers throw, with nothing secret in the error', async (t) => {
  const { wx } = client(200);
  const sig = loginStateSignature(KEY);
  expect('/wxa/checksession', { errcode: 40001, errmsg: `invalid credential ${TOKEN} ${sig} ${KEY}` });
  const e1 = await t.throwsAsync(wx.checkSessionKey(TOKEN, OPENID, KEY), { instanceOf: WechatError });
  t.is(e1!.errcode, 40001);
  noSecrets(t, e1);
  expect('/wxa/checksession', { errcode: 0 }, { delay: 1000 });
  const e2 = await t.throwsAsync(wx.checkSessionKey(TOKEN, OPENID, KEY), { instanceOf: WechatError });
  t.is(e2!.kind, 'timeout');
  expect('/wxa/checksession', 'not json');
  const e3 = await t.throwsAsync(wx.checkSessionKey(TOKEN, OPENID, KEY), { instanceOf: WechatError });
  t.is(e3!.kind, 'bad_response');
  wx.close();
});

test.serial('resetUserSessionKey: the documented GET; answers the new key; 87009 and answers without a key throw', async (t) => {
  const { wx } = client();
  const ok = expect('/wxa/resetusersessionkey', { errcode: 0, errmsg: 'ok', openid: OPENID, session_key: 'bmV3LWtleS0xMjM0NTY3OA==' });
  t.deepEqual(await wx.resetUserSessionKey(TOKEN, OPENID, KEY), { openid: OPENID, sessionKey: 'bmV3LWtleS0xMjM0NTY3OA==' });
  const q = ok.seen.query!;
  t.deepEqual([...q.keys()].sort(), ['access_token', 'openid', 'sig_method', 'signature']);
  t.is(q.get('signature'), loginStateSignature(KEY));
  t.is(q.get('sig_method'), 'hmac_sha256');

  expect('/wxa/resetusersessionkey', { errcode: 87009, errmsg: `invalid signature ${loginStateSignature(KEY)}` });
  const e1 = await t.throwsAsync(wx.resetUserSessionKey(TOKEN, OPENID, KEY), { instanceOf: WechatError });
  t.is(e1!.errcode, 87009);
  noSecrets(t, e1);
  expect('/wxa/resetusersessionkey', { errcode: 0, errmsg: 'ok', openid: OPENID });
  t.is((await t.throwsAsync(wx.resetUserSessionKey(TOKEN, OPENID, KEY), { instanceOf: WechatError }))!.kind, 'bad_response');
  expect('/wxa/resetusersessionkey', { errcode: 0, errmsg: 'ok', openid: 'o-someone-else', session_key: 'eA==' });
  t.is((await t.throwsAsync(wx.resetUserSessionKey(TOKEN, OPENID, KEY), { instanceOf: WechatError }))!.kind, 'bad_response');
  wx.close();
});
