import test from 'ava';
import nock from 'nock';
import { createMetrics } from '../src/metrics/metrics.js';
import { WechatClient } from '../src/wechat/client.js';
import { MpCrypto, MpCryptoError, mpSignature } from '../src/wechat/mp-crypto.js';
import { WechatError } from '../src/wechat/types.js';
import { APPID, SECRET, startTestGateway, testConfig } from './helpers/gateway.js';
import { request } from './helpers/http.js';

/**
 * Official Account follow-QR login against WeChat's own shapes, with nock standing in for WeChat:
 * cgi-bin/qrcode/create (request body, answer, errors, redaction), POST /qr/tickets through the shared
 * access_token service, and the message crypto against the known answer of WeChat's sample code.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const APP_TOKEN = 'APP_ACCESS_TOKEN_value_9876543210';
const WX_TICKET = 'gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==';

let host = 0;
const base = () => `https://wxmp-${++host}.example`;

test.before(() => {
  nock.disableNetConnect();
  nock.enableNetConnect(/127\.0\.0\.1|localhost/);
});
test.after.always(() => {
  nock.cleanAll();
  nock.enableNetConnect();
});

// a generous timeout: nock answers at once, and a loaded machine must not turn that into a timeout
const client = (apiBase: string) => new WechatClient({ apiBase, timeout: 5000, apps: [{ appid: MP, secret: MP_SECRET }], metrics: createMetrics({ defaultMetrics: false }) });

test('qrcodeCreate: POST with the access_token, QR_STR_SCENE, scene_str and expire_seconds; the answer mapped', async (t) => {
  const api = base();
  let sent: unknown;
  const scope = nock(api)
    .post('/cgi-bin/qrcode/create')
    .query({ access_token: APP_TOKEN })
    .reply(200, (_uri, body) => {
      sent = body;
      return { ticket: WX_TICKET, expire_seconds: 120, url: 'http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI' };
    });
  const qr = await client(api).qrcodeCreate(APP_TOKEN, { sceneStr: 'abc_DEF-123', expireSeconds: 120 });
  t.true(scope.isDone());
  t.deepEqual(sent, { expire_seconds: 120, action_name: 'QR_STR_SCENE', action_info: { scene: { scene_str: 'abc_DEF-123' } } });
  t.deepEqual(qr, { ticket: WX_TICKET, expireSeconds: 120, url: 'http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI' });
});

test('qrcodeCreate: an errcode is a WechatError without the access_token; no ticket is a bad response', async (t) => {
  const api = base();
  nock(api).post('/cgi-bin/qrcode/create').query(true).reply(200, { errcode: 40001, errmsg: `invalid credential, access_token is invalid or not latest ${APP_TOKEN}` });
  const err = await t.throwsAsync(client(api).qrcodeCreate(APP_TOKEN, { sceneStr: 'x', expireSeconds: 60 }), { instanceOf: WechatError });
  t.is(err!.errcode, 40001);
  t.false(`${err!.message} ${err!.errmsg}`.includes(APP_TOKEN));
  nock(api).post('/cgi-bin/qrcode/create').query(true).reply(200, { expire_seconds: 60 });
  const bad = await t.throwsAsync(client(api).qrcodeCreate(APP_TOKEN, { sceneStr: 'x', expireSeconds: 60 }), { instanceOf: WechatError });
  t.is(bad!.kind, 'bad_response');
  await t.throwsAsync(client(api).qrcodeCreate(APP_TOKEN, { sceneStr: 'x'.repeat(65), expireSeconds: 60 }), { message: /scene_str/ });
});

test('mpUserInfo: GET cgi-bin/user/info with the access_token and openid; the unionid when given; another openid is a bad response', async (t) => {
  const api = base();
  const OPENID = 'oAbCdEfGhIjKlMnOpQrStUvWxYz0';
  nock(api)
    .get('/cgi-bin/user/info')
    .query({ access_token: APP_TOKEN, openid: OPENID, lang: 'zh_CN' })
    .reply(200, { subscribe: 1, openid: OPENID, nickname: 'x', subscribe_time: 1382694957, unionid: 'o6_bmasdasdsad6_2sgVt7hMZOPfL' });
  t.deepEqual(await client(api).mpUserInfo(APP_TOKEN, OPENID), { subscribed: true, unionid: 'o6_bmasdasdsad6_2sgVt7hMZOPfL' });
  nock(api).get('/cgi-bin/user/info').query(true).reply(200, { subscribe: 0, openid: OPENID });
  t.deepEqual(await client(api).mpUserInfo(APP_TOKEN, OPENID), { subscribed: false });
  nock(api).get('/cgi-bin/user/info').query(true).reply(200, { subscribe: 1, openid: 'oSomeoneElse' });
  const err = await t.throwsAsync(client(api).mpUserInfo(APP_TOKEN, OPENID), { instanceOf: WechatError });
  t.is(err!.kind, 'bad_response');
});

async function gateway(api: string) {
  return startTestGateway(
    testConfig({
      apiBase: api,
      wechat: { apiBase: api, timeout: '1500ms', apps: [{ appid: APPID, secret: SECRET }] },
      web: { publicUrl: 'https://pc.example.com', mpQr: { appid: MP, secret: MP_SECRET, token: 'tok123', ticketTtl: '5m' } },
    }),
  );
}

test.serial('POST /qr/tickets: the OA\'s access_token from stable_token, expire_seconds from web.mpQr.ticketTtl, qr on mp.weixin.qq.com', async (t) => {
  const api = base();
  let tokenAsked: unknown;
  let created: { expire_seconds?: number; action_info?: { scene: { scene_str: string } } } = {};
  nock(api)
    .post('/cgi-bin/stable_token')
    .reply(200, (_u, body) => ((tokenAsked = body), { access_token: APP_TOKEN, expires_in: 7200 }))
    .post('/cgi-bin/qrcode/create')
    .query({ access_token: APP_TOKEN })
    .reply(200, (_u, body) => ((created = body as typeof created), { ticket: WX_TICKET, expire_seconds: 300, url: 'http://weixin.qq.com/q/x' }));
  const gw = await gateway(api);
  try {
    const res = await request(gw.url, { method: 'POST', path: '/qr/tickets' });
    t.is(res.status, 201, res.text);
    t.deepEqual(tokenAsked, { grant_type: 'client_credential', appid: MP, secret: MP_SECRET, force_refresh: false });
    t.is(created.expire_seconds, 300);
    t.is(created.action_info?.scene.scene_str, res.json.ticket, 'the scene is the ticket');
    t.is(res.json.expires_in, 300);
    t.is(res.json.qr, `https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=${encodeURIComponent(WX_TICKET)}`);
  } finally {
    await gw.close();
  }
});

test.serial('POST /qr/tickets: WeChat\'s failures are answered like the other web logins\' (502, 503, 504), never a ticket', async (t) => {
  const api = base();
  nock(api).post('/cgi-bin/stable_token').reply(200, { access_token: APP_TOKEN, expires_in: 7200 });
  nock(api).post('/cgi-bin/qrcode/create').query(true).reply(200, { errcode: 61234, errmsg: 'something unexpected' });
  nock(api).post('/cgi-bin/qrcode/create').query(true).reply(200, { errcode: 45009, errmsg: 'reach max api daily quota limit' });
  nock(api).post('/cgi-bin/qrcode/create').query(true).reply(200, { errcode: -1, errmsg: 'system error' });
  nock(api).post('/cgi-bin/qrcode/create').query(true).delay(4000).reply(200, { ticket: WX_TICKET, expire_seconds: 300 });
  const gw = await gateway(api);
  try {
    for (const [status, error] of [[502, 'wechat_error'], [503, 'wechat_quota_exceeded'], [503, 'wechat_unavailable'], [504, 'wechat_timeout']] as const) {
      const res = await request(gw.url, { method: 'POST', path: '/qr/tickets' });
      t.is(res.status, status, res.text);
      t.is(res.json.error, error);
      t.is(res.json.ticket, undefined);
    }
    t.false(gw.logs.join('\n').includes(APP_TOKEN), 'no access_token in the logs');
    t.false(gw.logs.join('\n').includes(MP_SECRET), 'no secret in the logs');
  } finally {
    await gw.close();
  }
});

test.serial('a follow-QR login goes on without a unionid when cgi-bin/user/info fails (48001: the account may not call it)', async (t) => {
  const api = base();
  nock(api)
    .post('/cgi-bin/stable_token')
    .reply(200, { access_token: APP_TOKEN, expires_in: 7200 })
    .post('/cgi-bin/qrcode/create')
    .query(true)
    .reply(200, { ticket: WX_TICKET, expire_seconds: 300 })
    .get('/cgi-bin/user/info')
    .query(true)
    .reply(200, { errcode: 48001, errmsg: 'api unauthorized' });
  const gw = await gateway(api);
  try {
    const tk = (await request(gw.url, { method: 'POST', path: '/qr/tickets' })).json as { ticket: string; secret: string };
    const timestamp = String(Math.floor(Date.now() / 1000));
    const q = new URLSearchParams({ signature: mpSignature('tok123', timestamp, '7'), timestamp, nonce: '7' });
    const ev = `<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oFollower0123456789abcdefgh]]></FromUserName><CreateTime>${timestamp}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[${tk.ticket}]]></EventKey><Ticket><![CDATA[${WX_TICKET}]]></Ticket></xml>`;
    const pushed = await request(gw.url, { method: 'POST', path: `/wx/mp/events?${q}`, headers: { 'content-type': 'text/xml' }, body: ev });
    t.is(pushed.text, 'success');
    const res = await request(gw.url, { path: `/qr/tickets/${tk.ticket}`, headers: { 'x-scan-secret': tk.secret } });
    t.is(res.json.status, 'confirmed', res.text);
    const cookie = String(res.headers['set-cookie']).split(';')[0]!;
    const session = await request(gw.url, { path: '/session', headers: { cookie } });
    t.is(session.json.openid, 'oFollower0123456789abcdefgh');
    t.is(session.json.unionid, undefined);
    t.true(gw.logs.some((l) => l.includes('cgi-bin/user/info failed')), 'a warning');
    t.false(gw.logs.join('\n').includes(APP_TOKEN));
  } finally {
    await gw.close();
  }
});

// ---- message crypto: the known answer of WeChat's sample (WXBizMsgCrypt) ----

const SAMPLE = {
  token: 'spamtest',
  key: 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG',
  appid: 'wx2c2769f8efd9abc2',
  timestamp: '1409735669',
  nonce: '1320562132',
  msgSignature: '5d197aaffba7e9b25a30732f161a50dee96bd5fa',
  encrypt:
    'hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=',
};

test('msg_signature and decryption match WeChat\'s sample message', (t) => {
  t.is(mpSignature(SAMPLE.token, SAMPLE.timestamp, SAMPLE.nonce, SAMPLE.encrypt), SAMPLE.msgSignature);
  const xml = new MpCrypto(SAMPLE.key, SAMPLE.appid).decrypt(SAMPLE.encrypt);
  t.true(xml.startsWith('<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>'), xml);
  t.true(xml.includes('<Content><![CDATA[abcdteT]]></Content>'));
  t.true(xml.endsWith('</xml>'));
  // the same key, another appid: refused (the appid is inside the ciphertext)
  t.throws(() => new MpCrypto(SAMPLE.key, 'wx0000000000000000').decrypt(SAMPLE.encrypt), { instanceOf: MpCryptoError });
});

test('encrypt: random(16) + length + message + appid, PKCS#7 to 32 bytes; decrypts back; tampering is refused', (t) => {
  const c = new MpCrypto(SAMPLE.key, SAMPLE.appid);
  for (const msg of ['', 'a', '已登录', 'x'.repeat(31), 'x'.repeat(1000)]) {
    const enc = c.encrypt(msg);
    t.is(Buffer.from(enc, 'base64').length % 32, 0, 'whole 32-byte blocks');
    t.is(c.decrypt(enc), msg);
    t.not(c.encrypt(msg), enc, 'a random prefix each time');
  }
  const enc = Buffer.from(c.encrypt('hello'), 'base64');
  enc[enc.length - 1] = enc[enc.length - 1]! ^ 1;
  t.throws(() => c.decrypt(enc.toString('base64')), { instanceOf: MpCryptoError });
  t.throws(() => c.decrypt('not base64!'), { instanceOf: MpCryptoError });
  t.throws(() => new MpCrypto('short', SAMPLE.appid));
});
