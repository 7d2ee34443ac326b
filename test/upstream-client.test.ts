import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import test from 'ava';
import { UpstreamPool, type UpstreamRequest } from '../src/proxy/upstream-client.js';
import { startRawUpstream } from './helpers/upstream.js';
import { freePort } from './helpers/ports.js';
import { sleep, waitFor } from './helpers/wait.js';

/**
 * The proxy's HTTP/1.1 client (src/proxy/upstream-client.ts) on its own, against real sockets: what an
 * upstream is sent, how its answers are read, and when a connection is (not) used again. The gateway's
 * proxy tests (proxy, faults/upstream, websocket, security/*) run it end to end.
 */

interface Outcome {
  status?: number;
  statusText?: string;
  headers: string[];
  body: string;
  error?: Error & { code?: string };
}

/** Sends one request; resolves with what the handler was told. */
function send(pool: UpstreamPool, r: Partial<UpstreamRequest> & { path: string }, onStart?: (abort: () => void) => void): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = { headers: [], body: '' };
    pool.dispatch(
      { method: 'GET', headers: {}, body: null, headersTimeout: 2_000, bodyTimeout: 2_000, ...r },
      {
        onConnect: (abort) => onStart?.(abort),
        onHeaders(status, headers, _resume, statusText) {
          out.status = status;
          out.statusText = statusText;
          out.headers = headers;
          return true;
        },
        onData(chunk) {
          out.body += chunk.toString('latin1');
          return true;
        },
        onComplete: () => resolve(out),
        onError(err) {
          out.error = err;
          resolve(out);
        },
      },
    );
  });
}

const header = (o: Outcome, name: string) => {
  const i = o.headers.findIndex((h, j) => j % 2 === 0 && h.toLowerCase() === name);
  return i >= 0 ? o.headers[i + 1] : undefined;
};

