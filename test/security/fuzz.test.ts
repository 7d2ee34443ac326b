import test from 'ava';
import fc from 'fast-check';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { rawRequest, request, type RawResponse } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

/**
 * Property-based: fast-check makes requests (method, target, header names and values, JSON and other
 * bodies, with or without a valid session token) and sends them byte for byte to the in-process
 * gateway, which has a protected route and public ones on real recording upstreams. Whatever comes:
 * never a 5xx, always an answer, every error is JSON {error, message} (node answers what its parser
 * refuses itself, 400/431 without a body, and an Expect it does not know, 417), and only requests carrying the valid token reach
 * the protected upstream, with the session's identity and nothing the client claimed.
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let protectedUp: Upstream;
let publicUp: Upstream;
let gw: TestGateway;
let token: string;
let openid: string;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  [protectedUp, publicUp] = await Promise.all([startUpstream(), startUpstream()]);
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [
        { path: '/api', upstream: protectedUp.url },
        { path: '/api/public', upstream: publicUp.url, auth: 'none' },
        { path: '/pub', upstream: publicUp.url, auth: 'none', bodyLimit: '2kb' },
      ],
    }),
    { logLevel: 'info' },
  );
  token = await login(gw.url, 'fuzz-user.1');
  openid = (await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).json.openid;
});
test.after.always(async () => {
  await gw?.close();
  await Promise.all([protectedUp?.close(), publicUp?.close()]);
  await sim?.close();
});

const VALID = '<valid token>';
const FAKE = 'A'.repeat(59);

const method = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD') },
  { weight: 1, arbitrary: fc.constantFrom('CONNECT', 'TRACE', 'FOO', 'get', 'PRI') },
);

const prefix = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('/api', '/api/public', '/pub') },
  {
    weight: 10,
    arbitrary: fc.constantFrom(
      '/api', '/API', '/api/public', '/Api/Public', '/pub', '/PUB', '/apix', '/', '/login', '/session', '/logout', '/wx/decrypt',
      '/metrics', '/healthz', '/readyz', '/LOGIN/',
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom('', '*', 'http://evil/api', '/api/publicx') },
);
const pathPiece = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom('/', '/x', 'a', 'Z', '0', '-', '~', '@', ':', '+', '!', '$', "'", '(', '%41', '.', '?q=1', '&b=2') },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '..', '/..', '/.', '%', '%2e', '%2E', '%2f', '%2F', '%5c', '\\', ';', '%3b', '?', '#', '=', '%00', '%0d%0a', '%ff', '%c0%af',
      'é', '\u0130', '%u002e', '//', '?x=/api', ' ', '\t',
    ),
  },
);
const target = fc.tuple(prefix, fc.array(pathPiece, { maxLength: 6 })).map(([p, pieces]) => p + pieces.join(''));

const headerName = fc.oneof(
  {
    weight: 16,
    arbitrary: fc.constantFrom(
      'X-Openid', 'x_openid', 'X-UNIONID', 'x-appid', 'X_Appid', 'Authorization', 'authorization', 'Connection', 'Keep-Alive', 'TE',
      'Trailer', 'Upgrade', 'Proxy-Authorization', 'X-Forwarded-For', 'X-Forwarded-Host', 'X-Forwarded-Proto', 'Forwarded', 'X-Real-IP',
      'Host', 'Content-Type', 'Accept', 'Cookie', 'X-Wx-Appid', 'Expect', 'Range', 'If-None-Match',
    ),
  },
  { weight: 6, arbitrary: fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}$/) },
  { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => !/[\r\n:]/.test(s)) },
);
const headerValue = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.constantFrom(
      `Bearer ${VALID}`, `bearer ${VALID}`, `Bearer ${FAKE}`, `Bearer ${VALID} ${VALID}`, `Basic ${FAKE}`, 'close', 'keep-alive',
      'keep-alive, X-Openid', 'Upgrade', 'h2c', 'websocket', 'chunked', 'trailers', '100-continue', 'application/json', 'text/plain',
      'o-spoofed', 'wx0123456789abcdef', '127.0.0.1', '10.0.0.1, 127.0.0.1', 'evil.example', '',
    ),
  },
  { weight: 6, arbitrary: fc.string({ maxLength: 60 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }).filter((s) => !/[\r\n]/.test(s)) },
);
const framing = new Set(['content-length', 'transfer-encoding']);
const headers = fc.array(fc.tuple(headerName, headerValue), { maxLength: 5 }).map((hs) => hs.filter(([n]) => !framing.has(n.trim().toLowerCase())));

const body = fc.oneof(
  { weight: 3, arbitrary: fc.constant('') },
  { weight: 3, arbitrary: fc.json({ maxDepth: 3 }) },
  { weight: 2, arbitrary: fc.record({ code: fc.oneof(fc.string({ maxLength: 40 }), fc.integer(), fc.constant(null)), appid: fc.option(fc.constantFrom(APPID, 'wxffffffffffffffff', '')) }, { requiredKeys: [] }).map((o) => JSON.stringify(o)) },
  { weight: 1, arbitrary: fc.record({ all: fc.jsonValue(), encryptedData: fc.string({ maxLength: 40 }), iv: fc.base64String({ maxLength: 24 }), rawData: fc.string(), signature: fc.string() }, { requiredKeys: [] }).map((o) => JSON.stringify(o)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 3000 }) },
);

const req = fc.record({ method, target, headers, body, withToken: fc.boolean() });
type Req = typeof req extends fc.Arbitrary<infer T> ? T : never;

let nextId = 0;

/** The request's bytes: ours first (Host, a request id, the token when asked), framing and Connection: close last. */
function encode(r: Req, id: number): Buffer {
  const lines = [`${r.method} ${r.target} HTTP/1.1`, 'Host: gateway.test', `X-Fuzz-Id: ${id}`];
  if (r.withToken) lines.push(`Authorization: Bearer ${token}`);
  for (const [n, v] of r.headers) lines.push(`${n}: ${v.split(VALID).join(token)}`);
  const payload = Buffer.from(r.body, 'utf8');
  lines.push(`Content-Length: ${payload.length}`, 'Connection: close', '', '');
  return Buffer.concat([Buffer.from(lines.join('\r\n'), 'utf8'), payload]);
}

