/**
 * Who is who, part 2: only `Authorization: Bearer <the token>` opens a session, everything else is a
 * 401 JSON with WWW-Authenticate: Bearer, and no token, session_key or app secret ever lands in a log
 * line (captured at trace level) or, for the token, in Redis. A real redis-server backs the sessions.
 *
 * Serial: the last test reads every log line the others produced.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { userId } from '../../src/session/tokens.js';
import { APPID, SECRET, login, type TestGateway } from '../helpers/gateway.js';
import { rawRequest, rawHeader, request, type Reply } from '../helpers/http.js';
import { useStack } from '../helpers/stack.js';

const PREFIX = 'tokentest:';
const CODE = 'token-owner.1';
/** a second app, for the gateway with an app-restricted route */
const OTHER_APPID = 'wxfedcba9876543210';
const OTHER_SECRET = 'other-secret-9876543210';

const stack = useStack(test, { redis: true, apps: { [APPID]: SECRET, [OTHER_APPID]: OTHER_SECRET } });
let gw: TestGateway;
/** the gateway serving two apps (started by the app-restricted route's test) */
let gw2: TestGateway | undefined;
let token: string;
let openid: string;
/** every token-like string the tests sent, good or bad: none may be logged */
const sentSecrets = new Set<string>();
/** the real tokens: not even a part of one may be logged */
const realTokens = new Set<string>();

test.before(async () => {
  await stack.start();
  gw = await stack.gateway(
    {
      routes: [
        { path: '/api/public', upstream: stack.up.url, auth: 'none' },
        { path: '/api', upstream: stack.up.url },
      ],
      session: { store: 'redis', redis: { url: stack.redis.url, keyPrefix: PREFIX } },
    },
    { logLevel: 'trace' },
  );
  token = await login(gw.url, CODE);
  realTokens.add(token);
  const s = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } });
  openid = s.json.openid;
});

/** The token with the character at `i` replaced by another base64url character. */
function changed(t: string, i: number): string {
  const c = t[i] === 'A' ? 'B' : 'A';
  return t.slice(0, i) + c + t.slice(i + 1);
}

const status = (res: Reply) => res.status;

function assertUnauthorized(t: import('ava').ExecutionContext, res: Reply, what: string): void {
  t.is(res.status, 401, what);
  t.is(res.json?.error, 'unauthorized', what);
  t.is(typeof res.json?.message, 'string', what);
  t.deepEqual(Object.keys(res.json ?? {}).sort(), ['error', 'message'], what);
  t.regex(String(res.headers['www-authenticate']), /^Bearer realm="wxgate"/, what);
  t.regex(String(res.headers['content-type']), /^application\/json/, what);
}

/** Credentials that must all be refused, as header lines built from the good token and a near miss. */
const badCredentials: Array<[string, (token: string, other: string) => Array<[string, string]>]> = [
  ['missing', () => []],
  ['empty', () => [['Authorization', '']]],
  ['scheme only', () => [['Authorization', 'Bearer']]],
  ['scheme and a space', () => [['Authorization', 'Bearer ']]],
  ['truncated by one character', (tk) => [['Authorization', `Bearer ${tk.slice(0, -1)}`]]],
  ['truncated to half', (tk) => [['Authorization', `Bearer ${tk.slice(0, 30)}`]]],
  ['truncated to the earlier token length (43)', (tk) => [['Authorization', `Bearer ${tk.slice(0, 43)}`]]],
  ['the random part alone', (tk) => [['Authorization', `Bearer ${tk.slice(16)}`]]],
  ['one character changed (first)', (tk) => [['Authorization', `Bearer ${changed(tk, 0)}`]]],
  ['one character changed (middle)', (_, other) => [['Authorization', `Bearer ${other}`]]],
  ['one character changed (last)', (tk) => [['Authorization', `Bearer ${changed(tk, 58)}`]]],
  ['one character changed (in the user id)', (tk) => [['Authorization', `Bearer ${changed(tk, 5)}`]]],
  ['padded with =', (tk) => [['Authorization', `Bearer ${tk}=`]]],
  ['padded with ==', (tk) => [['Authorization', `Bearer ${tk}==`]]],
  ['standard base64 alphabet', (tk) => [['Authorization', `Bearer ${tk.replace(/-/g, '+').replace(/_/g, '/')}${/[-_]/.test(tk) ? '' : '+'}`]]],
  ['no scheme', (tk) => [['Authorization', tk]]],
  ['another scheme', (tk) => [['Authorization', `Token ${tk}`]]],
  ['Basic carrying the token', (tk) => [['Authorization', `Basic ${Buffer.from(`${tk}:`).toString('base64')}`]]],
  ['tab instead of a space', (tk) => [['Authorization', `Bearer\t${tk}`]]],
  ['two tokens', (tk, other) => [['Authorization', `Bearer ${tk} ${other}`]]],
  ['two tokens, comma-separated', (tk, other) => [['Authorization', `Bearer ${tk}, Bearer ${other}`]]],
  ['two Authorization headers, the good one first', (tk, other) => [['Authorization', `Bearer ${tk}`], ['Authorization', `Bearer ${other}`]]],
  ['two Authorization headers, the good one last', (tk, other) => [['Authorization', `Bearer ${other}`], ['Authorization', `Bearer ${tk}`]]],
  ['two Authorization headers, both the good one', (tk) => [['Authorization', `Bearer ${tk}`], ['Authorization', `Bearer ${tk}`]]],
  ['4 KiB of junk before the token', (tk) => [['Authorization', `Bearer ${'A'.repeat(4096)}${tk}`]]],
  ['4 KiB of spaces before the token', (tk) => [['Authorization', `Bearer ${' '.repeat(4096)}${tk}`]]],
  ['the token in a cookie', (tk) => [['Cookie', `token=${tk}; session=${tk}`]]],
  ['the token in other headers', (tk) => [['X-Token', tk], ['X-Auth-Token', tk], ['X-Access-Token', `Bearer ${tk}`]]],
];

