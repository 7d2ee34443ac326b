import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { z } from 'zod';
import { buildConfig, ConfigError, loadConfigFile, parseYaml } from '../src/config/load.js';
import { parseDuration } from '../src/config/duration.js';
import { liveKeys } from '../src/config/live.js';
import { restartOnlyChanges } from '../src/config/reload.js';
import { configSchema } from '../src/config/schema.js';
import { ROOT } from './helpers/gateway.js';

const ISSUE_EXAMPLE = `
server:   { host: 0.0.0.0, port: 8080 }
wechat:
  apiBase: https://api.weixin.qq.com
  timeout: 3s
  apps:
    - appid: wx0123456789abcdef
      secret: \${WX_SECRET}
session:
  store: redis
  redis: { url: redis://127.0.0.1:6379 }
  ttl: 2h
routes:
  - { path: /api/public, upstream: http://127.0.0.1:9001, auth: none }
  - { path: /api,        upstream: http://127.0.0.1:9001, auth: required }
`;

function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    buildConfig(raw, 'test', env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

test('the documented keys load, with ${ENV} substituted and durations in ms', (t) => {
  const c = buildConfig(parseYaml(ISSUE_EXAMPLE, 'x'), 'x', { WX_SECRET: 's3cret' });
  t.is(c.wechat.apps[0]!.secret, 's3cret');
  t.is(c.wechat.timeout, 3000);
  t.is(c.session.ttl, 7_200_000);
  t.is(c.session.store, 'redis');
  t.deepEqual(
    c.routes.map((r) => [r.name, r.path, r.auth]),
    [
      ['api_public', '/api/public', 'none'],
      ['api', '/api', 'required'],
    ],
  );
  t.true(Object.isFrozen(c) && Object.isFrozen(c.routes[0]), 'the loaded config is frozen');
});

test('embedded defaults: memory store, required auth, sane timeouts', (t) => {
  const c = buildConfig({ wechat: { apps: [{ appid: 'wx0123456789abcdef', secret: 's' }] }, routes: [{ path: '/', upstream: 'http://u' }] }, 'x', {});
  t.is(c.session.store, 'memory');
  t.is(c.routes[0]!.auth, 'required');
  t.is(c.wechat.apiBase, 'https://api.weixin.qq.com');
  t.is(c.server.port, 8080);
  t.false(c.dev.simulator, 'the simulator is never on by default');
});

test('every problem is listed at once, each naming the key', (t) => {
  const list = problems(
    {
      server: { prot: 8080, port: 'eighty' },
      wechat: { apps: [{ appid: 'wx0123456789abcdef', secret: '${NOT_SET_ANYWHERE}' }], timeout: '3 seconds' },
      session: { store: 'postgres', ttl: '2' },
      routes: [
        { path: '/api', upstream: 'ftp://files' },
        { path: '/api', upstream: 'http://ok' },
        { path: 'api', upstream: 'http://ok', auth: 'maybe' },
      ],
    },
    {},
  );
  const expected = [
    'server.prot: unknown key',
    'server.port: must be a port number',
    'wechat.timeout: must be a duration',
    'wechat.apps[0].secret: environment variable NOT_SET_ANYWHERE is not set',
    'session.store: must be "memory" or "redis"',
    'session.ttl: must be a duration',
    'routes[0].upstream: must be an http(s) URL',
    'routes[1].path: duplicates routes[0].path',
    'routes[2].path: must be a path prefix',
    'routes[2].auth: must be "required" or "none"',
  ];
  for (const e of expected) t.true(list.some((p) => p.startsWith(e)), `${e}\n  in: ${list.join('\n  ')}`);
});

test('route paths that could confuse matching are refused', (t) => {
  for (const path of ['/api/', '/api//x', '/api/../x', '/api/./x', '/api%2f', '/api?x', '/api#x', '/a;b', 'api']) {
    const list = problems({ wechat: { apps: [{ appid: 'wx0123456789abcdef', secret: 's' }] }, routes: [{ path, upstream: 'http://u' }] });
    t.true(list.some((p) => p.startsWith('routes[0].path:')), path);
  }
});

test('the simulator cannot be combined with a real apiBase', (t) => {
  const list = problems({
    wechat: { apiBase: 'https://api.weixin.qq.com', apps: [{ appid: 'wx0123456789abcdef', secret: 's' }] },
    dev: { simulator: true },
  });
  t.true(list.some((p) => p.startsWith('wechat.apiBase: must not be set together with dev.simulator')));
});

test('durations need a unit', (t) => {
  t.is(parseDuration('500ms'), 500);
  t.is(parseDuration('2s'), 2000);
  t.is(parseDuration('5m'), 300_000);
  t.is(parseDuration('2h'), 7_200_000);
  t.is(parseDuration('30d'), 2_592_000_000);
  t.is(parseDuration('1.5s'), 1500);
  for (const bad of ['5', '2 hours', 's', '-1s', '1w', '']) t.is(parseDuration(bad), undefined, bad);
});

test('$$ is a literal dollar; a YAML duplicate key names its line', (t) => {
  const c = buildConfig({ wechat: { apps: [{ appid: 'wx0123456789abcdef', secret: 'pa$$word' }] } }, 'x', {});
  t.is(c.wechat.apps[0]!.secret, 'pa$word');
  const err = t.throws(() => parseYaml('server:\n  port: 1\n  port: 2\n', 'dup.yaml'), { instanceOf: ConfigError });
  t.regex(err!.problems[0]!, /^line 3: .*[Uu]nique/);
});

test("the repo's gateway.yaml and the production example are valid", (t) => {
  const dev = loadConfigFile(join(ROOT, 'gateway.yaml'), {});
  t.true(dev.dev.simulator);
  const prod = loadConfigFile(join(ROOT, 'config/production.example.yaml'), {
    WX_SECRET: 'x',
    WXGATE_ADMIN_TOKEN: 'admin-token-0123456789-abcdef',
    WXGATE_STATE_SECRET: 'state-secret-0123456789-0123456789-abc',
    WX_MP_SECRET: 'mp',
    WX_OPEN_SECRET: 'open',
  });
  t.is(prod.session.store, 'redis');
  t.is(prod.web?.publicUrl, 'https://m.example.com');
  t.is(dev.web?.scan?.demo, true, 'the quick start has the scan-to-login demo page');
  t.false(prod.dev.simulator);
  t.is(prod.wechat.apiBase, 'https://api.weixin.qq.com');
  t.regex(readFileSync(join(ROOT, 'config/production.example.yaml'), 'utf8'), /\$\{WX_SECRET\}/);
});

test('${NAME:-default} takes the default when NAME is unset or empty; a port may come from the environment', (t) => {
  const raw = { server: { port: '${WXGATE_T_PORT:-8081}' }, wechat: { apps: [{ appid: 'wx0123456789abcdef', secret: '${WXGATE_T_SECRET:-dev-secret}' }] } };
  t.is(buildConfig(raw, 'x', {}).server.port, 8081);
  t.is(buildConfig(raw, 'x', { WXGATE_T_PORT: '' }).wechat.apps[0]!.secret, 'dev-secret');
  const set = buildConfig(raw, 'x', { WXGATE_T_PORT: '9000', WXGATE_T_SECRET: 's' });
  t.is(set.server.port, 9000);
  t.is(set.wechat.apps[0]!.secret, 's');
  const bad = t.throws(() => buildConfig(raw, 'x', { WXGATE_T_PORT: '80x' }), { instanceOf: ConfigError });
  t.deepEqual(bad!.problems, ['server.port: must be a port number']);
  const missing = t.throws(() => buildConfig({ ...raw, server: { port: '${WXGATE_T_PORT}' } }, 'x', {}), { instanceOf: ConfigError });
  t.regex(missing!.problems.join('\n'), /server\.port: environment variable WXGATE_T_PORT is not set/);
});

test('web.scan with envVersion trial or develop needs checkPath: false (WeChat answers 41030 to every QR otherwise): an error naming the key', (t) => {
  const raw = (scan: object) => ({
    wechat: { apps: [{ appid: 'wx0123456789abcdef', secret: 's' }] },
    web: { publicUrl: 'https://m.example.com', scan },
  });
  for (const envVersion of ['trial', 'develop'] as const) {
    for (const scan of [{ envVersion }, { envVersion, checkPath: true }]) {
      const err = t.throws(() => buildConfig(raw(scan), 'x', {}), { instanceOf: ConfigError });
      t.deepEqual(err!.problems.map((p) => p.split(':')[0]), ['web.scan.checkPath'], JSON.stringify(scan));
      t.regex(err!.problems[0]!, new RegExp(`envVersion "${envVersion}".*41030`));
    }
    t.is(buildConfig(raw({ envVersion, checkPath: false }), 'x', {}).web?.scan?.envVersion, envVersion);
  }
  t.true(buildConfig(raw({ envVersion: 'release' }), 'x', {}).web?.scan?.checkPath);
});

const APP = { appid: 'wx0123456789abcdef', secret: 's' };

test('the cross-checks are listed even when a key of another section is invalid', (t) => {
  const list = problems({
    server: { port: 9100, maxConnections: 1.5 },
    wechat: { apps: [APP, APP] },
    metrics: { port: 9100 },
    routes: [{ path: '/a', upstream: 'http://u', timeout: 'soon' }, { path: '/A', upstream: 'http://u' }],
    endpoints: { session: '/login' },
  });
  for (const e of [
    'server.maxConnections: must be a whole number',
    'routes[0].timeout: must be a duration with a unit, e.g. "500ms", "2s", "2h", "30d"',
    'routes[1].path: duplicates routes[0].path "/A"',
    'wechat.apps[1].appid: "wx0123456789abcdef" is already listed at wechat.apps[0]',
    'endpoints.session: "/login" is already used by endpoints.login',
    'metrics.port: must differ from server.port',
  ]) t.true(list.includes(e), `${e}\n  in: ${list.join('\n  ')}`);
});

test('the cross-checks read the defaults from the schema: a default path taken twice, the default port', (t) => {
  t.deepEqual(problems({ wechat: { apps: [APP] }, metrics: { path: '/healthz' } }), ['metrics.path: "/healthz" is already used by endpoints.healthz']);
  t.deepEqual(problems({ wechat: { apps: [APP] }, metrics: { port: 8080 } }), ['metrics.port: must differ from server.port']);
  t.deepEqual(problems({ wechat: { apps: [APP] }, metrics: { port: '${P:-8080}' }, server: { port: '8080' } }), ['metrics.port: must differ from server.port'], 'ports from the environment compare as numbers');
  t.deepEqual(problems({ wechat: { apps: [APP] }, server: { workers: 2 } }).map((p) => p.split(':')[0]), ['session.store'], 'the memory store is the default');
});

test('server.trustedProxies: IP addresses and CIDR ranges, IPv4 and IPv6; anything else names the key and what is wrong', (t) => {
  const raw = (trustedProxies: unknown[]) => ({ wechat: { apps: [APP] }, server: { trustedProxies } });
  const ok = ['10.0.0.0/8', '192.168.1.7', '0.0.0.0/0', 'fd00::/8', '::1', '2001:db8::/32', '::ffff:10.0.0.0/104'];
  t.deepEqual(buildConfig(raw(ok), 'x', {}).server.trustedProxies, ok);
  t.deepEqual(problems(raw(['10.0.0.0/33', 'fd00::/129', 'loopback', '10.1/8', '10.0.0.0/255.0.0.0', '1.2.3.4/8/9', '010.0.0.1', 7])), [
    'server.trustedProxies[0]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8" (the prefix length after "/" is 0-32 for an IPv4 address)',
    'server.trustedProxies[1]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8" (the prefix length after "/" is 0-128 for an IPv6 address)',
    'server.trustedProxies[2]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8" ("loopback" is not an IP address)',
    'server.trustedProxies[3]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8" ("10.1" is not an IP address)',
    'server.trustedProxies[4]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8" (the prefix length after "/" is 0-32 for an IPv4 address)',
    'server.trustedProxies[5]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8" (the prefix length after "/" is 0-32 for an IPv4 address)',
    'server.trustedProxies[6]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8" ("010.0.0.1" is not an IP address)',
    'server.trustedProxies[7]: must be an IP address or CIDR range, e.g. "10.0.0.0/8" or "fd00::/8"',
  ]);
});

test('a reload may change the keys the schema marks live; the others are named as needing a restart', (t) => {
  const base = { wechat: { apps: [APP] }, routes: [{ path: '/a', upstream: 'http://u' }] };
  const load = (extra: Record<string, unknown> = {}) => buildConfig({ ...base, ...extra }, 'x', {});
  const cur = load({ server: { tls: { cert: 'a.pem', key: 'a.key' } } });
  t.deepEqual(
    restartOnlyChanges(
      cur,
      load({
        routes: [{ path: '/b', upstream: 'http://v' }],
        limits: { login: { perIp: 5 } },
        endpoints: { login: '/signin' },
        server: { tls: { cert: 'b.pem', key: 'b.key' }, trustedProxies: ['10.0.0.0/8'], bodyLimit: '8kb', requestTimeout: '5s', maxConnections: 5 },
        log: { access: false, openid: 'omit' },
      }),
    ),
    [],
  );
  t.deepEqual(
    restartOnlyChanges(cur, load({ server: { port: 1, maxHeaderSize: '32kb' }, session: { ttl: '1h', redis: { keyPrefix: 'x:' } }, log: { level: 'debug' }, dev: { simulator: true } })),
    ['server.port', 'server.maxHeaderSize', 'server.tls', 'session.redis', 'session.ttl', 'log.level', 'dev.simulator'],
  );
  t.deepEqual(restartOnlyChanges(load(), load({ web: { publicUrl: 'https://m.example.com', scan: {} } })), ['web'], 'a section set or removed is named whole');
});

test('the reload marks are in the schema, and in its JSON Schema as "x-reload"', (t) => {
  const marked = [
    'server.trustedProxies', 'server.bodyLimit', 'server.shutdownTimeout', 'server.requestTimeout', 'server.headersTimeout', 'server.keepAliveTimeout', 'server.maxConnections', 'server.tls',
    'endpoints', 'routes', 'limits', 'log.access', 'log.openid',
  ];
  t.deepEqual(liveKeys(configSchema), marked);
  const json = z.toJSONSchema(configSchema, { io: 'input' }) as { properties: Record<string, { properties?: Record<string, Record<string, unknown>> } & Record<string, unknown>> };
  const at = (path: string) => path.split('.').reduce<Record<string, unknown>>((s, k) => (s.properties as Record<string, Record<string, unknown>>)[k]!, json as unknown as Record<string, unknown>);
  for (const k of marked) t.truthy(at(k)['x-reload'], k);
  t.is(at('server.tls')['x-reload'], 'while-set');
  for (const k of ['server.port', 'session', 'log.level', 'wechat']) t.is(at(k)['x-reload'], undefined, k);
});
