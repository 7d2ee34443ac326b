/**
 * Who is who, part 1: the identity an upstream trusts (X-Openid / X-Unionid / X-Appid) comes from the
 * session and from nothing a client sends. Real gateway, real upstream, real redis-server, the WeChat
 * simulator; the odd spellings go over raw sockets so that no client library tidies them up.
 */
import test from 'ava';
import { accountId } from '../../src/session/accounts.js';
import { simulatedOpenid } from '../../src/dev/simulator.js';
import { APPID, login, type TestGateway } from '../helpers/gateway.js';
import { rawConnect, rawRequest, request } from '../helpers/http.js';
import { type Seen } from '../helpers/upstream.js';
import { useStack } from '../helpers/stack.js';

const stack = useStack(test, { redis: true });
let gw: TestGateway;
/** a real user, whose session the requests carry */
let token: string;
let me: { openid: string; unionid: string; appid: string };
/** another real user's openid: what an attacker would try to pass for */
const VICTIM = simulatedOpenid(APPID, 'victim');

test.before(async () => {
  await stack.start();
  gw = await stack.gateway({
    routes: [
      { path: '/api/public', upstream: stack.up.url, auth: 'none' },
      { path: '/api', upstream: stack.up.url },
    ],
    session: { store: 'redis', redis: { url: stack.redis.url, keyPrefix: 'identity:' } },
  });
  token = await login(gw.url, 'union-mallory.1');
  const s = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } });
  if (s.status !== 200 || !s.json.unionid) throw new Error(`no session: ${s.text}`);
  me = { openid: s.json.openid, unionid: s.json.unionid, appid: s.json.appid };
});

/** The one request the upstream saw with this marker in its URL (fails the test when there are more). */
function seenOnce(marker: string): Seen | undefined {
  const all = stack.up.seen.filter((s) => s.url.includes(`m=${marker}`));
  if (all.length > 1) throw new Error(`the upstream saw ${all.length} requests for ${marker}`);
  return all[0];
}

/** Every header line the upstream received that names an identity, however spelled: [lower-cased name, value]. */
function identityLines(seen: Seen): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < seen.rawHeaders.length; i += 2) {
    const name = seen.rawHeaders[i]!.toLowerCase();
    if (/^x[-_]?(openid|unionid|appid|wx-phone)$/.test(name.replace(/_/g, '-'))) out.push([name, seen.rawHeaders[i + 1]!]);
  }
  return out.sort(([a], [b]) => a.localeCompare(b));
}

/** Every header value and trailer value the upstream received. */
function allValues(seen: Seen): string[] {
  return [...seen.rawHeaders.filter((_, i) => i % 2 === 1), ...Object.values(seen.trailers).map(String)];
}

const SPOOF = /evil|wxevil|^\+1000000000/;

/** Identity headers as an attacker writes them: every case, "_" for "-", repeated, with the victim's real openid. */
const spoofs: Array<[string, string]> = [
  ['X-Openid', 'evil-1'],
  ['x-openid', VICTIM],
  ['X-OPENID', 'evil-2'],
  ['x-OpEnId', 'evil-3'],
  ['X_Openid', 'evil-4'],
  ['x_openid', VICTIM],
  ['X-Unionid', 'evil-union-1'],
  ['X_UNIONID', 'evil-union-2'],
  ['X-Appid', 'wxevil-1'],
  ['x_appid', 'wxevil-2'],
  ['X-APPID', 'wxevil-3'],
  ['X-Wx-Phone', '+10000000000'],
  ['x_wx_phone', '+10000000001'],
  ['X-User-Id', 'evil-user-1'],
  ['x_user_id', 'evil-user-2'],
];

test('on an auth: required route the upstream sees exactly the session identity, whatever identity headers the client sent', async (t) => {
  const res = await request(gw.url, {
    path: '/api/orders?m=spoof-required',
    headers: [...spoofs, ['Authorization', `Bearer ${token}`]],
  });
  t.is(res.status, 200);
  const seen = seenOnce('spoof-required')!;
  t.truthy(seen, 'the request reached the upstream');
  t.deepEqual(identityLines(seen), [
    ['x-appid', me.appid],
    ['x-openid', me.openid],
    ['x-unionid', me.unionid],
  ]);
  t.deepEqual(seen.rawHeaders.filter((n, i) => i % 2 === 0 && /^x[-_]user[-_]id$/i.test(n)), ['x-user-id'], 'X-User-Id once, the gateway\'s');
  t.is(seen.headers['x-user-id'], accountId(me));
  t.is(me.appid, APPID);
  t.false(allValues(seen).some((v) => SPOOF.test(v) || v.includes(VICTIM)), 'no spoofed value arrives under any name');
  t.is(seen.headers.authorization, undefined, "the gateway's token stays with the gateway");
});

