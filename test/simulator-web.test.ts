import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import test, { type ExecutionContext } from 'ava';
import { WechatClient } from '../src/wechat/client.js';
import { simulatedOpenid, simulatedUnionid, startSimulator } from '../src/dev/simulator.js';
import { createWebApis } from '../src/dev/simulator-web.js';
import { WechatError } from '../src/wechat/types.js';

/** The simulator's web-login pages, sns/* APIs and getwxacodeunlimit over real HTTP (no nock). */
const MINI = 'wxaaaaaaaaaaaaaaaa';
const MP = 'wxbbbbbbbbbbbbbbbb';
const WEB = 'wxcccccccccccccccc';
const APPS = { [MINI]: 'secret-mini-0123456789', [MP]: 'secret-mp-0123456789', [WEB]: 'secret-web-0123456789' };
const CALLBACK = 'https://gw.example/oauth/mp/callback?next=%2Fhome';
const PNG_SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

type Sim = Awaited<ReturnType<typeof startSimulator>>;
let sim: Sim;
let wx: WechatClient;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: APPS });
  wx = new WechatClient({ apiBase: sim.url, timeout: 2000, apps: Object.entries(APPS).map(([appid, secret]) => ({ appid, secret })) });
});
test.after.always(async () => {
  wx?.close();
  await sim?.close();
});

const get = (path: string, base = sim.url) => fetch(new URL(path, base), { redirect: 'manual' });

function authorizeQuery(appid: string, scope: string, state = 'st4te', redirect = CALLBACK): string {
  return new URLSearchParams({ appid, redirect_uri: redirect, response_type: 'code', scope, state }).toString();
}

/** The hidden and text inputs of the page's form, as a browser would submit them. */
function formFields(page: string): URLSearchParams {
  const form = /<form id="approve" method="get" action="([^"]+)">([\s\S]*?)<\/form>/.exec(page);
  if (!form) throw new Error('no approve form');
  const fields = new URLSearchParams();
  for (const m of form[2]!.matchAll(/<input[^>]*\bname="([^"]+)"[^>]*\bvalue="([^"]*)"/g)) {
    fields.set(m[1]!, m[2]!.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n))));
  }
  return fields;
}

/** Submits the approve form for `user`, returns the redirect target. */
async function approveViaPage(t: ExecutionContext, authorizePath: string, user?: string): Promise<URL> {
  const page = await get(authorizePath);
  t.is(page.status, 200);
  const html = await page.text();
  const fields = formFields(html);
  if (user !== undefined) fields.set('user', user);
  const res = await get(`/connect/approve?${fields}`);
  t.is(res.status, 302);
  return new URL(res.headers.get('location')!);
}

async function wechatError(t: ExecutionContext, p: Promise<unknown>): Promise<WechatError> {
  return (await t.throwsAsync(p, { instanceOf: WechatError }))!;
}

async function rawJson(path: string): Promise<Record<string, unknown>> {
  const res = await get(path);
  return (await res.json()) as Record<string, unknown>;
}

// ---- Official Account authorize → approve → code → access_token → userinfo ----

test('authorize shows an HTML page that approves as webuser by default', async (t) => {
  const res = await get(`/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_userinfo')}`);
  t.is(res.status, 200);
  t.regex(res.headers.get('content-type')!, /^text\/html/);
  const html = await res.text();
  t.regex(html, /Approve as <span id="who">webuser<\/span>/);
  t.regex(html, /<input id="user" name="user" value="webuser"/);
  const fields = formFields(html);
  t.is(fields.get('redirect_uri'), CALLBACK, 'the redirect_uri survives HTML escaping');
  t.is(fields.get('appid'), MP);
  t.is(fields.get('scope'), 'snsapi_userinfo');
  t.is(fields.get('state'), 'st4te');
  t.is(fields.get('flow'), 'oauth2');
});

