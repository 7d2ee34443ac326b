import test from 'ava';
import { createMetrics } from '../src/metrics/metrics.js';
import { WechatClient } from '../src/wechat/client.js';
import { simulatedOpenid, simulatedUnionid, startSimulator } from '../src/dev/simulator.js';
import { WechatError } from '../src/wechat/types.js';

/** The simulator on a free port, exercised through the real client (no nock). */
const APP_A = 'wxaaaaaaaaaaaaaaaa';
const APP_B = 'wxbbbbbbbbbbbbbbbb';
const APPS = { [APP_A]: 'secret-a-0123456789', [APP_B]: 'secret-b-0123456789' };
const OPENID = /^o[A-Za-z0-9_-]{27}$/;

type Sim = Awaited<ReturnType<typeof startSimulator>>;
let sim: Sim;
let wx: WechatClient;

function clientFor(url: string, timeout = 2000, apps: Record<string, string> = APPS) {
  const metrics = createMetrics({ defaultMetrics: false });
  const client = new WechatClient({ apiBase: url, timeout, apps: Object.entries(apps).map(([appid, secret]) => ({ appid, secret })), metrics });
  return { client, metrics };
}

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: APPS });
  wx = clientFor(sim.url).client;
});
test.after.always(async () => {
  wx?.close();
  await sim?.close();
});

async function wechatError(t: import('ava').ExecutionContext, p: Promise<unknown>): Promise<WechatError> {
  const err = await t.throwsAsync(p, { instanceOf: WechatError });
  return err!;
}