test('on an auth: none route the upstream sees no identity header at all, with or without a token', async (t) => {
  for (const [marker, auth] of [
    ['spoof-public-anon', []],
    ['spoof-public-token', [['Authorization', `Bearer ${token}`]]],
  ] as Array<[string, Array<[string, string]>]>) {
    const res = await request(gw.url, { path: `/api/public/feed?m=${marker}`, headers: [...spoofs, ...auth] });
    t.is(res.status, 200, marker);
    const seen = seenOnce(marker)!;
    t.deepEqual(identityLines(seen), [], marker);
    t.false(allValues(seen).some((v) => SPOOF.test(v) || v.includes(VICTIM) || v.includes(me.openid)), marker);
    t.is(seen.headers.authorization, undefined, marker);
  }
});

test('whitespace around a spoofed value, repeated lines and HTTP/1.0 do not get an identity through (raw socket)', async (t) => {
  const head = (path: string, version: string, extra: string) =>
    `GET ${path} ${version}\r\nHost: shop.example\r\n` +
    'X-Openid:    evil-ws   \r\n' +
    'X-Openid:\tevil-tab\t\r\n' +
    'x-openid:evil-nospace\r\n' +
    'X_Openid:  evil-underscore \r\n' +
    'X-Unionid:  evil-union \r\n' +
    'X-Appid: \t wxevil \t\r\n' +
    `${extra}Connection: close\r\n\r\n`;
  const cases: Array<[string, string, string, boolean]> = [
    ['ws-required', 'HTTP/1.1', `Authorization: Bearer ${token}\r\n`, true],
    ['ws-public', 'HTTP/1.1', '', false],
    ['ws-required-10', 'HTTP/1.0', `Authorization: Bearer ${token}\r\n`, true],
    ['ws-public-10', 'HTTP/1.0', '', false],
  ];
  for (const [marker, version, extra, authed] of cases) {
    const path = authed ? `/api/me?m=${marker}` : `/api/public/x?m=${marker}`;
    const reply = await rawRequest(gw.url, head(path, version, extra));
    t.is(reply.responses[0]?.status, 200, marker);
    const seen = seenOnce(marker)!;
    t.deepEqual(
      identityLines(seen),
      authed
        ? [
            ['x-appid', me.appid],
            ['x-openid', me.openid],
            ['x-unionid', me.unionid],
          ]
        : [],
      marker,
    );
    t.false(allValues(seen).some((v) => SPOOF.test(v)), marker);
  }
});

test("identity headers named in Connection cannot make the gateway's own values disappear", async (t) => {
  const connections = [
    'keep-alive, X-Openid, X-Unionid, X-Appid',
    'X_Openid, x-appid , X-UNIONID',
    'close, x-openid',
  ];
  for (const [i, connection] of connections.entries()) {
    const marker = `conn-${i}`;
    const res = await request(gw.url, {
      path: `/api/me?m=${marker}`,
      headers: [
        ['Connection', connection],
        ['X-Openid', 'evil-conn'],
        ['Authorization', `Bearer ${token}`],
      ],
    });
    t.is(res.status, 200, connection);
    const seen = seenOnce(marker)!;
    t.deepEqual(
      identityLines(seen),
      [
        ['x-appid', me.appid],
        ['x-openid', me.openid],
        ['x-unionid', me.unionid],
      ],
      connection,
    );
    t.false(allValues(seen).some((v) => SPOOF.test(v)), connection);
    t.false(allValues(seen).some((v) => /openid|unionid|appid/i.test(v)), 'the client Connection header is not forwarded');
  }
  // two Connection lines: node joins them, and both are honoured
  const reply = await rawRequest(
    gw.url,
    `GET /api/me?m=conn-twice HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: X-Openid\r\nX-Openid: evil-twice\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
  );
  t.is(reply.responses[0]?.status, 200);
  t.is(seenOnce('conn-twice')!.headers['x-openid'], me.openid);
});

test('a spoofed identity in the trailer of a chunked body never reaches the upstream', async (t) => {
  for (const [marker, auth] of [
    ['trailer-required', `Authorization: Bearer ${token}\r\n`],
    ['trailer-public', ''],
  ] as const) {
    const path = auth ? `/api/upload?m=${marker}` : `/api/public/upload?m=${marker}`;
    const reply = await rawRequest(
      gw.url,
      `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: text/plain\r\nTrailer: X-Openid\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
        `5\r\nhello\r\n0\r\nX-Openid: evil-trailer\r\nX-Appid: wxevil-trailer\r\n\r\n`,
    );
    t.is(reply.responses[0]?.status, 200, marker);
    const seen = seenOnce(marker)!;
    t.is(seen.body, 'hello');
    t.deepEqual(seen.trailers, {}, `${marker}: no trailer is forwarded`);
    t.is(seen.headers['x-openid'], auth ? me.openid : undefined, marker);
    t.false(allValues(seen).some((v) => SPOOF.test(v)), marker);
  }
});

