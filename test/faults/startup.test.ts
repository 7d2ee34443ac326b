import { once } from 'node:events';
import net from 'node:net';
import test from 'ava';
import { Redis } from 'ioredis';
import { buildConfig } from '../../src/config/load.js';
import { ListenError, startGateway } from '../../src/main.js';
import { createLogger } from '../../src/base/logger.js';
import { exited, runCli, testConfig, writeConfig } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';

/**
 * A gateway that cannot open one of the listeners its configuration asks for does not start half: it
 * closes what it had opened (the other listeners, Redis connections, timers) and the process exits 1,
 * naming the listener, its address and its key.
 */

const ADMIN_TOKEN = 'admin-token-0123456789-abcdef';

/** Holds a port on 127.0.0.1, as another program would. */
async function hold(port: number): Promise<net.Server> {
  const srv = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', resolve);
  });
  return srv;
}

/** Connects to a port: 'connected' or the error code. */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** Every listener on a port of its own: the main one, metrics, admin, the dev simulator and example upstream. */
async function allListeners() {
  const [main, metrics, admin, sim, upstream] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const ports = { main, metrics, admin, sim, upstream };
  const raw = {
    ...testConfig({ apiBase: 'unused' }),
    wechat: { timeout: '1s', apps: [{ appid: 'wx0123456789abcdef', secret: 'test-secret-0123456789' }] },
    server: { host: '127.0.0.1', port: main },
    metrics: { port: metrics },
    admin: { port: admin, token: ADMIN_TOKEN },
    dev: { simulator: true, simulatorPort: sim, exampleUpstream: true, exampleUpstreamPort: upstream },
  };
  return { ports, raw };
}

const CASES = [
  { taken: 'main', listener: 'requests', key: 'server.port' },
  { taken: 'metrics', listener: 'metrics', key: 'metrics.port' },
  { taken: 'admin', listener: 'the admin API', key: 'admin.port' },
  { taken: 'sim', listener: 'the dev simulator', key: 'dev.simulatorPort' },
  { taken: 'upstream', listener: 'the dev example upstream', key: 'dev.exampleUpstreamPort' },
] as const;

for (const c of CASES) {
  test(`the process exits 1 naming the listener when the port of ${c.key} is taken, and leaves nothing listening`, async (t) => {
    const { ports, raw } = await allListeners();
    const port = ports[c.taken];
    const squatter = await hold(port);
    t.teardown(() => void squatter.close());
    const child = runCli(['--config', writeConfig(raw)], { WXGATE_WATCH: '1' });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    t.teardown(() => clearTimeout(killer));
    const [code, signal] = await exited(child);
    t.is(signal, null, `the process ended by itself (it was still running 20 s later): ${err}`);
    t.is(code, 1, out + err);
    t.regex(err, new RegExp(`^wxgate: cannot listen for ${c.listener} on 127\\.0\\.0\\.1:${port}: address already in use \\(${c.key.replace('.', '\\.')}\\)$`, 'm'));
    t.notRegex(err, /left open/, 'everything it opened was closed: the process ended on its own');
    t.notRegex(out, /wxgate listening/, 'never announced as listening');
    for (const [name, p] of Object.entries(ports)) {
      if (name !== c.taken) t.is(await tryConnect(p), 'ECONNREFUSED', `nothing listens on the ${name} port ${p} any more`);
    }
  });
}

test('in the process: a taken admin port with the Redis store rejects the start, frees every port it had and leaves no Redis connection', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const { ports, raw } = await allListeners();
  const squatter = await hold(ports.admin);
  t.teardown(() => void squatter.close());
  const config = buildConfig({ ...raw, session: { store: 'redis', redis: { url: redis.url } } }, 'test');
  const err = await t.throwsAsync(startGateway(config, { log: createLogger('silent') }));
  t.true(err instanceof ListenError);
  t.is((err as ListenError).key, 'admin.port');
  t.is((err as ListenError).address, `127.0.0.1:${ports.admin}`);
  for (const name of ['main', 'metrics', 'sim', 'upstream'] as const) {
    t.is(await tryConnect(ports[name]), 'ECONNREFUSED', `the ${name} port is free again`);
  }
  const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  t.teardown(() => admin.disconnect());
  const own = await admin.client('ID');
  const others = String(await admin.client('LIST'))
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith(`id=${own} `));
  t.deepEqual(others, [], 'no connection of the gateway is left in Redis');
  // and the same configuration starts once the port is free
  await new Promise((r) => squatter.close(r));
  const gw = await startGateway(config, { log: createLogger('silent') });
  t.teardown(() => gw.close());
  t.is(gw.adminUrl, `http://127.0.0.1:${ports.admin}`);
});

test('server.workers: 2 with the main port taken: every worker fails, the primary stops and the process exits 1 naming the listener', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const [main, metrics] = await Promise.all([freePort(), freePort()]);
  const squatter = await hold(main);
  t.teardown(() => void squatter.close());
  const raw = {
    ...testConfig({ apiBase: 'http://127.0.0.1:1' }),
    server: { host: '127.0.0.1', port: main, workers: 2 },
    session: { store: 'redis', redis: { url: redis.url } },
    metrics: { port: metrics },
  };
  const child = runCli(['--config', writeConfig(raw)]);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  t.teardown(() => clearTimeout(killer));
  const [code, signal] = await exited(child);
  t.is(signal, null, `the process ended by itself: ${err}`);
  t.is(code, 1, err);
  t.regex(err, new RegExp(`^wxgate: cannot listen for requests on 127\\.0\\.0\\.1:${main}: address already in use \\(server\\.port\\)$`, 'm'));
  t.regex(err, /worker \d exited \(code 1\) while starting/);
  t.notRegex(err, /left open/);
  t.is(await tryConnect(metrics), 'ECONNREFUSED', "the primary's metrics listener is closed too");
});
