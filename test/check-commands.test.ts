import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { buildConfig, loadConfigFile } from '../src/config/load.js';
import { CHECK_ROUTE_EXIT, explainRoute } from '../src/inspect.js';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, ROOT, SECRET, exited, runCli, startTestGateway, testConfig, writeConfig } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { startUpstream } from './helpers/upstream.js';

/**
 * check-config prints a file that check-config accepts again and that loads to the same configuration;
 * check-route says, and exits with, what a request (method and path) would get from the real gateway.
 */
async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = runCli(args, env);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = await exited(child);
  return { code, out, err };
}

const PROD_ENV = {
  WX_SECRET: 'prod-secret-from-env',
  WX_MP_SECRET: 'mp-secret-from-env',
  WX_OPEN_SECRET: 'open-secret-from-env',
  WXGATE_STATE_SECRET: 'state-secret-0123456789-0123456789-abc',
  WXGATE_ADMIN_TOKEN: 'admin-token-0123456789-abcdef',
};

/** check-config FILE, then check-config on what it printed; both loaded configurations must be equal. */
async function roundTrip(t: import('ava').ExecutionContext, file: string, env: Record<string, string>, secrets: string[]) {
  const first = await cli(['check-config', file], env);
  t.is(first.code, 0, first.err);
  for (const s of secrets) t.false(first.out.includes(s), `no secret in the output (${s.slice(0, 4)}…)`);
  t.notRegex(first.out, /\*\*\*/, 'no masked values that would not load');
  // the variables a secret written into the file is shown as, set to the value (what an operator would do)
  const moved = Object.fromEntries([...first.out.matchAll(/^# (\S+?)(?: \(password\))? is written in the file: shown as \$\{(\w+)\}/gm)].map((m) => [m[2]!, m[1]!]));
  const printed = writeConfig(first.out);
  return { out: first.out, printed, moved, again: (extra: Record<string, string>) => cli(['check-config', printed], { ...env, ...extra }) };
}

test('check-config on the production example prints a valid file with the ${ENV} references as written; fed back, the same configuration', async (t) => {
  const file = join(ROOT, 'config/production.example.yaml');
  const { out, printed, moved, again } = await roundTrip(t, file, PROD_ENV, Object.values(PROD_ENV));
  t.deepEqual(moved, {}, 'every secret there is a reference already');
  t.regex(out, /secret: \$\{WX_SECRET\}/);
  t.regex(out, /token: \$\{WXGATE_ADMIN_TOKEN\}/);
  t.regex(out, /ttl: 2h/, 'durations as written');
  t.regex(out, /negativeTtl: 2s/);
  t.regex(out, /bodyLimit: 4kb/);
  t.regex(out, /openapi: \/openapi\.json/, 'defaults filled in (endpoints.openapi is not in the file)');
  const second = await again({});
  t.is(second.code, 0, second.err);
  t.deepEqual(loadConfigFile(printed, PROD_ENV), loadConfigFile(file, PROD_ENV));
});

test('check-config with secrets written into the file: shown as ${ENV} references named after the key, never printed; the same configuration with those set', async (t) => {
  const raw = testConfig({
    apiBase: 'http://127.0.0.1:1',
    routes: [
      { path: '/api', upstream: 'http://api.internal:9001', timeout: '5s', headers: { 'X-Env': 'prod' } },
      { path: '/v1', upstream: ['http://a.internal:1', 'http://b.internal:2'], stripPrefix: true, auth: 'none', bodyLimit: '1mb' },
    ],
    session: { store: 'redis', ttl: '90m', redis: { url: 'redis://:hunter2-password@redis.internal:6379' } },
    admin: { port: 9465, token: 'admin-token-0123456789-abcdef' },
    web: { publicUrl: 'https://m.example.com', stateSecret: 'state-secret-0123456789-0123456789-abc', mp: { appid: 'wx2222222222222222', secret: 'mp-literal-secret' } },
  });
  const file = writeConfig(raw);
  const secrets = [SECRET, 'hunter2-password', 'admin-token-0123456789-abcdef', 'state-secret-0123456789-0123456789-abc', 'mp-literal-secret'];
  const { out, printed, moved, again } = await roundTrip(t, file, {}, secrets);
  t.deepEqual(Object.values(moved).sort(), ['admin.token', 'session.redis.url', 'web.mp.secret', 'web.stateSecret', 'wechat.apps[0].secret']);
  t.regex(out, /ttl: 90m/);
  t.regex(out, /url: redis:\/\/:\$\{WXGATE_SESSION_REDIS_URL_PASSWORD\}@redis\.internal:6379/);
  const unset = await again({});
  t.is(unset.code, 1, 'the moved secrets are required variables');
  t.regex(unset.err, /wechat\.apps\[0\]\.secret: environment variable WXGATE_WECHAT_APPS_0_SECRET is not set/);
  const env = {
    WXGATE_WECHAT_APPS_0_SECRET: SECRET,
    WXGATE_SESSION_REDIS_URL_PASSWORD: 'hunter2-password',
    WXGATE_ADMIN_TOKEN: 'admin-token-0123456789-abcdef',
    WXGATE_WEB_STATE_SECRET: 'state-secret-0123456789-0123456789-abc',
    WXGATE_WEB_MP_SECRET: 'mp-literal-secret',
  };
  t.deepEqual(Object.keys(env).sort(), Object.keys(moved).sort());
  const second = await again(env);
  t.is(second.code, 0, second.err);
  t.deepEqual(loadConfigFile(printed, env), buildConfig(raw, 'test', {}));
});

test("check-config on the repo's gateway.yaml: fed back, the same configuration", async (t) => {
  const file = join(ROOT, 'gateway.yaml');
  const values: Record<string, string> = {
    WXGATE_WECHAT_APPS_0_SECRET: 'dev-secret-not-for-production',
    WXGATE_WEB_MP_SECRET: 'dev-mp-secret-not-for-production',
    WXGATE_WEB_MP_QR_TOKEN: 'devToken123',
    WXGATE_WEB_MP_QR_ENCODING_AESKEY: 'devEncodingAESKey0123456789abcdefghijklmnop',
  };
  const { printed, moved, again } = await roundTrip(t, file, {}, Object.values(values));
  t.deepEqual(Object.keys(moved).sort(), Object.keys(values).sort(), 'the secrets written in the file, web.mpQr\'s Token and EncodingAESKey too');
  const env = Object.fromEntries(Object.keys(moved).map((name) => [name, values[name]!]));
  t.is((await again(env)).code, 0);
  t.deepEqual(loadConfigFile(printed, env), loadConfigFile(file, {}));
});

test('check-route answers as the running gateway does, for every own endpoint and method (405, 404), routes and refused paths', async (t) => {
  const sim = await startSimulator(0);
  t.teardown(() => sim.close());
  const up = await startUpstream();
  t.teardown(() => up.close());
  const raw = testConfig({
    apiBase: sim.url,
    routes: [{ path: '/api', upstream: up.url }],
    web: {
      publicUrl: 'http://127.0.0.1:1',
      mp: { appid: 'wx2222222222222222', secret: 'mp-secret' },
      open: { appid: 'wx3333333333333333', secret: 'open-secret' },
      scan: { checkPath: false, demo: true },
      mpQr: { token: 'mptoken123', demo: true },
    },
  });
  raw.wechat = { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] };
  const gw = await startTestGateway(raw);
  t.teardown(() => gw.close());
  const config = buildConfig(raw, 'test');
  const paths = [
    '/login', '/Login/', '/session', '/logout', '/wx/decrypt', '/wx/phone', '/healthz', '/readyz', '/openapi.json', '/metrics',
    '/oauth/mp/authorize', '/oauth/mp/callback', '/oauth/open/authorize', '/oauth/open/callback', '/oauth/nope',
    '/oauth/web/authorize',
    '/scan/tickets', '/scan/tickets/abc', '/scan/tickets/abc/scanned', '/scan/tickets/abc/confirm', '/scan/tickets/abc/cancel', '/scan/demo', '/scan/other/x',
    '/qr/tickets', '/qr/tickets/abc', '/qr/demo', '/qr/other', '/wx/mp/events',
    '/api/x', '/nowhere', '/api/%2e%2e/x',
  ];
  for (const path of paths) {
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE']) {
      const { outcome, text } = explainRoute(config, method, path);
      const res = await request(gw.url, { method, path });
      const error = res.json?.error; // HEAD answers have no body
      const seen = `${method} ${path}: check-route says "${text.split('\n')[0]}", the gateway answers ${res.status} ${error ?? ''}`;
      if (outcome === 'method_not_allowed') t.is(res.status, 405, seen);
      else if (outcome === 'not_found') t.true(res.status === 404 && (method === 'HEAD' || error === 'not_found'), seen);
      else if (outcome === 'bad_path') t.true(res.status === 400 && (method === 'HEAD' || error === 'bad_path'), seen);
      else t.true(res.status !== 405 && (method === 'HEAD' || (error !== 'not_found' && error !== 'bad_path')), seen);
    }
  }
});

test('check-route exits with a code per outcome; METHOD PATH, PATH --method METHOD and PATH alone (GET)', async (t) => {
  const file = writeConfig(testConfig({ apiBase: 'http://127.0.0.1:1', routes: [{ path: '/api', upstream: 'http://api.internal:9001' }] }));
  const cases: Array<[string[], number, RegExp]> = [
    [['GET', '/api/x'], CHECK_ROUTE_EXIT.route, /^GET \/api\/x: route "api"/],
    [['/api/x'], 0, /^GET \/api\/x: route "api"/],
    [['POST', '/login'], CHECK_ROUTE_EXIT.own, /answered by the gateway itself \(its own endpoint "login"/],
    [['/login', '--method', 'post'], 3, /^POST \/login: answered by the gateway itself/],
    [['GET', '/login'], CHECK_ROUTE_EXIT.method_not_allowed, /405 method_not_allowed \(Allow: POST\)/],
    [['/login'], 5, /^GET \/login: .*405/],
    [['--method', 'DELETE', '/healthz'], 5, /Allow: GET, HEAD/],
    [['GET', '/nowhere'], CHECK_ROUTE_EXIT.not_found, /no route, 404 not_found/],
    [['GET', '/api/%2e%2e/x'], CHECK_ROUTE_EXIT.bad_path, /refused, 400 bad_path/],
  ];
  t.deepEqual([...new Set(cases.map((c) => c[1]))].sort(), [0, 3, 4, 5, 6], 'every outcome');
  for (const [args, code, re] of cases) {
    const r = await cli(['check-route', file, ...args]);
    t.is(r.code, code, `check-route ${args.join(' ')}: ${r.out}${r.err}`);
    t.regex(r.out, re);
  }
  t.is((await cli(['check-route', file])).code, 2, 'no path');
  t.is((await cli(['check-route', file, 'GET', '/login', '--method', 'POST'])).code, 2, 'two different methods');
  t.is((await cli(['check-route', file, 'a', 'b', 'c'])).code, 2);
  writeFileSync(file, readFileSync(file, 'utf8').replace('routes:', 'routez:'));
  t.is((await cli(['check-route', file, 'GET', '/api'])).code, 1, 'an invalid configuration');
});

/** A configuration with these routes (WeChat's address is never called by the check commands). */
const checkedConfig = (routes: object[], extra: Record<string, unknown> = {}) => testConfig({ apiBase: 'http://127.0.0.1:1', routes, ...extra });

test('check-config prints the configuration with defaults, secrets never shown; check-route says what a request would get', async (t) => {
  const file = writeConfig(
    checkedConfig([
      { path: '/api', upstream: 'http://api.internal:9001', apps: [APPID], timeout: '5s' },
      { path: '/api/public', upstream: 'http://api.internal:9001', auth: 'none' },
      { path: '/v1/items', upstream: ['http://a.internal:1', 'http://b.internal:2'], stripPrefix: true, auth: 'none' },
    ], {
      session: { store: 'redis', redis: { url: 'redis://:hunter2-password@redis.internal:6379' } },
      admin: { port: 9465, token: 'admin-token-0123456789-abcdef' },
    }),
  );
  const checked = await cli(['check-config', file]);
  t.is(checked.code, 0, checked.err);
  t.regex(checked.out, /valid \(3 routes, redis session store\)/);
  t.regex(checked.out, /secret: \$\{WXGATE_WECHAT_APPS_0_SECRET\}/, 'a secret written into the file is shown as a variable (test/check-commands.test.ts)');
  t.regex(checked.out, /redis:\/\/:\$\{WXGATE_SESSION_REDIS_URL_PASSWORD\}@redis\.internal:6379/);
  t.regex(checked.out, /ttl: 2h/, 'defaults filled in, as a file has them');
  for (const s of [SECRET, 'hunter2-password', 'admin-token-0123456789-abcdef']) t.false(checked.out.includes(s), s);

  const route = async (method: string, path: string) => (await cli(['check-route', file, method, path])).out;
  t.regex(await route('GET', '/api/orders/1'), /route "api" \(path \/api\)[\s\S]*upstream: http:\/\/api\.internal:9001\/api\/orders\/1[\s\S]*auth: +required[\s\S]*apps: +wx0123456789abcdef[\s\S]*timeout: +5000 ms/);
  t.regex(await route('GET', '/API/Public/x'), /route "api_public"[\s\S]*auth: +none/, 'case-insensitive, longest prefix');
  t.regex(await route('GET', '/api/%2e%2e/admin'), /refused, 400 bad_path/);
  t.regex(await route('GET', '/v1/items/7?q=1'), /upstream: one of http:\/\/a\.internal:1, http:\/\/b\.internal:2 \(in turn; a failing one skipped for 10000 ms\), path \/7\?q=1/);
  t.regex(await route('POST', '/login'), /answered by the gateway itself/);
  t.regex(await route('GET', '/other'), /no route, 404/);
  t.is((await cli(['check-route', file])).code, 2);
});
