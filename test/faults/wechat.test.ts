import test, { type ExecutionContext } from 'ava';
import nock from 'nock';
import { SECRET, startTestGateway, testConfig, APPID, type TestGateway } from '../helpers/gateway.js';
import { sleep } from '../helpers/wait.js';
import { request, type Reply } from '../helpers/http.js';
import { metricValue, scrape } from '../helpers/metrics.js';

/**
 * When WeChat's API fails, as the mini-program sees it: POST /login on a real gateway in this
 * process; nock stands in for api.weixin.qq.com (only for it: loopback stays real). The client's own
 * handling of each answer is in test/wechat-client.test.ts; here: the catalogue's answer, exactly one
 * call to jscode2session (never an automatic retry: the code may be spent), and nothing secret in
 * the answer or the log. Serial: nock is global.
 */
const WX = 'https://api.weixin.qq.com';
const PATH = '/sns/jscode2session';
const TIMEOUT = 300;
let gw: TestGateway;
/** Every code sent in this file, to look for in the logs. */
const codes: string[] = [];

test.before(async () => {
  nock.disableNetConnect();
  nock.enableNetConnect(/^(127\.0\.0\.1|localhost|[^:]*\.invalid)(:\d+)?$/);
  gw = await startTestGateway(wechatConfig(WX));
});
test.afterEach.always(() => nock.cleanAll());
test.after.always(async () => {
  await gw?.close();
  nock.enableNetConnect();
});

function wechatConfig(apiBase: string, timeout = TIMEOUT) {
  return { ...testConfig({ apiBase }), wechat: { apiBase, timeout: `${timeout}ms`, apps: [{ appid: APPID, secret: SECRET }] } };
}

/** WeChat answering every jscode2session call with `reply` (after `delay` ms); counts the calls. */
function wechat(reply: (scope: nock.Interceptor) => nock.Scope, delay = 0): { calls: () => number } {
  let calls = 0;
  const interceptor = nock(WX)
    .get(PATH)
    .query((q) => q.appid === APPID && q.secret === SECRET && q.grant_type === 'authorization_code')
    .times(5);
  const scope = reply(delay ? interceptor.delay(delay) : interceptor);
  scope.on('request', () => calls++);
  return { calls: () => calls };
}