for (const [name, build] of badCredentials) {
  test.serial(`refused credential, ${name}: 401 JSON with WWW-Authenticate: Bearer on a proxied route and on /session`, async (t) => {
    const lines = build(token, changed(token, 20));
    for (const [, v] of lines) if (v.length > 20) sentSecrets.add(v.replace(/^\w+[\t ]+/, '').trim());
    const marker = `bad-${name.replace(/\W+/g, '-')}`;
    const proxied = await request(gw.url, { path: `/api/orders?m=${marker}`, headers: lines });
    const own = await request(gw.url, { path: '/session', headers: lines });
    // both answers in one comparison, so that a failure shows which of the two paths let it through
    t.deepEqual({ proxied: status(proxied), session: status(own) }, { proxied: 401, session: 401 });
    assertUnauthorized(t, proxied, 'proxied route');
    assertUnauthorized(t, own, '/session');
    t.false(
      stack.up.seen.some((s) => s.url.includes(`m=${marker}`)),
      'nothing reached the upstream',
    );
  });
}

test.serial('a token in the query string is ignored: 401', async (t) => {
  for (const query of [`access_token=${token}`, `token=${token}`, `authorization=Bearer%20${token}`, `Authorization=Bearer+${token}`]) {
    const res = await request(gw.url, { path: `/api/orders?m=query&${query}` });
    assertUnauthorized(t, res, query);
    const session = await request(gw.url, { path: `/session?${query}` });
    assertUnauthorized(t, session, `/session?${query}`);
  }
  t.false(stack.up.seen.some((s) => s.url.includes('m=query')));
});

