import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, login, spawnGateway, startTestGateway, testConfig, type GatewayProcess } from '../helpers/gateway.js';
import { rawConnect, request } from '../helpers/http.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startRawUpstream, startUpstream, type RawUpstream } from '../helpers/upstream.js';
import { sleep, waitFor } from '../helpers/wait.js';

/**
 * The gateway as its own process (the built CLI, `node dist/cli.js`), where signals and crashes are
 * real: SIGTERM while requests are in flight (with the memory store, and with a real redis-server whose
 * CLIENT LIST shows the gateway's connections), and an upstream answer that makes the proxy throw.
 */

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

test('SIGTERM with a slow request in flight: new connections are refused, idle ones closed, the request completes with 200, and the process exits 0 well within shutdownTimeout', async (t) => {
  const SHUTDOWN = 5000;
  const up = await startUpstream();
  t.teardown(() => up.close());
  const gw = await spawnGateway(
    testConfig({
      apiBase: 'http://127.0.0.1:1',
      routes: [{ path: '/slow', upstream: up.url, auth: 'none' }],
      server: { host: '127.0.0.1', port: 0, shutdownTimeout: `${SHUTDOWN}ms` },
    }),
  );
  t.teardown(() => void gw.stop('SIGKILL'));
  const port = Number(new URL(gw.url).port);
  // a client keeping an idle keep-alive connection open
  const idle = await rawConnect(gw.url);
  idle.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await idle.waitFor(/"status":"ok"/);

  const inflight = request(gw.url, { path: '/slow/slow?ms=1000' });
  await waitFor(() => up.seen.some((s) => s.url === '/slow/slow?ms=1000'), { interval: 10, message: 'the request reached the upstream' });
  const signalled = Date.now();
  const exit = gw.stop('SIGTERM');
  await waitFor(() => gw.stdout.some((l) => l.includes('shutting down')), { interval: 10, message: 'shutting down logged' });

  t.is(await tryConnect(port), 'ECONNREFUSED', 'a new connection is refused at once');
  const idleReply = await idle.done(SHUTDOWN);
  t.true(idleReply.closedByServer, 'the idle keep-alive connection is closed, not waited for');
  const res = await inflight;
  t.is(res.status, 200);
  t.is(res.json.url, '/slow/slow?ms=1000');
  t.is(await exit, 0);
  const took = Date.now() - signalled;
  t.true(took < SHUTDOWN, `exited ${took} ms after SIGTERM (shutdownTimeout ${SHUTDOWN} ms)`);
  t.true(gw.stdout.some((l) => l.includes('"msg":"stopped"')));
});

/** The clients a redis-server lists (CLIENT LIST), except the connection asking. */
async function redisClients(admin: Redis): Promise<string[]> {
  const own = await admin.client('ID');
  return (String(await admin.client('LIST')))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith(`id=${own} `));
}

/**
 * A gateway process with its sessions in a redis-server of its own, one route /api (auth required) to
 * `up`. The redis-server logs at verbose level, where it writes "Client closed connection <client>" for
 * every client that just went away (EOF), and nothing for one that sent QUIT (the server closes those).
 */
async function redisGateway(t: ExecutionContext, shutdownTimeout: number) {
  let redisLog = '';
  const redis: RedisServer = await startRedis((_port, dir) => {
    redisLog = join(dir, 'redis.log');
    return { args: ['--loglevel', 'verbose', '--logfile', redisLog] };
  });
  t.teardown(() => redis.close());
  const sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  t.teardown(() => sim.close());
  const up = await startUpstream();
  t.teardown(() => up.close());
  const proc = await spawnGateway(
    testConfig({
      apiBase: sim.url,
      wechat: { apiBase: sim.url, timeout: '5s', apps: [{ appid: APPID, secret: SECRET }] },
      routes: [{ path: '/api', upstream: up.url }],
      session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'drain:' } },
      server: { host: '127.0.0.1', port: 0, shutdownTimeout: `${shutdownTimeout}ms` },
    }),
  );
  t.teardown(() => void proc.stop('SIGKILL'));
  const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await admin.connect();
  t.teardown(() => admin.disconnect());
  const token = await login(proc.url, 'drain-user.1');
  const clients = await redisClients(admin);
  // its main connection and the subscriber for revocations
  t.true(clients.length >= 2, `the gateway is connected to Redis: ${clients.length}`);
  const addrs = clients.map((l) => / addr=(\S+)/.exec(l)?.[1] ?? '?');
  /**
   * The gateway's connections that Redis saw dropped without a QUIT since `markShutdown()` (a connection
   * ioredis replaced before the signal, on a slow machine, is not the shutdown's doing).
   */
  let from = 0;
  const markShutdown = () => (from = readFileSync(redisLog).length);
  const droppedWithoutQuit = () =>
    readFileSync(redisLog)
      .subarray(from)
      .toString('utf8')
      .split('\n')
      .filter((l) => l.includes('Client closed connection') && addrs.some((a) => l.includes(` addr=${a} `)));
  return { redis, sim, up, proc, admin, token, addrs, droppedWithoutQuit, markShutdown, port: Number(new URL(proc.url).port) };
}