test('startSimulator listens on a free port and gives its URL', (t) => {
  t.regex(sim.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.not(sim.url, 'http://127.0.0.1:0');
});

test('a login gives a WeChat-like openid and a 16-byte session_key', async (t) => {
  const s = await wx.code2Session(APP_A, 'carol.1');
  t.regex(s.openid, OPENID);
  t.is(s.openid, simulatedOpenid(APP_A, 'carol'));
  t.regex(s.sessionKey, /^[A-Za-z0-9+/]{22}==$/);
  t.is(Buffer.from(s.sessionKey, 'base64').length, 16);
  t.false('unionid' in s);
});

test('openids are deterministic: the same code gives the same openid in a fresh simulator', async (t) => {
  const other = await startSimulator(0, '127.0.0.1', { apps: APPS });
  const { client } = clientFor(other.url);
  try {
    const here = await wx.code2Session(APP_A, 'dave.1');
    const there = await client.code2Session(APP_A, 'dave.1');
    t.is(here.openid, there.openid);
    t.is(here.sessionKey, there.sessionKey);
  } finally {
    client.close();
    await other.close();
  }
});

test('alice.1 and alice.2 are the same user with different session keys; bob and other apps differ', async (t) => {
  const a1 = await wx.code2Session(APP_A, 'alice.1');
  const a2 = await wx.code2Session(APP_A, 'alice.2');
  const plain = await wx.code2Session(APP_A, 'alice');
  const bob = await wx.code2Session(APP_A, 'bob.1');
  const inB = await wx.code2Session(APP_B, 'alice.1');
  t.is(a1.openid, a2.openid);
  t.is(a1.openid, plain.openid);
  t.not(a1.sessionKey, a2.sessionKey);
  t.not(bob.openid, a1.openid);
  t.not(inB.openid, a1.openid, 'openids are per app');
});

test('a code works once: the second time is errcode 40163, in that app only', async (t) => {
  await wx.code2Session(APP_A, 'erin.1');
  const err = await wechatError(t, wx.code2Session(APP_A, 'erin.1'));
  t.is(err.kind, 'errcode');
  t.is(err.errcode, 40163);
  t.regex(err.errmsg ?? '', /^code been used, rid: /);
  // The same text is another code in another app.
  t.regex((await wx.code2Session(APP_B, 'erin.1')).openid, OPENID);
});

test('unionid only for users named union*, the same in every app', async (t) => {
  const a = await wx.code2Session(APP_A, 'union-bob.1');
  const b = await wx.code2Session(APP_B, 'union-bob.2');
  t.regex(a.unionid ?? '', OPENID);
  t.is(a.unionid, b.unionid);
  t.is(a.unionid, simulatedUnionid('union-bob'));
  t.not(a.openid, b.openid);
  t.not((await wx.code2Session(APP_A, 'union-eve.1')).unionid, a.unionid);
  t.is((await wx.code2Session(APP_A, 'frank.1')).unionid, undefined);
});

for (const errcode of [40029, 45011, 40226, -1]) {
  test(`fail-${errcode} answers errcode ${errcode}, every time`, async (t) => {
    for (let i = 0; i < 2; i++) {
      const err = await wechatError(t, wx.code2Session(APP_A, `fail-${errcode}`));
      t.is(err.kind, 'errcode');
      t.is(err.errcode, errcode);
      t.truthy(err.errmsg);
    }
  });
}

test('a slow code beyond the client timeout → timeout; within it, a normal login', async (t) => {
  // a wide margin between the two, so a busy machine does not turn the normal login into a timeout
  const { client, metrics } = clientFor(sim.url, 700);
  try {
    const start = performance.now();
    const err = await wechatError(t, client.code2Session(APP_A, 'slow-5000'));
    t.is(err.kind, 'timeout');
    t.true(performance.now() - start < 3000);
    const ok = performance.now();
    const s = await client.code2Session(APP_A, 'slow-80.1');
    t.true(performance.now() - ok >= 75);
    t.is(s.openid, simulatedOpenid(APP_A, 'slow-80'));
    const { values } = await metrics.wechatRequests.get();
    t.deepEqual(Object.fromEntries(values.map((v) => [v.labels.outcome, v.value])), { timeout: 1, ok: 1 });
  } finally {
    client.close();
  }
});

for (const code of ['garbage', 'html', 'nojson-openid']) {
  test(`${code} → bad_response`, async (t) => {
    const err = await wechatError(t, wx.code2Session(APP_A, code));
    t.is(err.kind, 'bad_response');
  });
}

test('with apps given, an unknown appid gets 40013 and a wrong secret 40125', async (t) => {
  const { client } = clientFor(sim.url, 2000, { wxcccccccccccccccc: 'whatever-secret', [APP_A]: 'wrong-secret-value' });
  try {
    t.is((await wechatError(t, client.code2Session('wxcccccccccccccccc', 'x.1'))).errcode, 40013);
    const err = await wechatError(t, client.code2Session(APP_A, 'x.1'));
    t.is(err.errcode, 40125);
    t.false(err.message.includes('wrong-secret-value'));
  } finally {
    client.close();
  }
});

test('without apps, any appid and secret are accepted', async (t) => {
  const open = await startSimulator(0);
  const { client } = clientFor(open.url, 2000, { wxdddddddddddddddd: 'any' });
  try {
    t.regex((await client.code2Session('wxdddddddddddddddd', 'gina.1')).openid, OPENID);
  } finally {
    client.close();
    await open.close();
  }
});

test('missing parameters get WeChat errcodes, unknown paths a 404, always JSON', async (t) => {
  const get = async (path: string) => {
    const res = await fetch(`${sim.url}${path}`);
    return { status: res.status, body: (await res.json()) as { errcode?: number; errmsg?: string } };
  };
  const secret = APPS[APP_A];
  t.is((await get(`/sns/jscode2session?secret=${secret}&js_code=c&grant_type=authorization_code`)).body.errcode, 41002);
  t.is((await get(`/sns/jscode2session?appid=${APP_A}&js_code=c&grant_type=authorization_code`)).body.errcode, 41004);
  const noCode = await get(`/sns/jscode2session?appid=${APP_A}&secret=${secret}&grant_type=authorization_code`);
  t.deepEqual([noCode.status, noCode.body.errcode], [200, 41008]);
  const ok = await get(`/sns/jscode2session?appid=${APP_A}&secret=${secret}&js_code=hank.1&grant_type=authorization_code`);
  t.is(ok.status, 200);
  t.is(ok.body.errcode, undefined, 'a success has no errcode, as at WeChat');
  const noGrant = await get(`/cgi-bin/token?appid=${APP_A}&secret=${secret}`);
  t.deepEqual([noGrant.status, noGrant.body.errcode], [200, 40002], 'cgi-bin/token without grant_type');
  const lost = await get('/cgi-bin/no_such_api');
  t.deepEqual([lost.status, lost.body.errcode], [404, -1]);
});

test('latencyMs delays every answer', async (t) => {
  const laggy = await startSimulator(0, '127.0.0.1', { latencyMs: 120 });
  const { client } = clientFor(laggy.url, 2000);
  try {
    const start = performance.now();
    await client.code2Session(APP_A, 'ivan.1');
    t.true(performance.now() - start >= 115);
  } finally {
    client.close();
    await laggy.close();
  }
});

test('the client keeps connections alive: sequential logins share one socket, concurrent ones at most 64', async (t) => {
  const own = await startSimulator(0, '127.0.0.1', { apps: APPS });
  let connections = 0;
  own.server.on('connection', () => connections++);
  const { client } = clientFor(own.url);
  try {
    for (let i = 0; i < 30; i++) await client.code2Session(APP_A, `seq.${i}`);
    t.is(connections, 1);
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => client.code2Session(APP_A, `par.${i}`)));
    t.is(new Set(results.map((r) => r.openid)).size, 1);
    t.true(connections <= 64, `${connections} connections`);
  } finally {
    client.close();
    await own.close();
  }
});

test('close() resolves while a client still holds an idle keep-alive connection', async (t) => {
  const own = await startSimulator(0);
  const { client } = clientFor(own.url);
  await client.code2Session(APP_A, 'judy.1');
  const closed = await Promise.race([own.close().then(() => 'closed'), new Promise((r) => setTimeout(r, 2000, 'hung'))]);
  client.close();
  t.is(closed, 'closed');
});
