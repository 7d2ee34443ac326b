import net from 'node:net';
import test from 'ava';
import { spawnGateway, testConfig, type GatewayProcess } from '../helpers/gateway.js';
import { rawConnect, request } from '../helpers/http.js';
import { startRawUpstream, startUpstream, type RawUpstream } from '../helpers/upstream.js';

/**
 * The gateway as its own process (the built CLI, `node dist/cli.js`), where signals and crashes are
 * real: SIGTERM while a request is in flight, and an upstream answer that makes the proxy throw.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
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
  t.true(await until(() => up.seen.some((s) => s.url === '/slow/slow?ms=1000'), 5000), 'the request reached the upstream');
  const signalled = Date.now();
  const exit = gw.stop('SIGTERM');
  t.true(await until(() => gw.stdout.some((l) => l.includes('shutting down')), 2000));

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
