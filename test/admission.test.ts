import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import test from 'ava';
import proxyaddr from 'proxy-addr';
import { GatewayError } from '../src/base/errors.js';
import { createLogger } from '../src/base/logger.js';
import { Admission, admit, type Gate } from '../src/proxy/admission/admission.js';
import * as steps from '../src/proxy/admission/steps.js';
import { RouteTable } from '../src/proxy/routes.js';
import { WebCookies } from '../src/request/cookies.js';
import { Credentials } from '../src/request/credentials.js';
import type { ActiveSession, Sessions } from '../src/session/sessions.js';

/**
 * The admission steps (src/proxy/admission/steps.ts) one at a time, on a request made up here:
 * headers in, headers out; and the whole list run by admit(), synchronously when the session is known.
 */

/** a token of the gateway's shape (59 base64url characters) */
const TOKEN = 'A'.repeat(59);
const SESSION = { openid: 'o-1', appid: 'wxa', unionid: 'u-1', accountId: 'acc-1', phone: '13800000000', tokenHash: 'h' } as unknown as ActiveSession;
const cookies = new WebCookies('https://m.example.com', 'wxgate_session');
/**
 * The headers the upstream is sent: a dropped header is set to undefined (never deleted, which slows the
 * object down), and every sender skips undefined values (proxy.test.ts checks them on the wire).
 */
const sent = (h: IncomingHttpHeaders) => Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined));

function gate(over: Partial<Gate> = {}): Gate {
  const routes = new RouteTable([
    { name: 'api', path: '/api', upstreams: ['http://u'], auth: 'required', timeout: 1000, forwardPhone: true } as never,
    { name: 'pub', path: '/pub', upstreams: ['http://u'], auth: 'none', timeout: 1000 } as never,
    { name: 'mp', path: '/mp', upstreams: ['http://u'], auth: 'required', timeout: 1000, apps: ['wxmp'] } as never,
  ]);
  return {
    routes,
    allowedApps: new Map(routes.all.filter((r) => r.apps).map((r) => [r, new Set(r.apps)] as const)),
    trust: proxyaddr.compile(['10.0.0.1']),
    credentials: new Credentials({ cookies, csrf: 'origin', origins: new Set(['https://m.example.com']) }),
    ownCookies: cookies.names,
    sessions: { authenticate: (t: string) => (t === TOKEN ? SESSION : undefined) } as unknown as Sessions,
    log: createLogger('silent'),
    upgrade: false,
    admitted: () => {},
    refused: () => {},
    ...over,
  };
}

function request(headers: IncomingHttpHeaders, opts: { url?: string; method?: string; peer?: string } = {}): IncomingMessage {
  const raw: string[] = [];
  for (const [k, v] of Object.entries(headers)) raw.push(k, String(v));
  return { headers, rawHeaders: raw, url: opts.url ?? '/api/x', method: opts.method ?? 'GET', socket: { remoteAddress: opts.peer ?? '192.0.2.7' } } as unknown as IncomingMessage;
}

function admission(headers: IncomingHttpHeaders, opts: Parameters<typeof request>[1] & { gate?: Partial<Gate> } = {}): Admission {
  const given = 'x-request-id' in headers;
  const a = new Admission(gate(opts.gate), request(headers, opts), undefined);
  // the new request id Admission set (the requestId step sets it again, last): out of the comparisons below
  if (!given) delete a.req.headers['x-request-id'];
  steps.route(a);
  return a;
}

test('the steps, in their order', (t) => {
  t.deepEqual(
    steps.BEFORE_SESSION.map((s) => s.name),
    ['host', 'route', 'bodyLimit', 'hopByHop', 'clientHeaders', 'credential'],
  );
  t.deepEqual(
    steps.AFTER_SESSION.map((s) => s.name),
    ['session', 'csrf', 'app', 'credentialsOut', 'ownCookies', 'forwarded', 'identity', 'requestId'],
  );
});