async function postLogin(code: string, on = gw): Promise<Reply & { ms: number }> {
  codes.push(code);
  const start = Date.now();
  const res = await request(on.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
  return { ...res, ms: Date.now() - start };
}

/** The catalogue's answer, and nothing of the secret or the code in it. */
function answered(t: ExecutionContext, res: Reply, status: number, error: string, code: string): void {
  t.is(res.status, status, res.text);
  t.is(res.json?.error, error);
  t.is(typeof res.json?.message, 'string');
  t.is(res.json?.token, undefined);
  t.false(res.text.includes(SECRET), 'no secret in the answer');
  t.false(res.text.includes(code), 'no code in the answer');
}

/** No log line so far holds the secret or any code sent. */
function cleanLogs(t: ExecutionContext, logs = gw.logs): void {
  for (const line of logs) {
    t.false(line.includes(SECRET), `secret in the log: ${line}`);
    for (const code of codes) t.false(line.includes(code), `a login code in the log: ${line}`);
  }
}

test.serial('WeChat answering an HTML error page → 502 wechat_error, one call, nothing secret in the answer or the log', async (t) => {
  const code = 'fault-html-page-0a1b2c';
  // an error page that reflects the request, as some proxies' do
  const wx = wechat((s) =>
    s.reply(502, `<html><body>Bad gateway: GET ${PATH}?appid=${APPID}&secret=${SECRET}&js_code=${code}</body></html>`, { 'content-type': 'text/html' }),
  );
  answered(t, await postLogin(code), 502, 'wechat_error', code);
  t.is(wx.calls(), 1);
  cleanLogs(t);
});

test.serial('WeChat answering truncated JSON → 502 wechat_error, one call', async (t) => {
  const code = 'fault-truncated-3d4e5f';
  const wx = wechat((s) => s.reply(200, `{"openid":"o-truncated","session_key":"${SECRET}${code}`, { 'content-type': 'application/json' }));
  answered(t, await postLogin(code), 502, 'wechat_error', code);
  t.is(wx.calls(), 1);
  cleanLogs(t);
});

test.serial('WeChat answering 200 with errcode -1 (busy) → 503 wechat_unavailable, and jscode2session is not retried', async (t) => {
  const code = 'fault-busy-6a7b8c';
  const wx = wechat((s) => s.reply(200, { errcode: -1, errmsg: `system error, js_code: ${code}` }));
  answered(t, await postLogin(code), 503, 'wechat_unavailable', code);
  await sleep(200); // a retry in the background would show by now
  t.is(wx.calls(), 1, 'exactly one call: the code may already be spent');
  t.true(gw.logs.some((l) => l.includes('WeChat refused the login') && l.includes('"errcode":-1')), 'the log names the errcode');
  cleanLogs(t);
});

test.serial('WeChat answering 200 with errcode 40125 (our secret is wrong) → 502 wechat_error, and the log says what to check', async (t) => {
  const code = 'fault-badsecret-9d0e1f';
  const wx = wechat((s) => s.reply(200, { errcode: 40125, errmsg: `invalid appsecret ${SECRET}, rid: 66aa-1` }));
  answered(t, await postLogin(code), 502, 'wechat_error', code);
  t.is(wx.calls(), 1);
  t.true(gw.logs.some((l) => l.includes('"errcode":40125') && l.includes('secret is wrong')), 'the log gives the hint');
  cleanLogs(t);
});

test.serial('WeChat slower than wechat.timeout → 504 wechat_timeout at the timeout, and jscode2session is not retried', async (t) => {
  const code = 'fault-slow-2a3b4c';
  const wx = wechat((s) => s.reply(200, { openid: 'o-late', session_key: 'c2Vzc2lvbg==' }), 3 * TIMEOUT);
  const res = await postLogin(code);
  answered(t, res, 504, 'wechat_timeout', code);
  // not before the timeout; the upper bound only keeps out a hang (the 504 itself says the deadline ended it)
  t.true(res.ms >= TIMEOUT - 20 && res.ms < TIMEOUT + 3000, `answered after ${res.ms} ms (wechat.timeout ${TIMEOUT} ms)`);
  await sleep(3 * TIMEOUT); // past the moment WeChat would have answered
  t.is(wx.calls(), 1, 'exactly one call: WeChat may have spent the code anyway');
  cleanLogs(t);
});

test.serial("WeChat's host name not resolving (DNS failure) → 503 wechat_unavailable at once, one attempt", async (t) => {
  // a generous wechat.timeout: the answer must come from the failed lookup, not from the deadline
  const dns = await startTestGateway(wechatConfig('http://wxgate-nonexistent.invalid', 3000));
  t.teardown(() => dns.close());
  const code = 'fault-dns-5d6e7f';
  const res = await postLogin(code, dns);
  answered(t, res, 503, 'wechat_unavailable', code);
  t.true(res.ms < 3000, `answered after ${res.ms} ms, before the 3 s deadline (which would be a 504)`);
  const text = await scrape(dns.url);
  t.is(metricValue(text, 'wxgate_wechat_requests_total', { api: 'jscode2session', outcome: 'network' }), 1, 'one attempt, failed as network');
  t.true(dns.logs.some((l) => l.includes('ENOTFOUND')), 'the log names the failure');
  t.false(dns.logs.some((l) => l.includes('wxgate-nonexistent.invalid/sns')), 'but not the request URL');
  cleanLogs(t, dns.logs);
});

test.serial('every WeChat failure above was counted once, by outcome, and the gateway still logs users in', async (t) => {
  const text = await scrape(gw.url);
  const outcome = (o: string) => metricValue(text, 'wxgate_wechat_requests_total', { api: 'jscode2session', outcome: o });
  t.deepEqual(
    { bad_response: outcome('bad_response'), busy: outcome('errcode_-1'), secret: outcome('errcode_40125'), timeout: outcome('timeout') },
    { bad_response: 2, busy: 1, secret: 1, timeout: 1 },
  );
  const wx = wechat((s) => s.reply(200, { openid: 'o-fine', session_key: 'c2Vzc2lvbg==' }));
  const res = await postLogin('fault-fine-8a9b0c');
  t.is(res.status, 200);
  t.is(wx.calls(), 1);
  t.false(gw.logs.some((l) => l.includes(res.json.token)), 'the token is never logged');
  cleanLogs(t);
});