test('the whole Official Account flow: page → approve → code → access_token → userinfo', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_userinfo', 'abcXYZ123')}`);
  t.is(`${target.origin}${target.pathname}`, 'https://gw.example/oauth/mp/callback');
  t.is(target.searchParams.get('next'), '/home', 'the query of redirect_uri is kept');
  t.is(target.searchParams.get('state'), 'abcXYZ123');
  const code = target.searchParams.get('code')!;
  t.regex(code, /^[A-Za-z0-9_-]{16,}$/);

  const token = await wx.oauth2AccessToken(MP, code);
  t.is(token.openid, simulatedOpenid(MP, 'webuser'));
  t.is(token.expiresIn, 7200);
  t.is(token.scope, 'snsapi_userinfo');
  t.truthy(token.refreshToken);
  t.false('unionid' in token, 'webuser is not a union* user');

  const info = await wx.snsUserinfo(token.accessToken, token.openid);
  t.is(info.openid, token.openid);
  t.is(info.nickname, 'webuser');
  t.regex(info.headimgurl!, /^https:\/\/thirdwx\.qlogo\.cn\/mmopen\/.+\/132$/);
  t.is(info.sex, 0);
  t.false('unionid' in info);
});

test('a web user "union*" shares the unionid with the mini-program user of that name', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_userinfo')}`, 'union-carol');
  const token = await wx.oauth2AccessToken(MP, target.searchParams.get('code')!);
  const mini = await wx.code2Session(MINI, 'union-carol.1');
  t.is(token.unionid, simulatedUnionid('union-carol'));
  t.is(token.unionid, mini.unionid);
  t.not(token.openid, mini.openid, 'openids are per app');
  t.is(token.openid, simulatedOpenid(MP, 'union-carol'));
  t.is((await wx.snsUserinfo(token.accessToken, token.openid)).unionid, mini.unionid);
});

test('a code works once: 40163 the second time; unknown codes, other apps and expired codes are 40029', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_base')}`, 'dave');
  const code = target.searchParams.get('code')!;
  // The website app cannot use the Official Account's code, and that does not spend it.
  t.is((await wechatError(t, wx.oauth2AccessToken(WEB, code))).errcode, 40029);
  await wx.oauth2AccessToken(MP, code);
  const reused = await wechatError(t, wx.oauth2AccessToken(MP, code));
  t.is(reused.errcode, 40163);
  t.false(reused.message.includes(code));
  t.is((await wechatError(t, wx.oauth2AccessToken(MP, 'never-issued-code'))).errcode, 40029);
});

test('snsapi_base: an openid without unionid, and sns/userinfo answers 48001', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_base')}`, 'union-erin');
  const token = await wx.oauth2AccessToken(MP, target.searchParams.get('code')!);
  t.is(token.openid, simulatedOpenid(MP, 'union-erin'));
  t.is(token.scope, 'snsapi_base');
  t.false('unionid' in token, 'WeChat documents unionid in this answer for snsapi_userinfo only');
  t.is((await wechatError(t, wx.snsUserinfo(token.accessToken, token.openid))).errcode, 48001);
  const auth = await rawJson(`/sns/auth?access_token=${token.accessToken}&openid=${token.openid}`);
  t.deepEqual(auth, { errcode: 0, errmsg: 'ok' });
});