test.serial('non-ASCII bytes in the token (raw UTF-8) are 401 JSON', async (t) => {
  const variants = [
    Buffer.concat([Buffer.from(`Bearer ${token.slice(0, 58)}`), Buffer.from('é', 'utf8')]),
    Buffer.concat([Buffer.from(`Bearer ${token}`), Buffer.from('\u200b', 'utf8')]), // zero-width space after the token
    Buffer.concat([Buffer.from('Bearer '), Buffer.from('ｔｏｋｅｎ'.repeat(8), 'utf8')]), // fullwidth letters
    Buffer.concat([Buffer.from('Bearer\u00a0', 'latin1'), Buffer.from(token)]), // no-break space as the separator
  ];
  for (const [i, value] of variants.entries()) {
    for (const path of [`/api/orders?m=utf8-${i}`, '/session']) {
      const reply = await rawRequest(
        gw.url,
        Buffer.concat([Buffer.from(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: `), value, Buffer.from('\r\nConnection: close\r\n\r\n')]),
      );
      const res = reply.responses[0];
      t.is(res?.status, 401, `variant ${i} ${path}`);
      t.is(JSON.parse(res?.body ?? '{}').error, 'unauthorized');
      t.regex(rawHeader(res, 'www-authenticate') ?? '', /^Bearer /);
    }
  }
  t.false(stack.up.seen.some((s) => s.url.includes('m=utf8')));
});

test.serial('a 16 KiB Authorization header: 401 JSON while it fits the header limit, refused (431) beyond it, never proxied', async (t) => {
  // node's limit is 16 KiB for the whole head; this header line is 16 KiB less what the rest of the head needs
  const fits = `Bearer ${'x'.repeat(16 * 1024 - 200)}${token}`;
  sentSecrets.add(fits.slice(7));
  const res = await request(gw.url, { path: '/api/orders?m=long-fits', headers: { authorization: fits } });
  assertUnauthorized(t, res, '16 KiB header within the limit');
  const own = await request(gw.url, { path: '/session', headers: { authorization: fits } });
  assertUnauthorized(t, own, '16 KiB header on /session');

  const beyond = `Bearer ${'x'.repeat(16 * 1024)}${token}`;
  const reply = await rawRequest(gw.url, `GET /api/orders?m=long-beyond HTTP/1.1\r\nHost: x\r\nAuthorization: ${beyond}\r\nConnection: close\r\n\r\n`);
  t.is(reply.responses[0]?.status, 431, 'node refuses a head over its limit');
  t.false(stack.up.seen.some((s) => /m=long-/.test(s.url)));
  // the gateway still answers afterwards
  t.is((await request(gw.url, { path: '/healthz' })).status, 200);
});

test.serial('the Bearer scheme is case-insensitive (RFC 7235): "bearer" and "BEARER" open the session', async (t) => {
  for (const scheme of ['bearer', 'BEARER', 'bEaReR']) {
    const marker = `scheme-${scheme}`;
    const res = await request(gw.url, { path: `/api/orders?m=${marker}`, headers: { authorization: `${scheme} ${token}` } });
    t.is(res.status, 200, scheme);
    const seen = stack.up.seen.find((s) => s.url.includes(`m=${marker}`));
    t.is(seen?.headers['x-openid'], openid, scheme);
    t.is(seen?.headers.authorization, undefined);
    const s = await request(gw.url, { path: '/session', headers: { authorization: `${scheme} ${token}` } });
    t.is(s.status, 200, `${scheme} on /session`);
    t.is(s.json.openid, openid);
  }
});

test.serial('tokens are 256-bit and fresh per login; Redis holds neither the token nor anything it can be read from', async (t) => {
  const again = await login(gw.url, 'token-owner.2');
  realTokens.add(again);
  t.not(again, token);
  const random: Buffer[] = [];
  for (const tk of [token, again]) {
    t.regex(tk, /^[A-Za-z0-9_-]{59}$/);
    const bytes = Buffer.from(tk, 'base64url');
    t.is(bytes.length, 12 + 32, "the user's id (not secret: derived from appid and openid) and 256 random bits");
    t.is(tk.slice(0, 16), userId(APPID, openid), 'the first 16 characters are the id, nothing else');
    t.is(bytes.subarray(0, 12).toString('base64url'), userId(APPID, openid));
    random.push(bytes.subarray(12));
  }
  t.is(token.slice(0, 16), again.slice(0, 16), 'same user, same id');
  const [r1, r2] = random as [Buffer, Buffer];
  t.false(r1.equals(r2), 'the random parts differ');
  // 256 independent bits: each random part has about half its bits set, and the two differ in about half
  const ones = (b: Buffer) => [...b].reduce((n, x) => n + x.toString(2).replaceAll('0', '').length, 0);
  const xor = Buffer.from(r1.map((x, i) => x ^ r2[i]!));
  for (const n of [ones(r1), ones(r2), ones(xor)]) t.true(n > 80 && n < 176, `${n} of 256 bits`);
  // everything Redis holds, as text
  const client = new Redis(stack.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  t.teardown(() => client.disconnect());
  const dump: string[] = [];
  for (const key of await client.keys('*')) {
    dump.push(key);
    const type = await client.type(key);
    if (type === 'string') dump.push((await client.get(key)) ?? '');
    else if (type === 'hash') dump.push(...Object.entries(await client.hgetall(key)).flat());
    else if (type === 'zset') dump.push(...(await client.zrange(key, 0, -1, 'WITHSCORES')));
    else if (type === 'set') dump.push(...(await client.smembers(key)));
    else if (type === 'list') dump.push(...(await client.lrange(key, 0, -1)));
  }
  t.true(dump.length > 0, 'the sessions are in this Redis');
  t.true(dump.some((v) => v.includes(openid)), 'the dump holds the session records');
  for (const tk of [token, again]) {
    t.false(dump.some((v) => v.includes(tk)), 'no token in Redis');
    // the id is the key's name (it is derived from appid and openid, so it tells nothing new); of the
    // random part, not even 8 characters anywhere
    t.true(dump.includes(`${PREFIX}u:${tk.slice(0, 16)}`), "the user's key is named by the id");
    const secret = tk.slice(16);
    for (let i = 0; i + 8 <= secret.length; i++) {
      t.false(dump.some((v) => v.includes(secret.slice(i, i + 8))), `no part of a token's random part in Redis (at ${i})`);
    }
  }
});

test.serial('a valid token of another app on an app-restricted route: 403 app_not_allowed JSON, not 401 (a new login would not help), and nothing reaches the upstream', async (t) => {
  gw2 = await stack.gateway(
    {
      wechat: { apiBase: stack.sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }, { appid: OTHER_APPID, secret: OTHER_SECRET }] },
      routes: [
        { path: '/shop', upstream: stack.up.url, apps: [APPID] },
        { path: '/any', upstream: stack.up.url },
      ],
      session: { store: 'redis', redis: { url: stack.redis.url, keyPrefix: 'tokentest2:' } },
    },
    { logLevel: 'trace' },
  );
  const mine = await login(gw2.url, 'two-apps.1', { appid: APPID });
  const foreign = await login(gw2.url, 'two-apps.2', { appid: OTHER_APPID });
  realTokens.add(mine);
  realTokens.add(foreign);

  // the controls: the route serves its own app, and the other app's token is a valid session
  const own = await request(gw2.url, { path: '/shop/cart?m=own-app', headers: { authorization: `Bearer ${mine}` } });
  t.is(own.status, 200, own.text);
  t.is(stack.up.seen.find((s) => s.url === '/shop/cart?m=own-app')?.headers['x-appid'], APPID);
  const valid = await request(gw2.url, { path: '/any/x?m=foreign-valid', headers: { authorization: `Bearer ${foreign}` } });
  t.is(valid.status, 200, 'the foreign token is a live session of its own app');
  t.is(stack.up.seen.find((s) => s.url === '/any/x?m=foreign-valid')?.headers['x-appid'], OTHER_APPID);

  const before = stack.up.seen.length;
  const attempts: Array<[string, Array<[string, string]>]> = [
    ['/shop/cart?m=foreign', []],
    ['/shop?m=foreign-root', []],
    ['/SHOP/cart?m=foreign-case', []],
    ['/shop/cart?m=foreign-spoof', [['X-Appid', APPID], ['X_Appid', APPID], ['X-Wx-Appid', APPID]]],
  ];
  for (const [path, extra] of attempts) {
    for (const scheme of ['Bearer', 'bearer']) {
      const res = await request(gw2.url, { path, headers: [['Authorization', `${scheme} ${foreign}`], ...extra] });
      t.is(res.status, 403, `${scheme} ${path}`);
      t.deepEqual(Object.keys(res.json ?? {}).sort(), ['error', 'message'], path);
      t.is(res.json?.error, 'app_not_allowed', path);
      t.regex(String(res.headers['content-type']), /^application\/json/, path);
      t.is(res.headers['www-authenticate'], undefined, 'not a challenge: the client must not log in again and loop');
    }
  }
  t.is(stack.up.seen.length, before, 'nothing reached the upstream');
  t.false(stack.up.seen.some((s) => s.url.includes('m=foreign&') || /m=foreign(-root|-case|-spoof)?$/.test(s.url)));
  // the refusal did not end the session: it still works where its app is served
  t.is((await request(gw2.url, { path: '/any/y?m=foreign-after', headers: { authorization: `Bearer ${foreign}` } })).status, 200);
});

test.serial('no log line holds a token (good or bad), the session_key, the app secret or the login code', async (t) => {
  // one more login whose session_key we read back from Redis, where the gateway keeps it
  const client = new Redis(stack.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  t.teardown(() => client.disconnect());
  const sessionKey = await client.hget(`${PREFIX}u:${userId(APPID, openid)}`, 'k');
  t.truthy(sessionKey, 'the session_key is where the store keeps it');
  // and a refused login, a logout and an unknown-token logout, so that those paths log too
  t.is((await request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 'fail-40029' }) })).status, 401);
  const spent = await login(gw.url, 'token-spent.1');
  realTokens.add(spent);
  t.is((await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${spent}` } })).status, 204);
  assertUnauthorized(t, await request(gw.url, { path: '/api/x?m=spent', headers: { authorization: `Bearer ${spent}` } }), 'logged-out token');

  const logs = [...gw.logs, ...(gw2?.logs ?? [])];
  t.true(logs.length > 0, 'the log was captured');
  t.true(
    logs.some((l) => JSON.parse(l).level === 20 || JSON.parse(l).level === 10),
    'debug/trace lines were captured, so the quiet paths were logged too',
  );
  const forbidden: Array<[string, string]> = [
    ['app secret', SECRET],
    ['app secret', OTHER_SECRET],
    ['session_key', sessionKey!],
    ['login code', CODE],
    ['login code', 'token-spent.1'],
  ];
  for (const s of sentSecrets) forbidden.push(['a refused credential', s]);
  for (const s of realTokens) forbidden.push(['token', s], ['token (start)', s.slice(0, 16)], ['token (end)', s.slice(-16)]);
  for (const [what, secret] of forbidden) {
    const hit = logs.find((l) => l.includes(secret));
    t.is(hit, undefined, `${what} appears in the log: ${hit?.slice(0, 200)}`);
  }
});
