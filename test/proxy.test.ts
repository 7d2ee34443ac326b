import net from 'node:net';
import test from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { waitFor } from './helpers/wait.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let redis: RedisServer;
let up: Upstream;
const gateways: Record<'memory' | 'redis', TestGateway> = {} as never;

const IDENTITY_NAME = /^x[-_](openid|unionid|appid)$/i;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  redis = await startRedis();
  up = await startUpstream();
  const routes = [
    { path: '/api/public', upstream: up.url, auth: 'none' },
    { path: '/api', upstream: up.url, timeout: '400ms' },
    { name: 'down', path: '/down', upstream: 'http://127.0.0.1:1' },
  ];
  gateways.memory = await startTestGateway(testConfig({ apiBase: sim.url, routes }));
  gateways.redis = await startTestGateway(
    testConfig({ apiBase: sim.url, routes, session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'proxytest:' } } }),
  );
});
test.after.always(async () => {
  await gateways.memory?.close();
  await gateways.redis?.close();
  await up?.close();
  await redis?.close();
  await sim?.close();
});

/** The last request the upstream saw with this marker in its URL. */
function seenWith(marker: string) {
  return up.seen.filter((s) => s.url.includes(marker)).at(-1);
}

for (const store of ['memory', 'redis'] as const) {
  test.serial(`${store} store: login → proxied request carries X-Openid → logout → 401`, async (t) => {
    const gw = gateways[store];
    const token = await login(gw.url, `flow-${store}.1`);
    const session = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } });

    const res = await request(gw.url, { path: `/api/orders?m=${store}-flow&x=1`, headers: { authorization: `Bearer ${token}` } });
    t.is(res.status, 200);
    t.is(res.headers['x-upstream'], 'yes');
    const seen = seenWith(`${store}-flow`)!;
    t.is(seen.url, `/api/orders?m=${store}-flow&x=1`, 'path and query reach the upstream unchanged');
    t.is(seen.headers['x-openid'], session.json.openid);
    t.is(seen.headers['x-appid'], APPID);
    t.is(seen.headers['x-unionid'], undefined, 'no X-Unionid when WeChat gave none');
    t.is(seen.headers.authorization, undefined, "the gateway's token is not forwarded");
    t.is(seen.headers['x-forwarded-for'], '127.0.0.1');
    t.is(seen.headers['x-forwarded-proto'], 'http');

    t.is((await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${token}` } })).status, 204);
    const after = await request(gw.url, { path: `/api/orders?m=${store}-after`, headers: { authorization: `Bearer ${token}` } });
    t.is(after.status, 401);
    t.is(after.json.error, 'unauthorized');
    t.is(seenWith(`${store}-after`), undefined);
  });
}

test('X-Unionid is set when WeChat gave a unionid', async (t) => {
  const gw = gateways.redis;
  const token = await login(gw.url, 'union-zoe.1');
  await request(gw.url, { path: '/api/me?m=union', headers: { authorization: `Bearer ${token}` } });
  t.regex(String(seenWith('m=union')!.headers['x-unionid']), /^o[A-Za-z0-9_-]{27}$/);
});

test('client-sent identity headers never reach the upstream, in any spelling', async (t) => {
  const gw = gateways.redis;
  const token = await login(gw.url, 'spoof-victim.1');
  const spoof: Array<[string, string]> = [
    ['X-Openid', 'evil'],
    ['x-openid', 'evil-2'],
    ['X_Openid', 'evil-3'],
    ['X-OPENID', 'evil-4'],
    ['x_unionid', 'evil-union'],
    ['X-Unionid', 'evil-union-2'],
    ['X-APPID', 'wxevil'],
    ['X_appid', 'wxevil-2'],
    ['Connection', 'keep-alive, X-Openid, X-Appid'],
  ];
  // authenticated route: only the gateway's values arrive
  await request(gw.url, { path: '/api/x?m=spoof-auth', headers: [...spoof, ['Authorization', `Bearer ${token}`]] });
  const seen = seenWith('m=spoof-auth')!;
  const names = [];
  for (let i = 0; i < seen.rawHeaders.length; i += 2) if (IDENTITY_NAME.test(seen.rawHeaders[i]!)) names.push(seen.rawHeaders[i]!.toLowerCase());
  t.deepEqual(names.sort(), ['x-appid', 'x-openid']);
  t.regex(String(seen.headers['x-openid']), /^o/);
  t.is(seen.headers['x-appid'], APPID);
  t.false(seen.rawHeaders.some((v) => v.includes('evil')));

  // public route: no identity at all
  await request(gw.url, { path: '/api/public/x?m=spoof-public', headers: [...spoof, ['Authorization', `Bearer ${token}`]] });
  const pub = seenWith('m=spoof-public')!;
  for (let i = 0; i < pub.rawHeaders.length; i += 2) t.notRegex(pub.rawHeaders[i]!, IDENTITY_NAME);
  t.is(pub.headers.authorization, undefined);
});

test('Expect: 100-continue cannot smuggle a client X-Openid (http-proxy #1219)', async (t) => {
  const gw = gateways.redis;
  const res = await request(gw.url, {
    method: 'POST',
    path: '/api/public/upload?m=expect',
    headers: { expect: '100-continue', 'x-openid': 'evil', 'content-type': 'text/plain', 'content-length': '5' },
    body: 'hello',
  });
  t.is(res.status, 200);
  const seen = seenWith('m=expect')!;
  t.is(seen.headers['x-openid'], undefined);
  t.is(seen.body, 'hello');
});

test('client X-Forwarded-* from an untrusted peer are replaced', async (t) => {
  const gw = gateways.redis;
  await request(gw.url, {
    path: '/api/public/x?m=xff',
    headers: { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example', forwarded: 'for=6.6.6.6', host: 'shop.example' },
  });
  const seen = seenWith('m=xff')!;
  t.is(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.is(seen.headers['x-forwarded-proto'], 'http');
  t.is(seen.headers['x-forwarded-host'], 'shop.example');
  t.is(seen.headers.forwarded, undefined);
});

test('auth: no token, a bad token, or a token in the query string → 401 JSON with WWW-Authenticate', async (t) => {
  const gw = gateways.redis;
  const token = await login(gw.url, 'query-user.1');
  const cases: Array<[string, Record<string, string>]> = [
    ['/api/x?m=noauth', {}],
    ['/api/x?m=badtoken', { authorization: 'Bearer not-a-token' }],
    ['/api/x?m=unknown', { authorization: `Bearer ${'B'.repeat(59)}` }],
    [`/api/x?m=querytoken&token=${token}&access_token=${token}`, {}],
    ['/api/x?m=basic', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
  ];
  for (const [path, headers] of cases) {
    const res = await request(gw.url, { path, headers });
    t.is(res.status, 401, path);
    t.is(res.json.error, 'unauthorized');
    t.regex(String(res.headers['www-authenticate']), /^Bearer realm="wxgate"/);
  }
  t.is(up.seen.filter((s) => /m=(noauth|badtoken|unknown|querytoken|basic)/.test(s.url)).length, 0);
});

test('paths: no route → 404; tricks that would skip auth → 400 or the stricter route', async (t) => {
  const gw = gateways.redis;
  const nf = await request(gw.url, { path: '/nothing-here' });
  t.is(nf.status, 404);
  t.is(nf.json.error, 'not_found');

  const rejected = [
    '/api/public/../secret?m=t1',
    '/api/public/%2e%2e/secret?m=t2',
    '/api/public/%2E%2e/secret?m=t3',
    '/api/public%2f..%2fsecret?m=t4',
    '/api/public%5csecret?m=t5',
    '//api/secret?m=t6',
    '/api/public//x?m=t7',
    '/api/public/./x?m=t8',
    '/api/public;x=1/x?m=t9',
    '/api/public/%zz?m=t10',
  ];
  for (const path of rejected) {
    const res = await request(gw.url, { path });
    t.is(res.status, 400, path);
    t.is(res.json.error, 'bad_path');
  }
  // case games land on the stricter route
  t.is((await request(gw.url, { path: '/API/secret?m=t11' })).status, 401);
  t.is((await request(gw.url, { path: '/Api/Public/x?m=t12' })).status, 200);
  // a prefix matches on segment boundaries only
  t.is((await request(gw.url, { path: '/api/publicity?m=t13' })).status, 401);
  // routing looks at the path, never the query
  t.is((await request(gw.url, { path: '/api/secret?next=/api/public&m=t14' })).status, 401);
  t.is((await request(gw.url, { path: '/nothing?/api/public&m=t15' })).status, 404);
  t.deepEqual(
    up.seen.filter((s) => /m=t\d+/.test(s.url)).map((s) => s.url),
    ['/Api/Public/x?m=t12'],
    'only the public request reached the upstream, with the exact path that was matched',
  );
});

test('absolute-form and asterisk request targets are refused', async (t) => {
  const gw = gateways.redis;
  const port = new URL(gw.url).port;
  const raw = (line: string) =>
    new Promise<string>((resolve) => {
      const s = net.connect(Number(port), '127.0.0.1', () => s.end(`${line}\r\nHost: x\r\nConnection: close\r\n\r\n`));
      let out = '';
      s.on('data', (d) => (out += d));
      s.on('close', () => resolve(out));
    });
  t.regex(await raw('GET http://evil.example/api/public/x HTTP/1.1'), /^HTTP\/1\.1 400/);
  t.regex(await raw('OPTIONS * HTTP/1.1'), /^HTTP\/1\.1 400/);
});

test('upstream refused → 502, too slow → 504, and the gateway keeps serving', async (t) => {
  const gw = gateways.redis;
  const token = await login(gw.url, 'errors-user.1');
  const auth = { authorization: `Bearer ${token}` };
  const down = await request(gw.url, { path: '/down/x', headers: auth });
  t.is(down.status, 502);
  t.is(down.json.error, 'upstream_unavailable');
  const slow = await request(gw.url, { path: '/api/slow?ms=3000', headers: auth });
  t.is(slow.status, 504);
  t.is(slow.json.error, 'upstream_timeout');
  t.is((await request(gw.url, { path: '/api/ok?m=after-errors', headers: auth })).status, 200);
  const metrics = (await request(gw.url, { path: '/metrics' })).text;
  t.regex(metrics, /wxgate_upstream_errors_total\{route="down",kind="refused"\} 1/);
  t.regex(metrics, /wxgate_upstream_errors_total\{route="api",kind="timeout"\} 1/);
  t.regex(metrics, /wxgate_http_requests_total\{route="api",method="GET",status="504"\} 1/);
  t.regex(metrics, /wxgate_session_lookups_total\{source="lru"\} [1-9]/);
});

test('a client that goes away takes its upstream request with it', async (t) => {
  const gw = gateways.memory;
  const before = up.aborted;
  await new Promise<void>((resolve) => {
    const s = net.connect(Number(new URL(gw.url).port), '127.0.0.1', () => {
      s.write('GET /api/public/hang HTTP/1.1\r\nHost: x\r\n\r\n');
      setTimeout(() => {
        s.destroy();
        resolve();
      }, 150);
    });
  });
  await waitFor(() => up.aborted > before, { message: 'the upstream saw the request abandoned' });
  t.is(up.aborted, before + 1);
});