const IDENTITY = /^x[-_](openid|unionid|appid)$/i;

function check(r: Req, id: number, final: RawResponse | undefined, text: string, closed: boolean): void {
  const where = `#${id} ${JSON.stringify(r)} → ${JSON.stringify(text.slice(0, 300))}`;
  if (!final && r.method === 'CONNECT' && closed && text === '') return; // never tunnelled: node closes the connection
  if (!final) throw new Error(`no answer: ${where}`);
  if (final.status >= 500) throw new Error(`${final.status}: ${where}`);
  if (final.status >= 400 && r.method !== 'HEAD') {
    const type = final.headers.find(([n]) => n === 'content-type')?.[1];
    // node's own answers, before the gateway sees the request: its parser refused it (400, 431), or an
    // Expect other than 100-continue (417)
    if (type === undefined && final.body === '' && [400, 417, 431].includes(final.status)) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(final.body);
    } catch {
      throw new Error(`error answer is not JSON: ${where}`);
    }
    const e = parsed as { error?: unknown; message?: unknown };
    if (!/^application\/json/.test(type ?? '') || typeof e.error !== 'string' || typeof e.message !== 'string' || Object.keys(e).length !== 2) {
      throw new Error(`error answer is not {error, message} JSON: ${where}`);
    }
  }
}

test('fuzzed requests: never a 5xx, always an answer, errors are JSON, the protected upstream sees only valid sessions', async (t) => {
  t.timeout(45_000);
  const authed = new Set<string>();
  const sent = new Map<string, Req>();
  const statuses = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(req, async (r) => {
      const id = ++nextId;
      const bytes = encode(r, id);
      sent.set(String(id), r);
      // carrying the valid token: ours, or one the fuzzer put in a header of its own
      if (bytes.includes(token)) authed.add(String(id));
      const reply = await rawRequest(gw.url, bytes, 1000);
      const final = reply.responses.filter((x) => x.status >= 200).at(-1);
      const key = `${final?.status ?? 0}${final && final.body ? ' ' + String(/"error":"(\w+)"/.exec(final.body)?.[1]) : ''}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
      check(r, id, final, reply.text, reply.closedByServer);
      // a fuzzed POST /logout may have ended the session: a new login of the same user keeps the runs going
      if (bytes.includes(token) && /^\/logout/i.test(r.target)) {
        const still = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } });
        if (still.status === 401) token = await login(gw.url, `fuzz-user.${id}`);
      }
    }),
    { numRuns: 300, seed: Number(process.env.FUZZ_SEED ?? 424242), verbose: 1 },
  );

  // the protected upstream: only requests sent with the valid token, with exactly the session's identity
  for (const seen of protectedUp.seen) {
    const fuzzId = String(seen.headers['x-fuzz-id']);
    t.true(authed.has(fuzzId), `request ${fuzzId} reached the protected upstream without the valid token: ${JSON.stringify(sent.get(fuzzId))}`);
    t.is(seen.headers['x-openid'], openid, `request ${fuzzId}: the session's openid`);
    t.is(seen.headers['x-appid'], APPID);
    t.is(seen.headers.authorization, undefined, 'the token is never forwarded');
    const identityLines = seen.rawHeaders.filter((_, i) => i % 2 === 0 && IDENTITY.test(seen.rawHeaders[i]!.trim()));
    t.deepEqual(identityLines.map((n) => n.toLowerCase()).sort(), ['x-appid', 'x-openid'], `request ${fuzzId}: one line each, the gateway's`);
  }
  // public upstreams never get an identity, whatever the client sent
  for (const seen of publicUp.seen) {
    t.false(
      seen.rawHeaders.some((v, i) => i % 2 === 0 && IDENTITY.test(v.trim())),
      `request ${String(seen.headers['x-fuzz-id'])} reached a public route with an identity header`,
    );
  }
  t.log(`protected upstream saw ${protectedUp.seen.length}, public ${publicUp.seen.length} of ${nextId} requests; statuses ${JSON.stringify([...statuses].sort())}`);
  t.true(protectedUp.seen.length > 0 && publicUp.seen.length > 0, 'the runs reached both kinds of route');

  const health = await request(gw.url, { path: '/healthz' });
  t.is(health.status, 200, 'the gateway is still serving');
  const errors = gw.logs.filter((l) => (JSON.parse(l) as { level: number }).level >= 50);
  t.deepEqual(errors, [], 'no error-level log line (an unexpected exception is logged there)');
});
