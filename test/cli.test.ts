import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { APPID, ROOT, exited, runCli, spawnGateway, writeConfig } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { freePort } from './helpers/ports.js';

async function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = runCli(args, env);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const [code] = await exited(child);
  return { code, out, err };
}

test('an invalid file stops the process with every problem listed', async (t) => {
  const file = writeConfig(`
server: { port: 8080, hots: x }
wechat:
  apps: [{ appid: wx0123456789abcdef, secret: "\${WXGATE_TEST_UNSET}" }]
routes:
  - { path: /api, upstream: not-a-url }
  - { path: /api, upstream: http://127.0.0.1:9001 }
`);
  const { code, err } = await run(['--config', file]);
  t.is(code, 1);
  t.regex(err, /server\.hots: unknown key/);
  t.regex(err, /wechat\.apps\[0\]\.secret: environment variable WXGATE_TEST_UNSET is not set/);
  t.regex(err, /routes\[0\]\.upstream: must be an http\(s\) URL/);
  t.regex(err, /routes\[1\]\.path: duplicates routes\[0\]\.path/);
});

/** The production example's web-login secrets. */
const WEB_ENV = { WXGATE_STATE_SECRET: 'state-secret-0123456789-0123456789-abc', WX_MP_SECRET: 'mp-from-env', WX_OPEN_SECRET: 'open-from-env' };

test('check-config validates without starting', async (t) => {
  const ok = await run(['check-config', join(ROOT, 'config/production.example.yaml')], { ...WEB_ENV, WX_SECRET: 'from-env-secret', WXGATE_ADMIN_TOKEN: 'admin-token-0123456789-abcdef' });
  t.is(ok.code, 0, ok.err);
  t.regex(ok.out, /valid/);
  t.notRegex(ok.out + ok.err, /from-env-secret/);
  const bad = await run(['check-config', join(ROOT, 'config/production.example.yaml')], { ...WEB_ENV, WX_SECRET: '', WXGATE_ADMIN_TOKEN: 'admin-token-0123456789-abcdef' });
  t.is(bad.code, 1);
  t.regex(bad.err, /WX_SECRET is not set/);
  const missing = await run(['check-config', '/nonexistent/gateway.yaml']);
  t.is(missing.code, 1);
  t.regex(missing.err, /cannot read the file: ENOENT/);
});

test('unknown commands and options are usage errors', async (t) => {
  t.is((await run(['frobnicate'])).code, 2);
  t.is((await run(['--nope'])).code, 2);
});

test("the README walk-through: the repo's gateway.yaml runs offline end to end", async (t) => {
  const [port, sim, upstream] = await Promise.all([freePort(), freePort(), freePort()]);
  const yaml = readFileSync(join(ROOT, 'gateway.yaml'), 'utf8')
    .replace('port: 8080', `port: ${port}`)
    .replace('simulatorPort: 9100', `simulatorPort: ${sim}`)
    .replace('exampleUpstreamPort: 9001', `exampleUpstreamPort: ${upstream}`)
    .replaceAll('http://127.0.0.1:9001', `http://127.0.0.1:${upstream}`);
  const gw = await spawnGateway(yaml);
  t.teardown(() => gw.stop());
  t.true(gw.stdout.some((l) => l.includes('DEV MODE: WeChat simulator')), 'the simulator is announced in the log');

  const login = await request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: '{"code":"demo-user.1"}' });
  t.is(login.status, 200);
  const hello = await request(gw.url, { path: '/api/hello', headers: { authorization: `Bearer ${login.json.token}`, 'x-openid': 'spoofed' } });
  t.is(hello.status, 200);
  t.is(hello.json.service, 'example-upstream');
  t.regex(hello.json.openid, /^o[A-Za-z0-9_-]{27}$/);
  t.is(hello.json.appid, APPID);
  const metrics = await request(gw.url, { path: '/metrics' });
  t.regex(metrics.text, /wxgate_logins_total\{result="ok"\} 1/);
  t.is(await gw.stop(), 0);
});
