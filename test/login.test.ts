import test from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  gw = await startTestGateway(testConfig({ apiBase: sim.url }));
});
test.after.always(async () => {
  await gw?.close();
  await sim?.close();
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  request(gw.url, {
    method: 'POST',
    path,
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

async function wechatCalls(): Promise<number> {
  const m = await gw.metrics.wechatRequests.get();
  return m.values.reduce((n, v) => n + v.value, 0);
}

test('a wx.login code becomes an opaque token; session_key never leaves', async (t) => {
  const res = await post('/login', { code: 'login-ok.1' });
  t.is(res.status, 200);
  t.regex(res.json.token, /^[A-Za-z0-9_-]{59}$/);
  t.is(res.json.expires_in, 7200);
  t.deepEqual(Object.keys(res.json).sort(), ['expires_in', 'token']);
  t.is(res.headers['cache-control'], 'no-store');
  t.notRegex(res.text, /session_?key/i);
  t.false(gw.logs.some((l) => l.includes(res.json.token)), 'the token is never logged');
});

test('/session answers for a live token; /logout kills it at once', async (t) => {
  const { json } = await post('/login', { code: 'carol.1' });
  const auth = { authorization: `Bearer ${json.token}` };
  const s = await request(gw.url, { path: '/session', headers: auth });
  t.is(s.status, 200);
  t.regex(s.json.openid, /^o[A-Za-z0-9_-]{27}$/);
  t.is(s.json.appid, APPID);
  t.true(s.json.expires_in > 7100 && s.json.expires_in <= 7200);
  t.is(s.json.session_key, undefined);

  const out = await post('/logout', '', auth);
  t.is(out.status, 204);
  const after = await request(gw.url, { path: '/session', headers: auth });
  t.is(after.status, 401);
  t.is(after.json.error, 'unauthorized');
  t.regex(String(after.headers['www-authenticate']), /^Bearer /);
});

test('the same user logging in again gets a new token, and both work', async (t) => {
  const a = (await post('/login', { code: 'dave.1' })).json.token;
  const b = (await post('/login', { code: 'dave.2' })).json.token;
  t.not(a, b);
  const sa = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${a}` } });
  const sb = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${b}` } });
  t.is(sa.json.openid, sb.json.openid);
});

const wechatErrors: Array<[string, number, string, number | undefined]> = [
  ['fail-40029', 401, 'code_invalid', 40029],
  ['fail-45011', 429, 'wechat_rate_limited', 45011],
  ['fail-45009', 503, 'wechat_quota_exceeded', 45009],
  ['fail-40226', 403, 'user_blocked', 40226],
  ['fail--1', 503, 'wechat_unavailable', -1],
  ['fail-61234', 502, 'wechat_error', 61234],
  ['garbage', 502, 'wechat_error', undefined],
  ['html', 502, 'wechat_error', undefined],
  ['slow-1500', 504, 'wechat_timeout', undefined],
];

for (const [code, status, error, errcode] of wechatErrors) {
  test.serial(`WeChat answering ${code} → ${status} ${error}`, async (t) => {
    const count = async () => (await gw.metrics.logins.get()).values.find((v) => v.labels.result === error)?.value ?? 0;
    const before = await count();
    const res = await post('/login', { code });
    t.is(res.status, status);
    t.is(res.json.error, error);
    t.is(typeof res.json.message, 'string');
    t.is(res.json.token, undefined);
    if (errcode !== undefined) {
      t.true(
        gw.logs.some((l) => l.includes('"errcode":' + errcode) && l.includes('WeChat refused the login')),
        'the log says which errcode came back',
      );
    }
    t.is((await count()) - before, 1, 'the login is counted under its error code');
    for (const line of gw.logs) {
      t.false(line.includes(SECRET), 'no secret in the log');
      t.false(line.includes(`"${code}"`), 'no code in the log');
    }
  });
}

test("WeChat's per-user minute limit (45011): 429 with Retry-After to the next minute boundary, a message that does not blame the app", async (t) => {
  const secondsToNextMinute = (ms: number) => Math.ceil((60_000 - (ms % 60_000)) / 1000);
  const t0 = Date.now();
  const res = await post('/login', { code: 'fail-45011' });
  const t1 = Date.now();
  t.is(res.status, 429);
  t.is(res.json.error, 'wechat_rate_limited');
  const after = Number(res.headers['retry-after']);
  const [a, b] = [secondsToNextMinute(t0), secondsToNextMinute(t1)];
  // between the two ends (or, if a minute boundary passed during the request, on either side of it)
  const ok = a >= b ? after <= a && after >= b : after <= a || after >= b;
  t.true(Number.isInteger(after) && after >= 1 && after <= 60 && ok, `Retry-After ${res.headers['retry-after']} (expected ${a}..${b})`);
  t.regex(res.json.message, /one user|per user/i);
  t.notRegex(res.json.message, /this app/i);
});

test("WeChat's daily quota used up (45009): 503 wechat_quota_exceeded, logged as an error and counted as such", async (t) => {
  const res = await post('/login', { code: 'fail-45009' });
  t.is(res.status, 503);
  t.is(res.json.error, 'wechat_quota_exceeded');
  t.regex(res.json.message, /daily/);
  const line = gw.logs.map((l) => JSON.parse(l)).find((l) => l.errcode === 45009);
  t.is(line?.level, 50, 'at level error, for the operator');
  t.is(line?.error, 'wechat_quota_exceeded');
  const counted = (await gw.metrics.logins.get()).values.find((v) => v.labels.result === 'wechat_quota_exceeded');
  t.true((counted?.value ?? 0) >= 1);
});

test('a code WeChat says was used (40163) answers 401 code_used', async (t) => {
  const res = await post('/login', { code: 'fail-40163' });
  t.is(res.status, 401);
  t.is(res.json.error, 'code_used');
});

test('the same code again within its life gets the same answer, without asking WeChat again', async (t) => {
  const first = await post('/login', { code: 'erin.1' });
  t.is(first.status, 200);
  const again = await post('/login', { code: 'erin.1' });
  t.is(again.status, 200);
  t.is(again.json.token, first.json.token);
  const rejected = await post('/login', { code: 'fail-40029' });
  const rejectedAgain = await post('/login', { code: 'fail-40029' });
  t.is(rejected.json.error, 'code_invalid');
  t.is(rejectedAgain.json.error, 'code_invalid');
});

test('WeChat unreachable → 503 wechat_unavailable, and the gateway keeps serving', async (t) => {
  const dead = await startTestGateway(testConfig({ apiBase: 'http://127.0.0.1:1' }));
  t.teardown(() => dead.close());
  const res = await request(dead.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: '{"code":"x1"}' });
  t.is(res.status, 503);
  t.is(res.json.error, 'wechat_unavailable');
  t.is((await request(dead.url, { path: '/healthz' })).status, 200);
});