/** Log lines at warn level or above (pino: 40 warn, 50 error, 60 fatal) after the one matching `from`. */
function warningsAfter(lines: string[], from: string): string[] {
  const i = lines.findIndex((l) => l.includes(from));
  return lines.slice(i + 1).filter((l) => {
    try {
      return (JSON.parse(l) as { level?: number }).level! >= 40;
    } catch {
      return false;
    }
  });
}

test('SIGTERM with the Redis store: in-flight requests (a slow proxied one, a slow login) finish, new connections are refused, the process exits 0, and Redis no longer lists its connections', async (t) => {
  const SHUTDOWN = 5000;
  const { redis, up, proc, admin, token, port, addrs, droppedWithoutQuit, markShutdown } = await redisGateway(t, SHUTDOWN);

  // a login WeChat answers after 1.2 s: the session is written to Redis while the gateway drains
  const slowLogin = fetch(`${proc.url}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 'slow-1200.drain' }) });
  const proxied = request(proc.url, { path: '/api/slow?ms=1000', headers: { authorization: `Bearer ${token}` } });
  await waitFor(() => up.seen.some((s) => s.url === '/api/slow?ms=1000'), { interval: 10, message: 'the proxied request reached the upstream' });
  markShutdown();
  const signalled = Date.now();
  const exit = proc.stop('SIGTERM');
  await waitFor(() => proc.stdout.some((l) => l.includes('shutting down')), { interval: 10, message: 'shutting down logged' });
  t.is(await tryConnect(port), 'ECONNREFUSED', 'a new connection is refused at once');
  t.true((await redisClients(admin)).length >= addrs.length, 'Redis stays connected while requests are in flight');

  const res = await proxied;
  t.is(res.status, 200);
  t.is(res.json.url, '/api/slow?ms=1000');
  t.truthy(res.json.openid, 'authenticated from Redis, identity forwarded');
  const loginRes = await slowLogin;
  t.is(loginRes.status, 200, 'the login in flight completes: Redis was still there to take its session');
  const drainedToken = ((await loginRes.json()) as { token?: string }).token;
  t.truthy(drainedToken);
  t.is(await exit, 0);
  const took = Date.now() - signalled;
  t.true(took < SHUTDOWN, `exited ${took} ms after SIGTERM (shutdownTimeout ${SHUTDOWN} ms)`);
  t.true(proc.stdout.some((l) => l.includes('"msg":"stopped"')));
  t.deepEqual(warningsAfter(proc.stdout, 'shutting down'), [], 'closing Redis is not an outage: no warning');

  await waitFor(async () => (await redisClients(admin)).length === 0, { message: 'CLIENT LIST no longer lists the gateway' });
  t.deepEqual(droppedWithoutQuit(), [], 'each connection was closed with QUIT, not dropped when the process died');

  // the session the drained login wrote is in Redis: another gateway on the same Redis knows it
  const next = await startTestGateway(testConfig({ apiBase: 'http://127.0.0.1:1', session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'drain:' } } }));
  t.teardown(() => next.close());
  const s = await request(next.url, { path: '/session', headers: { authorization: `Bearer ${drainedToken}` } });
  t.is(s.status, 200, 'the session created during the drain was kept');
});

test('SIGTERM with a request that outlives server.shutdownTimeout: it is cut at the deadline (the upstream sees it go), and the process still exits 0 within the deadline', async (t) => {
  const SHUTDOWN = 1000;
  const { up, proc, admin, token, droppedWithoutQuit, markShutdown } = await redisGateway(t, SHUTDOWN);
  // the route's own timeout (30 s) is far beyond the deadline: only the shutdown ends this request
  const hanging = request(proc.url, { path: '/api/hang', headers: { authorization: `Bearer ${token}` } }).then(
    (r) => `answered ${r.status}`,
    (err: NodeJS.ErrnoException) => `cut (${err.code ?? err.message})`,
  );
  await waitFor(() => up.seen.some((s) => s.url === '/api/hang'), { interval: 10, message: 'the request reached the upstream' });
  markShutdown();
  const signalled = Date.now();
  const exit = proc.stop('SIGTERM');
  const outcome = await hanging;
  const cutAfter = Date.now() - signalled;
  t.regex(outcome, /^cut /, 'the client connection is closed, not answered');
  t.true(cutAfter >= SHUTDOWN - 50, `cut ${cutAfter} ms after SIGTERM, not before the deadline (${SHUTDOWN} ms)`);
  t.is(await exit, 0);
  const took = Date.now() - signalled;
  // the deadline plus room for a loaded machine, far below the route's own timeout (30 s)
  t.true(took < SHUTDOWN + 3000, `exited ${took} ms after SIGTERM (shutdownTimeout ${SHUTDOWN} ms)`);
  await waitFor(() => up.aborted >= 1, { interval: 10, message: 'the upstream request was abandoned with the client' });
  await waitFor(async () => (await redisClients(admin)).length === 0, { message: 'CLIENT LIST no longer lists the gateway' });
  t.deepEqual(droppedWithoutQuit(), [], 'Redis was closed with QUIT after the cut, not dropped');
});

/*
 * A kept-alive connection busy at SIGTERM (a load balancer's): its answer must say Connection: close and
 * the connection close after it, so that the process exits when the last request is done, not when that
 * connection's keep-alive (server.keepAliveTimeout + node's 1 s) or the shutdownTimeout runs out.
 */
test('SIGTERM with a request in flight on a kept-alive connection: its answer says Connection: close, the connection is closed after it, and the process exits soon after', async (t) => {
  const SHUTDOWN = 8000;
  const up = await startUpstream();
  t.teardown(() => up.close());
  const proc = await spawnGateway(
    testConfig({
      apiBase: 'http://127.0.0.1:1',
      routes: [{ path: '/slow', upstream: up.url, auth: 'none' }],
      // node's default keep-alive timeout (5 s), well under the shutdown deadline
      server: { host: '127.0.0.1', port: 0, shutdownTimeout: `${SHUTDOWN}ms`, keepAliveTimeout: '5s' },
    }),
  );
  t.teardown(() => void proc.stop('SIGKILL'));
  // a load balancer's connection: HTTP/1.1, kept alive, a request in flight when the signal comes
  const conn = await rawConnect(proc.url);
  conn.write('GET /slow/slow?ms=500 HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => up.seen.some((s) => s.url === '/slow/slow?ms=500'), { interval: 10, message: 'the request reached the upstream' });
  const signalled = Date.now();
  const exit = proc.stop('SIGTERM');
  await conn.waitFor(/"ok":true/, 3000);
  const answered = Date.now() - signalled;
  // the client waits as long as the gateway keeps the connection (it never closes it itself here)
  const reply = await conn.done(SHUTDOWN + 2000);
  const closed = Date.now() - signalled;
  const code = await exit;
  const took = Date.now() - signalled;
  const connection = reply.responses[0]?.headers.find(([n]) => n === 'connection')?.[1];
  t.log(`answered after ${answered} ms with Connection: ${connection}; connection closed by the gateway after ${closed} ms; exit ${code} after ${took} ms`);
  t.is(reply.responses[0]?.status, 200, 'the request in flight is answered');
  t.is(code, 0);
  t.is(connection, 'close', 'the answer tells the client not to send another request');
  // keepAliveTimeout is 5 s: well under it tells "closed after the answer" from "kept alive", whatever the load
  t.true(reply.closedByServer && closed - answered < 3000, `the connection is closed once the answer is out (${closed - answered} ms after it), not kept for keepAliveTimeout`);
  t.true(took < answered + 3000, `exited ${took} ms after SIGTERM, ${took - answered} ms after the last answer (keepAliveTimeout 5 s, shutdownTimeout ${SHUTDOWN / 1000} s)`);
});

/**
 * Answers a proxy cannot pass on as they are: each makes Node's ServerResponse throw (writeHead) from
 * inside http-proxy's body pipe. What the client may get instead: 502, or (for the reason phrase) the
 * upstream's answer with a reason phrase Node can write.
 */
const CHOKING: Record<string, { answer: string; acceptable: Array<{ status: number; body: RegExp }> }> = {
  '/choke/reason': {
    answer: 'HTTP/1.1 200 O\x01K\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok',
    acceptable: [
      { status: 502, body: /"error":"upstream_unavailable"/ },
      { status: 200, body: /^ok$/ },
    ],
  },
  '/choke/status': {
    answer: 'HTTP/1.1 099 Odd\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok',
    acceptable: [{ status: 502, body: /"error":"upstream_unavailable"/ }],
  },
};

let choking: RawUpstream | undefined;
let gw: GatewayProcess | undefined;
async function chokingGateway(): Promise<GatewayProcess> {
  if (gw) return gw;
  choking = await startRawUpstream((head, socket) => {
    const path = head.split(' ')[1]!;
    socket.write(CHOKING[path]?.answer ?? 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfine!');
  });
  gw = await spawnGateway(testConfig({ apiBase: 'http://127.0.0.1:1', routes: [{ path: '/', upstream: choking.url, auth: 'none', timeout: '500ms' }] }));
  return gw;
}
test.after.always(async () => {
  await gw?.stop('SIGKILL');
  await choking?.close();
});

test.serial('an upstream answer the proxy throws on (a control character in the reason phrase, status 099) never takes the process down: the next request is served', async (t) => {
  const proc = await chokingGateway();
  for (const path of Object.keys(CHOKING)) {
    const conn = await rawConnect(proc.url);
    conn.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    await conn.done(1000);
    const next = await request(proc.url, { path: '/fine' });
    t.is(next.status, 200, `after ${path}`);
    t.is(next.text, 'fine!');
    t.is(proc.child.exitCode, null, `alive after ${path}`);
    t.is(proc.child.signalCode, null);
  }
  t.is((await request(proc.url, { path: '/healthz' })).status, 200);
});

test.serial("the request whose upstream answer the proxy throws on gets a complete answer (502, or the upstream's own with a clean status line), not a connection left hanging", async (t) => {
  const proc = await chokingGateway();
  for (const [path, { acceptable }] of Object.entries(CHOKING)) {
    const start = Date.now();
    const conn = await rawConnect(proc.url);
    conn.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const reply = await conn.done(1500);
    const ms = Date.now() - start;
    const answer = reply.responses[0];
    if (!answer?.complete) {
      t.fail(`${path}: no complete answer, and the connection was ${reply.closedByServer ? 'closed' : `left open (${ms} ms, then the test gave up)`}`);
      continue;
    }
    t.true(
      acceptable.some((a) => a.status === answer.status && a.body.test(answer.body)),
      `${path}: answered ${answer.status} ${answer.body}`,
    );
  }
});

test('SIGTERM with a scan-login long poll waiting: it is answered at once (pending, Retry-After: 0, Connection: close), the process exits well before shutdownTimeout, and the page polling again on another replica logs in', async (t) => {
  const SHUTDOWN = 20_000;
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  t.teardown(() => sim.close());
  const raw = testConfig({
    apiBase: sim.url,
    wechat: { apiBase: sim.url, timeout: '5s', apps: [{ appid: APPID, secret: SECRET }] },
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'scan-drain:' } },
    server: { host: '127.0.0.1', port: 0, shutdownTimeout: `${SHUTDOWN}ms` },
    web: { publicUrl: 'http://127.0.0.1', scan: { checkPath: false, envVersion: 'develop' } },
  });
  const [a, b] = await Promise.all([spawnGateway(raw), spawnGateway(raw)]);
  t.teardown(() => void a.stop('SIGKILL'));
  t.teardown(() => void b.stop('SIGKILL'));

  const created = await request(a.url, { method: 'POST', path: '/scan/tickets' });
  t.is(created.status, 201, created.text);
  const { ticket, secret } = created.json as { ticket: string; secret: string };
  // the PC page's long poll, on A (waits up to 25 s, longer than the test would wait for it)
  const conn = await rawConnect(a.url);
  conn.write(`GET /scan/tickets/${ticket}?wait=25 HTTP/1.1\r\nHost: x\r\nX-Scan-Secret: ${secret}\r\n\r\n`);
  await sleep(500); // the long poll reaches the gateway and waits: nothing outside the gateway shows when
  const signalled = Date.now();
  const exit = a.stop('SIGTERM');
  const reply = await conn.done(SHUTDOWN + 2000);
  const answered = Date.now() - signalled;
  const res = reply.responses[0];
  const header = (name: string) => res?.headers.find(([n]) => n === name)?.[1];
  t.is(res?.status, 200, `the long poll is answered, not dropped (${answered} ms after SIGTERM)`);
  t.deepEqual(JSON.parse(res?.body ?? '{}'), { status: 'pending' }, "the ticket's status as it is");
  t.is(header('retry-after'), '0', 'poll again at once');
  t.is(header('connection'), 'close', 'on a new connection (the load balancer picks another replica)');
  t.true(reply.closedByServer);
  t.is(await exit, 0);
  const took = Date.now() - signalled;
  t.true(took < SHUTDOWN / 2, `exited ${took} ms after SIGTERM (shutdownTimeout ${SHUTDOWN} ms), not at the deadline`);

  // the phone confirms and the page's next poll, on B, gets the session: the user does not scan again
  const token = await login(b.url, 'drain-scanner.1');
  const confirmed = await request(b.url, { method: 'POST', path: `/scan/tickets/${ticket}/confirm`, headers: { authorization: `Bearer ${token}` } });
  t.is(confirmed.status, 200, confirmed.text);
  const again = await request(b.url, { path: `/scan/tickets/${ticket}?wait=5`, headers: { 'x-scan-secret': secret } });
  t.is(again.status, 200);
  t.is(again.json.status, 'confirmed');
  t.truthy(again.headers['set-cookie'], 'the PC gets its session cookie');
});