test('sns/oauth2/access_token: missing parameters, grant_type, appid and secret get their errcodes, and keep the code', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_base')}`, 'frank');
  const code = target.searchParams.get('code')!;
  const q = (p: Record<string, string>) => `/sns/oauth2/access_token?${new URLSearchParams(p)}`;
  const full = { appid: MP, secret: APPS[MP], code, grant_type: 'authorization_code' };
  const cases: [Record<string, string>, number][] = [
    [{ secret: APPS[MP], code, grant_type: 'authorization_code' }, 41002],
    [{ appid: MP, code, grant_type: 'authorization_code' }, 41004],
    [{ appid: MP, secret: APPS[MP], grant_type: 'authorization_code' }, 41008],
    [{ ...full, grant_type: 'client_credential' }, 40002],
    [{ ...full, appid: 'wxunknown000000000' }, 40013],
    [{ ...full, secret: 'wrong-secret' }, 40125],
    [{ ...full, code: 'fail-45011' }, 45011],
  ];
  for (const [params, errcode] of cases) {
    const res = await get(q(params));
    t.is(res.status, 200);
    const body = (await res.json()) as { errcode: number; errmsg: string };
    t.is(body.errcode, errcode, JSON.stringify(params));
    t.regex(body.errmsg, /rid: /);
  }
  const ok = await rawJson(q(full));
  t.is(ok.openid, simulatedOpenid(MP, 'frank'));
  t.is(ok.expires_in, 7200);
  t.is(ok.scope, 'snsapi_base');
  t.is(typeof ok.access_token, 'string');
  t.is(typeof ok.refresh_token, 'string');
});

test('sns/userinfo needs a token of this simulator for that openid', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_userinfo')}`, 'gina');
  const token = await wx.oauth2AccessToken(MP, target.searchParams.get('code')!);
  t.is((await wechatError(t, wx.snsUserinfo('not-a-token', token.openid))).errcode, 40001);
  t.is((await wechatError(t, wx.snsUserinfo(token.accessToken, simulatedOpenid(MP, 'someone-else')))).errcode, 40003);
  t.is((await rawJson(`/sns/userinfo?openid=${token.openid}`)).errcode, 41001);
  t.is((await rawJson(`/sns/userinfo?access_token=${token.accessToken}`)).errcode, 41009);
});

test('refresh_token gives a new access_token for the same user', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_userinfo')}`, 'union-hank');
  const token = await wx.oauth2AccessToken(MP, target.searchParams.get('code')!);
  const q = (p: Record<string, string>) => `/sns/oauth2/refresh_token?${new URLSearchParams(p)}`;
  const refreshed = await rawJson(q({ appid: MP, grant_type: 'refresh_token', refresh_token: token.refreshToken! }));
  t.is(refreshed.openid, token.openid);
  t.is(refreshed.unionid, simulatedUnionid('union-hank'));
  t.not(refreshed.access_token, token.accessToken);
  t.is((await wx.snsUserinfo(refreshed.access_token as string, token.openid)).nickname, 'union-hank');
  t.is((await rawJson(q({ appid: MP, grant_type: 'refresh_token', refresh_token: 'bogus' }))).errcode, 40030);
  t.is((await rawJson(q({ appid: WEB, grant_type: 'refresh_token', refresh_token: token.refreshToken! }))).errcode, 40030);
  t.is((await rawJson(q({ appid: MP, grant_type: 'refresh_token' }))).errcode, 41003);
});

// ---- bad authorize requests ----

test('authorize: unknown appid, bad scope, no redirect_uri, bad response_type or a long state → an HTML error page, 400', async (t) => {
  const bad: [string, RegExp][] = [
    [authorizeQuery('wxunknown000000000', 'snsapi_base'), /invalid appid/],
    [authorizeQuery(MP, 'snsapi_login'), /no permission for scope snsapi_login/],
    [authorizeQuery(MP, 'snsapi_everything'), /no permission for scope/],
    [authorizeQuery(MP, ''), /scope is empty/],
    [authorizeQuery(MP, 'snsapi_base', 's', ''), /redirect_uri is empty/],
    [authorizeQuery(MP, 'snsapi_base', 's', '/relative/path'), /not an absolute URL/],
    [authorizeQuery(MP, 'snsapi_base', 's', 'javascript:alert(1)'), /must be http/],
    [authorizeQuery(MP, 'snsapi_base').replace('response_type=code', 'response_type=token'), /response_type must be code/],
    [authorizeQuery(MP, 'snsapi_base', 'x'.repeat(129)), /longer than 128 bytes/],
    [new URLSearchParams({ redirect_uri: CALLBACK, response_type: 'code', scope: 'snsapi_base' }).toString(), /appid is empty/],
  ];
  for (const [query, message] of bad) {
    for (const path of ['/connect/oauth2/authorize', '/connect/approve']) {
      const res = await get(`${path}?${query}${path === '/connect/approve' ? '&flow=oauth2' : ''}`);
      t.is(res.status, 400, `${path}?${query}`);
      t.regex(res.headers.get('content-type')!, /^text\/html/);
      const html = await res.text();
      t.regex(html, message, query);
      t.notRegex(html, /<form/);
    }
  }
  t.is((await get(`/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_base', 'x'.repeat(128))}`)).status, 200, '128 bytes are fine');
});