const badBodies: Array<[string, string, Record<string, string>, number, string]> = [
  ['no body', '', {}, 400, 'invalid_request'],
  ['empty code', '{"code":""}', {}, 400, 'invalid_request'],
  ['code not a string', '{"code":123}', {}, 400, 'invalid_request'],
  ['oversized code', JSON.stringify({ code: 'a'.repeat(200) }), {}, 400, 'invalid_request'],
  ['code with spaces', '{"code":"a b"}', {}, 400, 'invalid_request'],
  ['malformed JSON', '{"code":', {}, 400, 'invalid_json'],
  ['a JSON array', '["x"]', {}, 400, 'invalid_json'],
  ['a body over the limit', JSON.stringify({ code: 'x1', pad: 'p'.repeat(5000) }), {}, 413, 'payload_too_large'],
  ['a form body', 'code=x1', { 'content-type': 'application/x-www-form-urlencoded' }, 415, 'unsupported_media_type'],
  ['an appid not served here', JSON.stringify({ code: 'x1', appid: 'wxffffffffffffffff' }), {}, 400, 'unknown_appid'],
];

for (const [what, body, headers, status, error] of badBodies) {
  test.serial(`/login with ${what} → ${status} ${error}, WeChat not called`, async (t) => {
    const calls = await wechatCalls();
    const res = await post('/login', body, headers);
    t.is(res.status, status);
    t.is(res.json.error, error);
    t.is(typeof res.json.message, 'string');
    t.is(await wechatCalls(), calls);
  });
}

test('own endpoints answer other methods with 405 JSON', async (t) => {
  const res = await request(gw.url, { path: '/login' });
  t.is(res.status, 405);
  t.is(res.json.error, 'method_not_allowed');
  t.is(res.headers.allow, 'POST');
});

test('/session and /logout without a usable token → 401 with WWW-Authenticate', async (t) => {
  for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: `Bearer ${'A'.repeat(59)}` }] as Array<Record<string, string>>) {
    const s = await request(gw.url, { path: '/session', headers });
    t.is(s.status, 401);
    t.regex(String(s.headers['www-authenticate']), /^Bearer realm="wxgate"/);
  }
  t.is((await post('/logout', '', {})).status, 401);
});

test('health and readiness', async (t) => {
  t.deepEqual((await request(gw.url, { path: '/healthz' })).json, { status: 'ok' });
  const ready = await request(gw.url, { path: '/readyz' });
  t.is(ready.status, 200);
  t.is(ready.json.store, 'memory');
});

test('/metrics counts logins by result and WeChat calls by outcome', async (t) => {
  await post('/login', { code: 'metrics-user.1' });
  const res = await request(gw.url, { path: '/metrics' });
  t.is(res.status, 200);
  t.regex(res.text, /wxgate_logins_total\{result="ok"\} [1-9]/);
  t.regex(res.text, /wxgate_wechat_requests_total\{api="jscode2session",outcome="ok"\} [1-9]/);
  t.regex(res.text, /wxgate_wechat_requests_total\{api="jscode2session",outcome="errcode_40029"\} 1/);
  t.regex(res.text, /wxgate_http_requests_total\{route="login",method="POST",status="200"\} [1-9]/);
  t.regex(res.text, /wxgate_process_resident_memory_bytes/);
  t.notRegex(res.text, /metrics-user/);
});

test('with metrics.port set, metrics are served only on their own listener', async (t) => {
  const own = await startTestGateway(testConfig({ apiBase: sim.url, metrics: { port: 0 } }));
  t.teardown(() => own.close());
  t.truthy(own.metricsUrl);
  const res = await request(own.metricsUrl!, { path: '/metrics' });
  t.is(res.status, 200);
  t.regex(res.text, /wxgate_http_requests_total|wxgate_logins_total/);
  t.is((await request(own.metricsUrl!, { path: '/login' })).status, 404);
  const main = await request(own.url, { path: '/metrics' });
  t.is(main.status, 404);
  t.is(main.json.error, 'not_found');
});
