import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { ROOT, runCli } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from './helpers/ports.js';
import { startRedis } from './helpers/redis.js';
import { startSimulator } from '../src/dev/simulator.js';

const FILE = join(ROOT, 'config/production.example.yaml');
const TEXT = readFileSync(FILE, 'utf8');

/** The variables the file's header says to set (its "Environment" block): `NAME` at the start of a comment line. */
function documentedVariables(): { required: string[]; optional: string[] } {
  const header = TEXT.slice(0, TEXT.search(/^[^#\s]/m));
  const required = [...header.matchAll(/^#\s+([A-Z][A-Z0-9_]+)\s+required\b/gm)].map((m) => m[1]!);
  const optional = [...header.matchAll(/^#\s+([A-Z][A-Z0-9_]+)\s+default\b/gm)].map((m) => m[1]!);
  return { required, optional };
}

test('config/production.example.yaml documents every ${ENV} it uses, and says which are required', (t) => {
  const { required, optional } = documentedVariables();
  const used = new Set([...TEXT.replace(/(^|\s)#.*$/gm, '').matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:-)?/g)].map((m) => `${m[1]}${m[2] ? '?' : ''}`));
  const documented = new Set([...required, ...optional.map((o) => `${o}?`)]);
  t.deepEqual([...used].sort(), [...documented].sort(), 'the header lists exactly the variables the file uses (required = no default)');
  t.notRegex(TEXT, /stateSecret:.*optional/, 'stateSecret as written is required: its variable must be set');
});

test('config/production.example.yaml runs as it is, with only the documented environment: ready against a real Redis, logs in against the simulator', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const sim = await startSimulator(0);
  t.teardown(() => sim.close());
  const [port, metricsPort, adminPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const env: Record<string, string> = {
    WX_SECRET: 'secret-from-env',
    WX_MP_SECRET: 'mp-secret-from-env',
    WX_OPEN_SECRET: 'open-secret-from-env',
    WXGATE_STATE_SECRET: 'state-secret-0123456789-0123456789-abc',
    WXGATE_ADMIN_TOKEN: 'admin-token-0123456789-abcdef',
    WXGATE_REDIS_URL: redis.url,
    WXGATE_PORT: String(port),
    WXGATE_METRICS_PORT: String(metricsPort),
    WXGATE_ADMIN_PORT: String(adminPort),
    WXGATE_WECHAT_API: sim.url,
    WXGATE_WATCH: '0',
  };
  const { required, optional } = documentedVariables();
  for (const name of Object.keys(env).filter((n) => n !== 'WXGATE_WATCH')) {
    t.true(required.includes(name) || optional.includes(name), `${name} is documented in the file's header`);
  }
  for (const name of required) t.true(name in env, `the test sets the required ${name}`);

  const child = runCli(['--config', FILE], env);
  const stderr: string[] = [];
  child.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
  });
  const base = `http://127.0.0.1:${port}`;
  const ready = async () => {
    if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}`);
    return (await request(base, { path: '/readyz' }).then((r) => r.status, () => 0)) === 200;
  };
  await waitFor(ready, { timeout: 15_000, interval: 100, message: '/readyz 200' }).catch((err: Error) => {
    throw new Error(`${err.message}; stderr: ${stderr.join('')}`);
  });

  const login = await request(base, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: '{"code":"alice.1"}' });
  t.is(login.status, 200, login.text);
  t.truthy(login.json.token);
  const metrics = await request(`http://127.0.0.1:${metricsPort}`, { path: '/metrics' });
  t.regex(metrics.text, /wxgate_logins_total\{result="ok"\} 1/);
  const admin = await request(`http://127.0.0.1:${adminPort}`, {
    path: '/apps/wx0123456789abcdef/access_token',
    headers: { authorization: `Bearer ${env.WXGATE_ADMIN_TOKEN}` },
  });
  t.is(admin.status, 200, admin.text);
  child.kill('SIGTERM');
  t.is(await exited, 0);
});