test('host: a repeated or malformed Host is 400 bad_host', (t) => {
  t.notThrows(() => steps.host(admission({ host: 'shop.example:8080' })));
  t.like(t.throws(() => steps.host(admission({ host: 'evil.example/reset?x=' }))) as GatewayError, { code: 'bad_host' });
});

test('route: the longest prefix; a path not in plain form is 400 bad_path, no route 404', (t) => {
  const a = new Admission(gate(), request({}, { url: '/API/orders?x=1' }), undefined);
  steps.route(a);
  t.is(a.routeName, 'api');
  t.like(t.throws(() => steps.route(new Admission(gate(), request({}, { url: '/api/../pub' }), undefined))) as GatewayError, { code: 'bad_path' });
  t.like(t.throws(() => steps.route(new Admission(gate(), request({}, { url: '/nowhere' }), undefined))) as GatewayError, { code: 'not_found' });
});

test('hopByHop: hop-by-hop headers and those Connection names go, framing headers stay; a close is noted', (t) => {
  const a = admission({ connection: 'close, x-secret, content-length', 'keep-alive': '5', te: 'trailers', upgrade: 'h2c', 'x-secret': '1', 'content-length': '3', 'x-kept': 'y' });
  steps.hopByHop(a);
  t.deepEqual(sent(a.req.headers), { 'content-length': '3', 'x-kept': 'y' });
  t.true(a.clientWantsClose);
  const b = admission({ connection: 'keep-alive' });
  steps.hopByHop(b);
  t.false(b.clientWantsClose);
});

test('clientHeaders: identity headers in any spelling, odd names and (from an untrusted peer) forwarding headers go', (t) => {
  const spoof = { 'x-openid': 'evil', 'x-open-id': 'evil', xopenid: 'evil', x_appid: 'evil', 'x-forwarded-for': '1.2.3.4', 'x-real-ip': '1.2.3.4', 'x-original-url': '/admin', accept: '*/*' };
  const a = admission({ ...spoof });
  steps.clientHeaders(a);
  t.false(a.trusted);
  t.deepEqual(sent(a.req.headers), { accept: '*/*' });
  const b = admission({ ...spoof }, { peer: '10.0.0.1' });
  steps.clientHeaders(b);
  t.true(b.trusted);
  t.deepEqual(sent(b.req.headers), { 'x-forwarded-for': '1.2.3.4', 'x-real-ip': '1.2.3.4', accept: '*/*' }, 'a trusted proxy keeps its forwarding headers, never an identity or a target override');
});

test('credential: a required route needs a token (401 with the challenge), a public one none', (t) => {
  const none = t.throws(() => steps.credential(admission({}))) as GatewayError;
  t.like(none, { code: 'unauthorized', headers: { 'WWW-Authenticate': 'Bearer realm="wxgate"' } });
  t.like(t.throws(() => steps.credential(admission({ authorization: 'Bearer short' }))) as GatewayError, { headers: { 'WWW-Authenticate': 'Bearer realm="wxgate", error="invalid_token"' } });
  const a = admission({ authorization: `Bearer ${TOKEN}` });
  steps.credential(a);
  t.is(a.token, TOKEN);
  t.is(a.via, 'bearer');
  const pub = admission({}, { url: '/pub/x' });
  steps.credential(pub);
  t.is(pub.token, undefined);
});

test('session: a token whose session is not found is 401 invalid_token', (t) => {
  const a = admission({});
  a.token = 'gone';
  t.like(t.throws(() => steps.session(a)) as GatewayError, { code: 'unauthorized', headers: { 'WWW-Authenticate': 'Bearer realm="wxgate", error="invalid_token"' } });
  a.session = SESSION;
  t.notThrows(() => steps.session(a));
});

