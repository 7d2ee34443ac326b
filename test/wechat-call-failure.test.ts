/**
 * How a failed WeChat call that needs an access_token is answered (src/wechat/call-failure.ts, used by
 * scan-to-login, follow-QR, /wx/phone and the session_key checks).
 */
import test from 'ava';
import { GatewayError } from '../src/base/errors.js';
import { wechatCallFailure } from '../src/wechat/call-failure.js';
import { AccessTokenError } from '../src/wechat/token-sources.js';
import { WechatError } from '../src/wechat/types.js';
import { APPID } from './helpers/gateway.js';

function logger() {
  const lines: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  return { lines, warn: (obj: object, msg: string) => lines.push({ obj: obj as Record<string, unknown>, msg }) };
}

test('no access_token: 503 wechat_unavailable with Retry-After 5, nothing logged here (the token code logs its own failure)', (t) => {
  const log = logger();
  const e = wechatCallFailure(new AccessTokenError(APPID, 'WeChat refused the app secret'), APPID, 'the QR code', log);
  t.is(e.code, 'wechat_unavailable');
  t.is(e.status, 503);
  t.is(e.headers?.['Retry-After'], '5');
  t.deepEqual(log.lines, []);
});

test("WeChat's per-minute limit (45011): 429 with a Retry-After to the next minute, on every API, not only the login", (t) => {
  for (const api of ['getwxacodeunlimit', 'qrcode/create', 'getuserphonenumber']) {
    const e = wechatCallFailure(new WechatError('errcode', api, 45011, 'api minute-quota reach limit'), APPID, 'call', logger());
    t.is(e.status, 429, api);
    t.is(e.code, 'wechat_rate_limited', api);
    const after = Number(e.headers?.['Retry-After']);
    t.true(after >= 1 && after <= 60, `${api}: Retry-After ${after}`);
    t.notRegex(e.message, /log in/, `${api}: the message is not the login's`);
  }
});

test("WeChat's other failures: the errcode table's answer, logged once with what failed and WeChat's errmsg", (t) => {
  const log = logger();
  const e = wechatCallFailure(new WechatError('errcode', 'getwxacodeunlimit', -1, 'system error'), APPID, 'WeChat did not make the QR code', log);
  t.is(e.code, 'wechat_unavailable');
  t.is(e.headers?.['Retry-After'], undefined);
  t.deepEqual(log.lines, [{ obj: { appid: APPID, kind: 'errcode', errcode: -1, errmsg: 'system error' }, msg: 'WeChat did not make the QR code' }]);
  t.is(wechatCallFailure(new WechatError('timeout', 'getwxacodeunlimit'), APPID, 'x').code, 'wechat_timeout');
});

test('anything that is not WeChat\'s is thrown on, not turned into a WeChat error', (t) => {
  const bug = new TypeError('a bug');
  t.is(t.throws(() => wechatCallFailure(bug, APPID, 'x')), bug);
  const already = new GatewayError('not_found');
  t.is(t.throws(() => wechatCallFailure(already, APPID, 'x')), already);
});