test('header spellings that node refuses (space before the colon, obs-fold) are 400 and reach no upstream', async (t) => {
  const attempts = [
    `GET /api/public/x?m=refused-1 HTTP/1.1\r\nHost: x\r\nX-Openid : evil-space\r\nConnection: close\r\n\r\n`,
    `GET /api/public/x?m=refused-2 HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n X-Openid: evil-fold\r\nConnection: close\r\n\r\n`,
    `GET /api/me?m=refused-3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nX-Note: a\r\n\tX-Openid: evil-fold\r\nConnection: close\r\n\r\n`,
  ];
  for (const [i, bytes] of attempts.entries()) {
    const reply = await rawRequest(gw.url, bytes);
    t.is(reply.responses[0]?.status, 400, `attempt ${i + 1}`);
    t.is(seenOnce(`refused-${i + 1}`), undefined, `attempt ${i + 1}`);
  }
});

test('an identity does not carry over to the next request on a kept-alive connection', async (t) => {
  const conn = await rawConnect(gw.url);
  conn.write(`GET /api/me?m=keep-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  await conn.waitFor(/^HTTP\/1\.1 200[^]*\r\n\r\n[^]*\}$/);
  conn.write('GET /api/public/x?m=keep-2 HTTP/1.1\r\nHost: x\r\nX_Openid: evil-keep\r\n\r\n');
  conn.write('GET /api/me?m=keep-3 HTTP/1.1\r\nHost: x\r\nX-Openid: evil-keep\r\nConnection: close\r\n\r\n');
  const reply = await conn.done();
  t.deepEqual(
    reply.responses.map((r) => r.status),
    [200, 200, 401],
  );
  t.is(seenOnce('keep-1')!.headers['x-openid'], me.openid);
  t.deepEqual(identityLines(seenOnce('keep-2')!), [], 'the public request after an authenticated one carries no identity');
  t.is(seenOnce('keep-3'), undefined, 'a request without a token on a required route reaches nothing');
});

test('one kept-alive connection carrying two users in turn (a load balancer in front): each request gets its own identity, and a logout counts at once', async (t) => {
  const other = await login(gw.url, 'union-trudy.1');
  const them = (await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${other}` } })).json;
  t.not(them.openid, me.openid);
  const conn = await rawConnect(gw.url);
  const get = (m: string, tok: string, n: number) => {
    conn.write(`GET /api/me?m=${m} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\n\r\n`);
    // the n-th answer on this connection, whole
    return conn.waitFor(new RegExp(`^(?:HTTP/1\\.1 [^]*?\\r\\n\\r\\n[^]*?\\}){${n}}$`));
  };
  await get('turn-1', token, 1);
  await get('turn-2', other, 2);
  await get('turn-3', token, 3);
  await get('turn-4', token, 4);
  t.is((await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${other}` } })).status, 204);
  await get('turn-5', other, 5);
  conn.write(`GET /api/me?m=turn-6 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
  const reply = await conn.done();
  t.deepEqual(
    reply.responses.map((r) => r.status),
    [200, 200, 200, 200, 401, 200],
  );
  t.is(seenOnce('turn-1')!.headers['x-openid'], me.openid);
  t.is(seenOnce('turn-2')!.headers['x-openid'], them.openid);
  t.is(seenOnce('turn-3')!.headers['x-openid'], me.openid);
  t.is(seenOnce('turn-4')!.headers['x-openid'], me.openid);
  t.is(seenOnce('turn-5'), undefined, 'the logged-out token reaches nothing, on the connection that used it');
  t.is(seenOnce('turn-6')!.headers['x-openid'], me.openid);
});