test('the error page escapes what it shows; the form escapes the parameters', async (t) => {
  const res = await get(`/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_base', '"><script>alert(1)</script>')}`);
  const html = await res.text();
  t.false(html.includes('<script>alert(1)'));
  t.is(formFields(html).get('state'), '"><script>alert(1)</script>');
  const approve = await get(`/connect/approve?${authorizeQuery(MP, 'snsapi_base')}&user=${encodeURIComponent('<b>x</b>')}`);
  t.is(approve.status, 400);
  t.false((await approve.text()).includes('<b>x</b>'));
});

test('deny redirects with the state only', async (t) => {
  const res = await get(`/connect/approve?${authorizeQuery(MP, 'snsapi_userinfo', 'keepme')}&deny=1`);
  t.is(res.status, 302);
  const target = new URL(res.headers.get('location')!);
  t.is(target.searchParams.get('state'), 'keepme');
  t.false(target.searchParams.has('code'));
});

// ---- website QR login ----

test('qrconnect: the website app logs in with snsapi_login; unionid and userinfo as for the Official Account', async (t) => {
  const longState = 'v1.' + 'x'.repeat(200);
  const redirect = 'https://www.example.com/oauth/web/callback';
  const path = `/connect/qrconnect?${authorizeQuery(WEB, 'snsapi_login', longState, redirect)}`;
  const page = await get(path);
  const html = await page.text();
  t.regex(html, /Log in with WeChat/);
  t.is(formFields(html).get('flow'), 'qrconnect');
  const target = await approveViaPage(t, path, 'union-ivy');
  t.is(`${target.origin}${target.pathname}`, redirect);
  t.is(target.searchParams.get('state'), longState, 'no 128-byte limit for website apps');
  const token = await wx.oauth2AccessToken(WEB, target.searchParams.get('code')!);
  t.is(token.scope, 'snsapi_login');
  t.is(token.openid, simulatedOpenid(WEB, 'union-ivy'));
  t.is(token.unionid, simulatedUnionid('union-ivy'));
  t.is((await wx.code2Session(MINI, 'union-ivy.7')).unionid, token.unionid);
  t.is((await wx.snsUserinfo(token.accessToken, token.openid)).unionid, token.unionid);
});

test('qrconnect refuses other scopes and unknown appids', async (t) => {
  for (const q of [authorizeQuery(WEB, 'snsapi_userinfo'), authorizeQuery(WEB, 'snsapi_login,snsapi_base'), authorizeQuery('wxnope', 'snsapi_login')]) {
    const res = await get(`/connect/qrconnect?${q}`);
    t.is(res.status, 400, q);
    t.regex(await res.text(), /Authorization error/);
  }
});

test('snapshot* users are marked is_snapshotuser', async (t) => {
  const target = await approveViaPage(t, `/connect/oauth2/authorize?${authorizeQuery(MP, 'snsapi_userinfo')}`, 'snapshot-1');
  t.true((await wx.oauth2AccessToken(MP, target.searchParams.get('code')!)).isSnapshotuser);
});

// ---- lifetimes, with a clock ----

