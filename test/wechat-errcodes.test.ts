import test from 'ava';
import { ERRORS } from '../src/base/errors.js';
import { ERRCODES, hintFor, isPassing, isTokenError, nextMinuteRetryAfter, wechatErrorFor } from '../src/wechat/errcodes.js';
import { WechatError } from '../src/wechat/types.js';

/** The one errcode table: what the gateway answers for each, by API, and what the retries read from it. */
const refused = (api: string, errcode: number) => new WechatError('errcode', api, errcode, 'errmsg');

test('a spent or invalid code is answered by the API that refused it', (t) => {
  t.is(wechatErrorFor(refused('jscode2session', 40029)), 'code_invalid');
  t.is(wechatErrorFor(refused('jscode2session', 40163)), 'code_used');
  t.is(wechatErrorFor(refused('jscode2session', 40226)), 'user_blocked');
  t.is(wechatErrorFor(refused('oauth2_access_token', 40029)), 'code_invalid');
  t.is(wechatErrorFor(refused('oauth2_access_token', 40163)), 'code_used');
  // 40226 means a blocked user only at a mini-program login
  t.is(wechatErrorFor(refused('oauth2_access_token', 40226)), 'wechat_error');
  t.is(wechatErrorFor(refused('getuserphonenumber', 40029)), 'phone_code_invalid');
  t.is(wechatErrorFor(refused('getwxacodeunlimit', 40029)), 'wechat_error');
});

test('busy, rate limited and quota: the same for every API; other errcodes and failures by kind', (t) => {
  for (const api of ['jscode2session', 'getuserphonenumber', 'qrcode_create']) {
    t.is(wechatErrorFor(refused(api, -1)), 'wechat_unavailable');
    t.is(wechatErrorFor(refused(api, 45011)), 'wechat_rate_limited');
    t.is(wechatErrorFor(refused(api, 45009)), 'wechat_quota_exceeded');
    t.is(wechatErrorFor(refused(api, 40125)), 'wechat_error');
    t.is(wechatErrorFor(refused(api, 99999)), 'wechat_error');
  }
  t.is(wechatErrorFor(new WechatError('timeout', 'jscode2session')), 'wechat_timeout');
  t.is(wechatErrorFor(new WechatError('network', 'jscode2session')), 'wechat_unavailable');
  t.is(wechatErrorFor(new WechatError('bad_response', 'jscode2session')), 'wechat_error');
});

test('token-invalid and passing failures, as AccessTokens reads them', (t) => {
  t.deepEqual([40001, 40014, 42001, 41001, 40013, -1].filter((c) => isTokenError(refused('user_info', c))), [40001, 40014, 42001]);
  t.false(isTokenError(new WechatError('timeout', 'user_info')));
  t.true(isPassing(refused('stable_token', -1)));
  t.true(isPassing(new WechatError('timeout', 'stable_token')));
  t.true(isPassing(new WechatError('bad_response', 'stable_token', undefined, 'HTTP 503')));
  t.false(isPassing(refused('stable_token', 40125)));
  t.false(isPassing(refused('stable_token', 45009)));
  t.false(isPassing(new Error('not a WeChat failure')));
});

test('every answer the table names is in the catalogue; hints for what an operator can fix', (t) => {
  for (const [errcode, row] of Object.entries(ERRCODES)) {
    for (const code of [row.error, ...Object.values(row.byApi ?? {})]) if (code) t.true(code in ERRORS, `${errcode}: ${code}`);
    t.true(row.errmsg.length > 0, `${errcode} has WeChat's errmsg`);
  }
  t.regex(hintFor(40125) ?? '', /secret is wrong/);
  t.regex(hintFor(40164) ?? '', /whitelist/);
  t.is(hintFor(40029), undefined);
  t.is(hintFor(undefined), undefined);
});

test('Retry-After for 45011 is the seconds to the next minute', (t) => {
  t.is(nextMinuteRetryAfter(Date.UTC(2026, 0, 1, 12, 0, 15)), '45');
  t.is(nextMinuteRetryAfter(Date.UTC(2026, 0, 1, 12, 0, 59, 500)), '1');
  t.is(nextMinuteRetryAfter(Date.UTC(2026, 0, 1, 12, 1, 0)), '60');
});
