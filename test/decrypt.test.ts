import { createCipheriv, createHash } from 'node:crypto';
import test from 'ava';
import { simulatedOpenid, simulatedSessionKey, startSimulator } from '../src/dev/simulator.js';
import { decryptUserData, unpad, verifySignature } from '../src/wechat/userdata.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

/* WeChat's own example (the "WXBizDataCrypt" demo of its open-data documentation). */
const EXAMPLE = {
  appid: 'wx4f4bc4dec97d474b',
  sessionKey: 'tiihtNczf5v6AKRyjwEUhQ==',
  iv: 'r7BXXKkLb8qrSNn05n0qiA==',
  encryptedData:
    'CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==',
};

test('WeChat\'s published example vector decrypts, watermark checked and kept out of the data', (t) => {
  const r = decryptUserData(EXAMPLE.sessionKey, EXAMPLE.encryptedData, EXAMPLE.iv, EXAMPLE.appid);
  if (!r.ok) return t.fail(r.message);
  t.is(r.data.nickName, 'Band');
  t.is(r.data.openId, 'oGZUI0egBJY1zhBYw2KhdUfwVJJE');
  t.is(r.data.unionId, 'ocMvos6NjeKLIBqg5Mr9QjxrP1FA');
  t.is(r.data.watermark, undefined);
  t.deepEqual(r.watermark, { appid: EXAMPLE.appid, timestamp: 1477314187 });

  const other = decryptUserData(EXAMPLE.sessionKey, EXAMPLE.encryptedData, EXAMPLE.iv, APPID);
  t.like(other, { ok: false, reason: 'watermark' });
  const wrongKey = decryptUserData(simulatedSessionKey(APPID, 'x'), EXAMPLE.encryptedData, EXAMPLE.iv, EXAMPLE.appid);
  t.like(wrongKey, { ok: false, reason: 'decrypt' });
});

test('PKCS#7 padding is checked byte by byte', (t) => {
  const block = (tail: number[]) => Buffer.concat([Buffer.alloc(16 - tail.length, 0x41), Buffer.from(tail)]);
  t.deepEqual(unpad(block([3, 3, 3])), Buffer.alloc(13, 0x41));
  t.deepEqual(unpad(Buffer.alloc(16, 16)), Buffer.alloc(0));
  t.is(unpad(block([2, 3, 3])), undefined, 'one pad byte differs');
  t.is(unpad(block([3, 2, 3])), undefined);
  t.is(unpad(block([0])), undefined, 'zero is no pad length');
  t.is(unpad(block([17])), undefined, 'longer than a block');
  t.is(unpad(Buffer.alloc(15, 1)), undefined, 'not whole blocks');
});

test('signatures are compared as digests; malformed ones simply fail', (t) => {
  const key = simulatedSessionKey(APPID, 'sig.1');
  const raw = '{"nickName":"Band"}';
  const good = createHash('sha1').update(raw + key).digest('hex');
  t.true(verifySignature(raw, good, key));
  t.true(verifySignature(raw, good.toUpperCase(), key));
  t.false(verifySignature(raw + ' ', good, key));
  t.false(verifySignature(raw, good.slice(0, 38), key));
  t.false(verifySignature(raw, 'zz' + good.slice(2), key));
});

/* ---- through the gateway, with the simulator: once on the memory store, once on a real redis-server ---- */

/** Encrypts `plain` (any bytes) the way WeChat does, padding by hand so tests can also pad badly. */
function encryptRaw(sessionKey: string, plain: Buffer, opts: { iv?: Buffer; pad?: Buffer } = {}): { encryptedData: string; iv: string } {
  const iv = opts.iv ?? Buffer.alloc(16, 7);
  const n = 16 - (plain.length % 16);
  const padded = Buffer.concat([plain, opts.pad ?? Buffer.alloc(n, n)]);
  const c = createCipheriv('aes-128-cbc', Buffer.from(sessionKey, 'base64'), iv);
  c.setAutoPadding(false);
  return { encryptedData: Buffer.concat([c.update(padded), c.final()]).toString('base64'), iv: iv.toString('base64') };
}

/** Open data for the login with `code`, made in the test with node:crypto (the simulator's key is deterministic). */
function vector(code: string, data: object, watermark: object = { appid: APPID, timestamp: 1_700_000_000 }) {
  const key = simulatedSessionKey(APPID, code);
  const rawData = JSON.stringify(data);
  return {
    ...encryptRaw(key, Buffer.from(JSON.stringify({ ...data, watermark }))),
    rawData,
    signature: createHash('sha1').update(rawData + key).digest('hex'),
  };
}