test('codes expire after 5 minutes (40029), user tokens after 7200 s (42001)', async (t) => {
  let clock = 1_700_000_000_000;
  const web = createWebApis({ apps: { [MP]: APPS[MP] }, checkToken: () => ({ errcode: 40001 }), now: () => clock });
  const server = http.createServer((req, res) => {
    if (!web.handle(req, res, new URL(req.url!, 'http://x'))) res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new WechatClient({ apiBase: base, timeout: 2000, apps: [{ appid: MP, secret: APPS[MP] }] });
  try {
    const codeFor = async (user: string) => {
      const res = await get(`/connect/approve?${authorizeQuery(MP, 'snsapi_userinfo')}&user=${user}`, base);
      return new URL(res.headers.get('location')!).searchParams.get('code')!;
    };
    const late = await codeFor('kim');
    const fresh = await codeFor('lee');
    clock += 5 * 60 * 1000 - 1;
    const token = await client.oauth2AccessToken(MP, fresh);
    clock += 1;
    t.is((await wechatError(t, client.oauth2AccessToken(MP, late))).errcode, 40029);
    t.is((await client.snsUserinfo(token.accessToken, token.openid)).nickname, 'lee');
    clock += 7200 * 1000;
    t.is((await wechatError(t, client.snsUserinfo(token.accessToken, token.openid))).errcode, 42001);
  } finally {
    client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

// ---- getwxacodeunlimit ----

interface Png {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
  pixels: Buffer;
}

/** Reads a PNG chunk by chunk, checking every CRC; returns the IHDR fields and the inflated scanlines. */
function parsePng(t: ExecutionContext, buf: Buffer): Png {
  t.true(buf.subarray(0, 8).equals(PNG_SIG), 'PNG signature');
  let off = 8;
  const types: string[] = [];
  const idat: Buffer[] = [];
  let ihdr: Buffer | undefined;
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.subarray(off + 4, off + 8).toString('latin1');
    const data = buf.subarray(off + 8, off + 8 + len);
    const crc = buf.readUInt32BE(off + 8 + len);
    t.is(crc, zlib.crc32(buf.subarray(off + 4, off + 8 + len)), `CRC of ${type}`);
    types.push(type);
    if (type === 'IHDR') ihdr = data;
    if (type === 'IDAT') idat.push(data);
    off += 12 + len;
  }
  t.is(off, buf.length);
  t.is(types[0], 'IHDR');
  t.is(types.at(-1), 'IEND');
  return {
    width: ihdr!.readUInt32BE(0),
    height: ihdr!.readUInt32BE(4),
    bitDepth: ihdr![8]!,
    colorType: ihdr![9]!,
    pixels: zlib.inflateSync(Buffer.concat(idat)),
  };
}

async function appToken(appid = MINI): Promise<string> {
  return (await wx.stableToken(appid)).accessToken;
}

const wxacode = (token: string | undefined, body: unknown) =>
  fetch(`${sim.url}/wxa/getwxacodeunlimit${token === undefined ? '' : `?access_token=${token}`}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

test('getwxacodeunlimit answers a real PNG, 430 px by default, its pattern depending on the scene', async (t) => {
  const token = await appToken();
  const res = await wxacode(token, { scene: 'ticket-0001', page: 'pages/scan/confirm', check_path: false, env_version: 'develop' });
  t.is(res.status, 200);
  t.is(res.headers.get('content-type'), 'image/png');
  const buf = Buffer.from(await res.arrayBuffer());
  t.is(Number(res.headers.get('content-length')), buf.length);
  const png = parsePng(t, buf);
  t.deepEqual([png.width, png.height, png.bitDepth, png.colorType], [430, 430, 8, 0]);
  t.is(png.pixels.length, (430 + 1) * 430);
  const values = new Set(png.pixels.filter((_, i) => i % 431 !== 0));
  t.deepEqual([...values].sort((a, b) => a - b), [0, 255], 'black and white');
  const blacks = png.pixels.filter((v, i) => i % 431 !== 0 && v === 0).length;
  t.true(blacks > 430 * 430 * 0.2 && blacks < 430 * 430 * 0.7, `${blacks} black pixels`);

  const again = Buffer.from(await (await wxacode(token, { scene: 'ticket-0001', page: 'pages/scan/confirm' })).arrayBuffer());
  const other = Buffer.from(await (await wxacode(token, { scene: 'ticket-0002', page: 'pages/scan/confirm' })).arrayBuffer());
  t.true(again.equals(buf), 'the same scene, the same image');
  t.false(other.equals(buf), 'another scene, another image');
  t.false(parsePng(t, other).pixels.equals(png.pixels));
});

test('getwxacodeunlimit: width is kept within 280..1280; through the client the PNG comes back as is', async (t) => {
  const token = await appToken();
  for (const [asked, drawn] of [
    [280, 280],
    [100, 280],
    [5000, 1280],
    [600, 600],
  ] as const) {
    const png = parsePng(t, Buffer.from(await (await wxacode(token, { scene: 'w', width: asked })).arrayBuffer()));
    t.deepEqual([png.width, png.height], [drawn, drawn], `width ${asked}`);
  }
  const image = await wx.getwxacodeUnlimit(token, { scene: 'tk=ABC123', page: 'pages/index/index', envVersion: 'trial', width: 300 });
  t.is(image.contentType, 'image/png');
  const png = parsePng(t, image.body);
  t.is(png.width, 300);
});

test('getwxacodeunlimit checks the access_token like getuserphonenumber: 41001 missing, 40001 unknown or revoked', async (t) => {
  const body = { scene: 'abc' };
  const json = async (res: Response) => {
    t.regex(res.headers.get('content-type')!, /^application\/json/);
    return ((await res.json()) as { errcode: number }).errcode;
  };
  t.is(await json(await wxacode(undefined, body)), 41001);
  t.is(await json(await wxacode('simtok_not-issued', body)), 40001);
  const token = await appToken(MP);
  t.is((await wxacode(token, body)).status, 200);
  await fetch(`${sim.url}/dev/revoke-tokens?appid=${MP}`, { method: 'POST' });
  t.is(await json(await wxacode(token, body)), 40001);
  t.is((await wechatError(t, wx.getwxacodeUnlimit(token, body))).errcode, 40001);
});

test('getwxacodeunlimit validates scene, page, env_version as WeChat does', async (t) => {
  const token = await appToken();
  const cases: [unknown, number][] = [
    [{}, 40169],
    [{ scene: '' }, 40169],
    [{ scene: 'x'.repeat(33) }, 40169],
    [{ scene: 42 }, 40169],
    ['not json at all', 40169],
    [[1, 2], 40169],
    [{ scene: 'a%20b' }, 40129],
    [{ scene: 'a b' }, 40129],
    [{ scene: '票据' }, 40129],
    [{ scene: 'ok', page: '/pages/index/index' }, 41030],
    [{ scene: 'ok', page: 'pages/index/index?x=1' }, 41030],
    [{ scene: 'ok', env_version: 'beta' }, 40097],
    [{ scene: 'ok', check_path: 'yes' }, 40097],
    [{ scene: 'ok', width: '430' }, 40097],
    [{ scene: 'fail-45009' }, 45009],
  ];
  for (const [body, errcode] of cases) {
    const res = await wxacode(token, body);
    t.is(res.status, 200);
    t.regex(res.headers.get('content-type')!, /^application\/json/, JSON.stringify(body));
    t.is(((await res.json()) as { errcode: number }).errcode, errcode, JSON.stringify(body));
  }
  const ok = await wxacode(token, { scene: "0aZ!#$&'()*+,/:;=?@-._~", env_version: 'release', check_path: true });
  t.is(ok.headers.get('content-type'), 'image/png', 'every documented character is allowed');
  t.is((await wechatError(t, wx.getwxacodeUnlimit(token, { scene: 'fail-40097' }))).errcode, 40097);
});

test('the simulator still answers unknown paths with a JSON 404', async (t) => {
  const res = await get('/connect/nothing');
  t.is(res.status, 404);
  t.is(((await res.json()) as { errcode: number }).errcode, -1);
});