/** A node http upstream that echoes what it got; counts connections. */
async function echoUpstream() {
  const conns = new Set<net.Socket>();
  let opened = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
    });
  });
  server.on('connection', (s: net.Socket) => {
    opened++;
    conns.add(s);
    s.on('close', () => conns.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    get opened() {
      return opened;
    },
    get open() {
      return conns.size;
    },
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

test('a GET: request line, Host, the headers as given; the answer passed on as sent; one connection kept for the next', async (t) => {
  const up = await echoUpstream();
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 8, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  const a = await send(pool, { path: '/a?x=1', headers: { 'x-openid': 'o-1', accept: 'application/json' } });
  t.is(a.error, undefined);
  t.is(a.status, 200);
  t.is(a.statusText, 'OK');
  const got = JSON.parse(a.body) as { method: string; url: string; headers: Record<string, string> };
  t.is(got.url, '/a?x=1');
  t.is(got.headers.host, new URL(up.url).host);
  t.is(got.headers['x-openid'], 'o-1');
  t.is(header(a, 'content-type'), 'application/json');
  const b = await send(pool, { path: '/b' });
  t.is(b.status, 200);
  t.is(up.opened, 1, 'the second request went on the kept-alive connection');
});

test('a body with Content-Length goes as is; one without goes chunked; a POST without a body says Content-Length: 0', async (t) => {
  const up = await echoUpstream();
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 8, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  const fixed = new PassThrough();
  const p1 = send(pool, { path: '/p', method: 'POST', headers: { 'content-length': '5' }, body: fixed as unknown as IncomingMessage });
  fixed.end('hello');
  const r1 = JSON.parse((await p1).body) as { body: string; headers: Record<string, string> };
  t.is(r1.body, 'hello');
  t.is(r1.headers['transfer-encoding'], undefined);

  const streamed = new PassThrough();
  const p2 = send(pool, { path: '/p', method: 'POST', headers: {}, body: streamed as unknown as IncomingMessage });
  streamed.write('a'.repeat(70_000));
  setTimeout(() => streamed.end('tail'), 20);
  const r2 = JSON.parse((await p2).body) as { body: string; headers: Record<string, string> };
  t.is(r2.body, `${'a'.repeat(70_000)}tail`);
  t.is(r2.headers['transfer-encoding'], 'chunked');

  const r3 = JSON.parse((await send(pool, { path: '/p', method: 'POST' })).body) as { headers: Record<string, string> };
  t.is(r3.headers['content-length'], '0');
  t.is(up.opened, 1, 'all three on one connection');
});

test('a header value that would end the head early (CR, LF) or cut it (NUL) is refused before anything is written; the connection stays good', async (t) => {
  const up = await startRawUpstream((_head, s) => s.write('HTTP/1.1 204 No Content\r\n\r\n'));
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 1, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  t.is((await send(pool, { path: '/ok' })).status, 204);
  const bad = await send(pool, { path: '/x', headers: { 'x-openid': 'o-1\r\nx-appid: wx-evil' } });
  t.is(bad.error?.code, 'UND_ERR_INVALID_ARG');
  const nul = await send(pool, { path: '/x', headers: { 'x-openid': 'o-1\0' } });
  t.is(nul.error?.code, 'UND_ERR_INVALID_ARG');
  t.is((await send(pool, { path: '/after' })).status, 204);
  t.deepEqual(
    up.heads.map((h) => h.split('\r\n')[0]),
    ['GET /ok HTTP/1.1', 'GET /after HTTP/1.1'],
    'the refused requests reached nothing',
  );
  t.false(up.heads.some((h) => /wx-evil/.test(h)));
});

test('an answer with more header lines than the parser hands over at once (60) keeps every one, in order', async (t) => {
  const lines = Array.from({ length: 60 }, (_, i) => `X-H${i}: v${i}\r\n`).join('');
  const up = await startRawUpstream((_head, s) => s.write(`HTTP/1.1 200 OK\r\n${lines}Content-Length: 2\r\n\r\nok`));
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 1, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  const r = await send(pool, { path: '/' });
  t.is(r.body, 'ok');
  t.is(r.headers.length, 61 * 2);
  t.is(header(r, 'x-h0'), 'v0');
  t.is(header(r, 'x-h59'), 'v59');
  t.is(r.headers[2 * 30], 'X-H30');
});

test('1xx answers before the final one are skipped; HEAD gets no body whatever its Content-Length; a body ended by the close is whole', async (t) => {
  const up = await startRawUpstream((head, s) => {
    const path = head.split(' ')[1];
    if (path === '/hints') s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal');
    else if (path === '/head') s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
    else if (path === '/close') s.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nread until the end');
  });
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 4, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  const hints = await send(pool, { path: '/hints' });
  t.is(hints.status, 200);
  t.is(hints.body, 'final');
  const head = await send(pool, { path: '/head', method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.body, '');
  t.is(header(head, 'content-length'), '1000');
  const close = await send(pool, { path: '/close' });
  t.is(close.error, undefined);
  t.is(close.body, 'read until the end');
});

test('an upstream out of step (a second answer nobody asked for) is not used again: the next request gets its own answer on a new connection', async (t) => {
  const up = await startRawUpstream((_head, s) => {
    // the first answer carries a second one behind it, as a desynchronised upstream would send
    if (up.heads.length === 1) s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 204 No Content\r\n\r\n');
    else s.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nreal-${up.heads.length}`);
  });
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 1, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  t.is((await send(pool, { path: '/1' })).body, 'first');
  t.is((await send(pool, { path: '/2' })).body, 'real-2');
  t.is(up.connections, 2, 'the out-of-step connection was dropped');
});

test('beyond `connections`, requests wait their turn; one aborted while waiting is never sent', async (t) => {
  const up = await startRawUpstream((head, s) => {
    const path = head.split(' ')[1]!;
    setTimeout(() => s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`), 30);
  });
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 1, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  let abortSecond: (() => void) | undefined;
  const first = send(pool, { path: '/1' });
  const second = send(pool, { path: '/2' }, (abort) => (abortSecond = abort));
  const third = send(pool, { path: '/3' });
  abortSecond!();
  t.is((await first).body, '/1');
  t.is((await third).body, '/3');
  t.deepEqual(
    up.heads.map((h) => h.split(' ')[1]),
    ['/1', '/3'],
  );
  void second;
});

test('headersTimeout and bodyTimeout fail with the codes the proxy classifies as timeouts; a refused connection with its errno', async (t) => {
  const up = await startRawUpstream((head, s) => {
    if (head.startsWith('GET /body')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart');
  });
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 4, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  t.is((await send(pool, { path: '/silent', headersTimeout: 150, bodyTimeout: 150 })).error?.code, 'UND_ERR_HEADERS_TIMEOUT');
  const body = await send(pool, { path: '/body', headersTimeout: 150, bodyTimeout: 150 });
  t.is(body.status, 200);
  t.is(body.error?.code, 'UND_ERR_BODY_TIMEOUT');
  const refused = new UpstreamPool(`http://127.0.0.1:${await freePort()}`, { connections: 1, keepAliveTimeout: 4_000 });
  t.is((await send(refused, { path: '/' })).error?.code, 'ECONNREFUSED');
});

test('an idle connection is closed after keepAliveTimeout', async (t) => {
  const up = await echoUpstream();
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 4, keepAliveTimeout: 300 });
  t.teardown(() => pool.destroy());
  t.is((await send(pool, { path: '/' })).status, 200);
  t.is(up.open, 1);
  await waitFor(() => up.open === 0, { timeout: 3_000, message: 'the idle connection was closed' });
  t.is((await send(pool, { path: '/' })).status, 200, 'and a new one is made when asked');
  t.is(up.opened, 2);
});

test("an upstream's Keep-Alive: timeout=N is kept to: the connection idles N s less one at most, and one of 1 s is not reused", async (t) => {
  let hint = 'timeout=1';
  const up = await startRawUpstream((_head, s) => s.write(`HTTP/1.1 200 OK\r\nKeep-Alive: ${hint}\r\nContent-Length: 2\r\n\r\nok`));
  t.teardown(up.close);
  const pool = new UpstreamPool(up.url, { connections: 4, keepAliveTimeout: 4_000 });
  t.teardown(() => pool.destroy());
  t.is((await send(pool, { path: '/' })).body, 'ok');
  t.is((await send(pool, { path: '/' })).body, 'ok');
  t.is(up.connections, 2, 'timeout=1 leaves no time to reuse it');
  hint = 'timeout=2, max=100';
  await send(pool, { path: '/' });
  await send(pool, { path: '/' });
  t.is(up.connections, 3, 'timeout=2: reused right away');
  await sleep(1_100); // real time: idle past 2 − 1 s
  await send(pool, { path: '/' });
  t.is(up.connections, 4, 'but not after idling beyond 2 − 1 s');
});