test('csrf: a cookie POST needs an allowed Origin; a cookie upgrade needs one even as a GET; Bearer needs none', (t) => {
  const post = (origin: string | undefined, upgrade = false, method = 'POST') => {
    const a = admission(origin ? { origin } : {}, { method, gate: { upgrade } });
    a.via = 'cookie';
    a.token = TOKEN;
    return () => steps.csrf(a);
  };
  t.notThrows(post('https://m.example.com'));
  t.like(t.throws(post('https://evil.example')) as GatewayError, { code: 'csrf_failed' });
  t.notThrows(post(undefined, false, 'GET'), 'an HTTP GET changes nothing');
  t.like(t.throws(post(undefined, true, 'GET')) as GatewayError, { code: 'csrf_failed' });
  t.notThrows(post('https://m.example.com', true, 'GET'));
  const bearer = admission({}, { method: 'POST' });
  bearer.via = 'bearer';
  t.notThrows(() => steps.csrf(bearer));
});

test('app: routes[].apps refuses another app’s session (403)', (t) => {
  const a = admission({}, { url: '/mp/x' });
  a.session = SESSION;
  t.like(t.throws(() => steps.app(a)) as GatewayError, { code: 'app_not_allowed' });
  a.session = { ...SESSION, appid: 'wxmp' } as ActiveSession;
  t.notThrows(() => steps.app(a));
});

test('credentialsOut and ownCookies: the token and the gateway’s cookies never reach the upstream', (t) => {
  const a = admission({ authorization: 'Bearer x', cookie: `${cookies.session}=abc; theme=dark` });
  steps.credentialsOut(a);
  steps.ownCookies(a);
  t.deepEqual(sent(a.req.headers), { cookie: 'theme=dark' });
});

test('forwarded: X-Forwarded-For/-Proto/-Host are the gateway’s own for an untrusted peer', (t) => {
  const a = admission({ host: 'shop.example', 'x-forwarded-host': 'evil' });
  steps.forwarded(a);
  t.like(a.req.headers, { 'x-forwarded-for': '192.0.2.7', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'shop.example' });
});

test('identity: the session’s identity, and the phone only where routes[].forwardPhone says', (t) => {
  const a = admission({});
  a.session = SESSION;
  steps.identity(a);
  t.deepEqual(sent(a.req.headers), { 'x-openid': 'o-1', 'x-user-id': 'acc-1', 'x-appid': 'wxa', 'x-unionid': 'u-1', 'x-wx-phone': '13800000000' });
  const b = admission({}, { url: '/mp/x' });
  b.session = SESSION;
  steps.identity(b);
  t.is(b.req.headers['x-wx-phone'], undefined);
  const pub = admission({}, { url: '/pub/x' });
  steps.identity(pub);
  t.deepEqual(sent(pub.req.headers), {});
});

test('the whole list: X-Request-Id survives a Connection header naming it, and a known session is admitted in the same tick', (t) => {
  const token = TOKEN;
  let admitted: Admission | undefined;
  const g = gate({
    sessions: { authenticate: (x: string) => (x === token ? SESSION : undefined) } as unknown as Sessions,
    admitted: (a) => (admitted = a),
    refused: (_a, err) => t.fail(String(err)),
  });
  const a = new Admission(g, request({ authorization: `Bearer ${token}`, connection: 'x-request-id', 'x-request-id': 'req-1', 'x-openid': 'evil' }), undefined);
  admit(a);
  t.is(admitted, a, 'synchronously');
  t.is(a.req.headers['x-request-id'], 'req-1');
  t.is(a.req.headers['x-openid'], 'o-1');
  t.is(a.req.headers.authorization, undefined);
});

test('the whole list: a refusal reaches gate.refused with the step’s error', (t) => {
  let refused: unknown;
  const a = new Admission(gate({ refused: (_a, err) => (refused = err), admitted: () => t.fail() }), request({}, { url: '/api/x' }), undefined);
  admit(a);
  t.like(refused as GatewayError, { code: 'unauthorized' });
  t.is(a.routeName, 'api');
});