let sim: Awaited<ReturnType<typeof startSimulator>>;
let redis: RedisServer;
const gateways: Record<'memory' | 'redis', TestGateway> = {} as never;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  redis = await startRedis();
  gateways.memory = await startTestGateway(testConfig({ apiBase: sim.url }));
  gateways.redis = await startTestGateway(
    testConfig({ apiBase: sim.url, session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'dec:' } } }),
  );
});
test.after.always(async () => {
  await gateways.memory?.close();
  await gateways.redis?.close();
  await sim?.close();
  await redis?.close();
});

const post = (base: string, path: string, body: unknown, headers: Record<string, string> = {}) =>
  request(base, {
    method: 'POST',
    path,
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function devEncrypt(body: object) {
  const res = await post(sim.url, '/dev/encrypt', body);
  if (res.status !== 200) throw new Error(`dev/encrypt: ${res.status} ${res.text}`);
  return res.json as { encryptedData: string; iv: string; rawData: string; signature: string };
}

const PROFILE = { nickName: '小明', gender: 1, city: 'Guangzhou', avatarUrl: 'https://thirdwx.qlogo.cn/x/0' };

for (const kind of ['memory', 'redis'] as const) {
  const gw = () => gateways[kind];
  /** user names unique per store, as the simulator's codes are single-use */
  const u = (name: string) => `${kind}-${name}`;

  test(`${kind}: /wx/decrypt opens data made with the user's session_key (simulator /dev/encrypt and node:crypto)`, async (t) => {
    const token = await login(gw().url, `${u('dana')}.1`);
    const made = await devEncrypt({ appid: APPID, user: u('dana'), data: PROFILE });
    t.deepEqual(JSON.parse(made.rawData), PROFILE);

    const res = await post(gw().url, '/wx/decrypt', made, bearer(token));
    t.is(res.status, 200, res.text);
    t.deepEqual(res.json, { data: PROFILE }, 'the watermark is checked and left out');
    t.is(res.headers['cache-control'], 'no-store');

    const own = vector(`${u('dana')}.1`, { stepInfoList: [{ timestamp: 1, step: 42 }] });
    const res2 = await post(gw().url, '/wx/decrypt', { encryptedData: own.encryptedData, iv: own.iv }, bearer(token));
    t.is(res2.status, 200, res2.text);
    t.deepEqual(res2.json.data, { stepInfoList: [{ timestamp: 1, step: 42 }] });

    // by openid and by code, the simulator gives the same key for this login
    const byOpenid = await devEncrypt({ appid: APPID, openid: simulatedOpenid(APPID, u('dana')), data: { a: 1 } });
    const byCode = await devEncrypt({ appid: APPID, code: `${u('dana')}.1`, data: { a: 1 } });
    for (const m of [byOpenid, byCode]) t.is((await post(gw().url, '/wx/decrypt', m, bearer(token))).status, 200);

    const logs = gw().logs.join('\n');
    for (const secret of [token, made.encryptedData, made.signature, simulatedSessionKey(APPID, `${u('dana')}.1`), '小明', 'Guangzhou']) {
      t.false(logs.includes(secret), 'nothing of the token, key, ciphertext or data is logged');
    }
  });

  test(`${kind}: bad padding and tampered ciphertext are 400 decrypt_failed`, async (t) => {
    const code = `${u('erin')}.1`;
    const token = await login(gw().url, code);
    const key = simulatedSessionKey(APPID, code);
    const plain = Buffer.from(JSON.stringify({ a: 'x', watermark: { appid: APPID, timestamp: 1 } }));
    const n = 16 - (plain.length % 16);
    const pads = [Buffer.alloc(n, 0), Buffer.alloc(n, 17), Buffer.concat([Buffer.alloc(n - 1, (n + 1) % 256), Buffer.from([n])])];
    if (n === 1) pads.pop(); // a one-byte pad has no other bytes to get wrong
    for (const pad of pads) {
      const res = await post(gw().url, '/wx/decrypt', encryptRaw(key, plain, { pad }), bearer(token));
      t.is(res.status, 400, res.text);
      t.is(res.json.error, 'decrypt_failed');
    }
    // valid pad, but the plaintext is not JSON
    const notJson = await post(gw().url, '/wx/decrypt', encryptRaw(key, Buffer.from('not json at all')), bearer(token));
    t.like(notJson, { status: 400, json: { error: 'decrypt_failed' } });

    const good = vector(code, { a: 1 });
    const ct = Buffer.from(good.encryptedData, 'base64');
    ct[3]! ^= 0x40; // garbles the whole first block
    const tampered = await post(gw().url, '/wx/decrypt', { encryptedData: ct.toString('base64'), iv: good.iv }, bearer(token));
    t.like(tampered, { status: 400, json: { error: 'decrypt_failed' } });
    const iv = Buffer.from(good.iv, 'base64');
    iv[0]! ^= 0x01; // "{" becomes "z"
    const badIv = await post(gw().url, '/wx/decrypt', { encryptedData: good.encryptedData, iv: iv.toString('base64') }, bearer(token));
    t.like(badIv, { status: 400, json: { error: 'decrypt_failed' } });
    t.is((await post(gw().url, '/wx/decrypt', good, bearer(token))).status, 200, 'the untampered one passes');
  });

  test(`${kind}: a watermark of another app or without timestamp is 400 watermark_mismatch`, async (t) => {
    const code = `${u('finn')}.1`;
    const token = await login(gw().url, code);
    for (const watermark of [{ appid: 'wx4f4bc4dec97d474b', timestamp: 1 }, { appid: APPID }, {}]) {
      const res = await post(gw().url, '/wx/decrypt', vector(code, { a: 1 }, watermark), bearer(token));
      t.is(res.status, 400, res.text);
      t.is(res.json.error, 'watermark_mismatch');
    }
    const none = encryptRaw(simulatedSessionKey(APPID, code), Buffer.from('{"a":1}'));
    t.like(await post(gw().url, '/wx/decrypt', none, bearer(token)), { status: 400, json: { error: 'watermark_mismatch' } });
  });

  test(`${kind}: rawData + signature are verified: 400 signature_invalid`, async (t) => {
    const token = await login(gw().url, `${u('gus')}.1`);
    const made = await devEncrypt({ appid: APPID, user: u('gus'), data: PROFILE });
    const ok = await post(gw().url, '/wx/decrypt', made, bearer(token));
    t.is(ok.status, 200);
    const forged = await post(gw().url, '/wx/decrypt', { ...made, rawData: made.rawData.replace('小明', '小红') }, bearer(token));
    t.like(forged, { status: 400, json: { error: 'signature_invalid' } });
    const wrong = await post(gw().url, '/wx/decrypt', { ...made, signature: 'a'.repeat(40) }, bearer(token));
    t.like(wrong, { status: 400, json: { error: 'signature_invalid' } });
  });

  test(`${kind}: missing fields, non-base64 and wrong lengths are 400 invalid_request; no token is 401`, async (t) => {
    const token = await login(gw().url, `${u('hal')}.1`);
    const good = vector(`${u('hal')}.1`, { a: 1 });
    const cases: object[] = [
      {},
      { iv: good.iv },
      { encryptedData: good.encryptedData },
      { encryptedData: good.encryptedData, iv: '' },
      { encryptedData: 42, iv: good.iv },
      { encryptedData: good.encryptedData, iv: 'not base64!!' },
      { encryptedData: 'not base64 %%%', iv: good.iv },
      { encryptedData: good.encryptedData, iv: Buffer.alloc(12).toString('base64') },
      { encryptedData: Buffer.alloc(20).toString('base64'), iv: good.iv },
      { encryptedData: good.encryptedData.slice(0, -4), iv: good.iv },
      { encryptedData: good.encryptedData, iv: good.iv, rawData: good.rawData },
      { encryptedData: good.encryptedData, iv: good.iv, signature: good.signature },
      { encryptedData: good.encryptedData, iv: good.iv, rawData: good.rawData, signature: 'xyz' },
    ];
    for (const body of cases) {
      const res = await post(gw().url, '/wx/decrypt', body, bearer(token));
      t.is(res.status, 400, JSON.stringify(body));
      t.is(res.json.error, 'invalid_request');
      t.is(typeof res.json.message, 'string');
    }
    t.like(await post(gw().url, '/wx/decrypt', '{"encryptedData":', bearer(token)), { status: 400, json: { error: 'invalid_json' } });
    t.like(await post(gw().url, '/wx/decrypt', good), { status: 401, json: { error: 'unauthorized' } });
    t.like(await post(gw().url, '/wx/decrypt', good, bearer('x'.repeat(59))), { status: 401, json: { error: 'unauthorized' } });
    const get = await request(gw().url, { path: '/wx/decrypt', headers: bearer(token) });
    t.like(get, { status: 405, json: { error: 'method_not_allowed' } });
  });

  test(`${kind}: after a second login elsewhere, the first device's old data is 401 session_key_stale`, async (t) => {
    const [c1, c2] = [`${u('ivy')}.phone`, `${u('ivy')}.tablet`];
    const phone = await login(gw().url, c1);
    const oldData = vector(c1, { device: 'phone' });
    t.is((await post(gw().url, '/wx/decrypt', oldData, bearer(phone))).status, 200, 'before the second login it opens');

    const tablet = await login(gw().url, c2); // WeChat rotated ivy's session_key
    const newData = vector(c2, { device: 'tablet' });

    // the phone's data was made with the key of its own login, which is gone: it must log in again
    const stale = await post(gw().url, '/wx/decrypt', oldData, bearer(phone));
    t.is(stale.status, 401, stale.text);
    t.is(stale.json.error, 'session_key_stale');
    t.regex(stale.json.message, /log in again/);
    const noSignature = { encryptedData: oldData.encryptedData, iv: oldData.iv };
    t.like(await post(gw().url, '/wx/decrypt', noSignature, bearer(phone)), { status: 401, json: { error: 'session_key_stale' } });

    // data made for the current key opens for either session of the user (it is the user's own key)
    t.deepEqual((await post(gw().url, '/wx/decrypt', newData, bearer(tablet))).json, { data: { device: 'tablet' } });
    t.deepEqual((await post(gw().url, '/wx/decrypt', newData, bearer(phone))).json, { data: { device: 'tablet' } });

    // the newest session holds the current key: old data there is simply undecryptable, not stale
    t.like(await post(gw().url, '/wx/decrypt', noSignature, bearer(tablet)), { status: 400, json: { error: 'decrypt_failed' } });
    t.like(await post(gw().url, '/wx/decrypt', oldData, bearer(tablet)), { status: 400, json: { error: 'signature_invalid' } });

    // the phone logs in again: its new session is the newest, its new data opens
    const phone2 = await login(gw().url, `${u('ivy')}.phone2`);
    t.is((await post(gw().url, '/wx/decrypt', vector(`${u('ivy')}.phone2`, { d: 3 }), bearer(phone2))).status, 200);
    t.like(await post(gw().url, '/wx/decrypt', newData, bearer(tablet)), { status: 401, json: { error: 'session_key_stale' } });
  });

  test(`${kind}: /login with encryptedData answers the data next to the token`, async (t) => {
    const code = `${u('jo')}.1`;
    const made = await devEncrypt({ appid: APPID, code, data: PROFILE }); // by code: before the login happens
    const res = await post(gw().url, '/login', { code, ...made });
    t.is(res.status, 200, res.text);
    t.deepEqual(Object.keys(res.json).sort(), ['data', 'expires_in', 'token']);
    t.deepEqual(res.json.data, PROFILE);
    const s = await request(gw().url, { path: '/session', headers: bearer(res.json.token) });
    t.is(s.status, 200);
  });

  test(`${kind}: /login with bad open data fails: 400, no session, the code is spent`, async (t) => {
    // malformed fields are refused before WeChat is asked: the code is still good afterwards
    const code = `${u('kim')}.1`;
    const malformed = await post(gw().url, '/login', { code, encryptedData: 'AAAA', iv: 'short' });
    t.like(malformed, { status: 400, json: { error: 'invalid_request' } });
    const good = await post(gw().url, '/login', { code, ...vector(code, { ok: true }) });
    t.is(good.status, 200, good.text);

    const code2 = `${u('kim')}.2`;
    const wrongKey = await post(gw().url, '/login', { code: code2, ...vector(code, { ok: true }) });
    t.like(wrongKey, { status: 400, json: { error: 'signature_invalid' } });
    t.false('token' in wrongKey.json);
    const forApp = await post(gw().url, '/login', { code: `${u('kim')}.3`, ...vector(`${u('kim')}.3`, { a: 1 }, { appid: 'wx4f4bc4dec97d474b', timestamp: 1 }) });
    t.like(forApp, { status: 400, json: { error: 'watermark_mismatch' } });
    const again = await post(gw().url, '/login', { code: code2 });
    t.like(again, { status: 401, json: { error: 'code_used' } }, 'the remembered session of the failed login is gone');
  });
}

test('the simulator\'s /dev/encrypt refuses what it cannot do', async (t) => {
  const bad = async (body: unknown, status = 400) => {
    const res = await post(sim.url, '/dev/encrypt', body);
    t.is(res.status, status, JSON.stringify(body));
    t.is(typeof res.json.message, 'string');
  };
  await bad({ appid: APPID, user: 'never-logged-in', data: {} }, 404);
  await bad({ appid: 'wx4f4bc4dec97d474b', code: 'a.1', data: {} });
  await bad({ appid: APPID, code: 'a.1' });
  await bad({ appid: APPID, code: 'a.1', user: 'a', data: {} });
  await bad({ appid: APPID, data: {} });
  await bad('not json');
  const made = await devEncrypt({ appid: APPID, code: 'dev.1', data: { x: 1 }, timestamp: 123 });
  const r = decryptUserData(simulatedSessionKey(APPID, 'dev.1'), made.encryptedData, made.iv, APPID);
  t.like(r, { ok: true, data: { x: 1 }, watermark: { appid: APPID, timestamp: 123 } });
  t.true(verifySignature(made.rawData, made.signature, simulatedSessionKey(APPID, 'dev.1')));
});
