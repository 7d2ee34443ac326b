/**
 * The client's Host: exactly one, and a host name or address with an optional port (RFC 9112 §3.2,
 * RFC 3986 host). Two Host lines, or a Host no host name has (`evil.example/reset?x=`, spaces, `@`,
 * `,`, escapes), are `400 bad_host` JSON on proxied routes, the gateway's own endpoints and WebSocket
 * upgrades, and nothing reaches an upstream (where it would become X-Forwarded-Host, which upstreams put
 * in password-reset links and cache keys). Raw sockets: no client library would send these.
 */
import test from 'ava';
import { login, type TestGateway } from '../helpers/gateway.js';
import { rawRequest } from '../helpers/http.js';
import { useStack } from '../helpers/stack.js';

const stack = useStack(test, { ws: true });
let gw: TestGateway;
let token: string;

test.before(async () => {
  await stack.start();
  gw = await stack.gateway({
    routes: [
      { path: '/api/public', upstream: stack.up.url, auth: 'none' },
      { path: '/api', upstream: stack.up.url },
      { path: '/ws', upstream: stack.wsUp.url, auth: 'none' },
    ],
  });
  token = await login(gw.url, 'host-user.1');
});

const WS = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

/** Where a request can go: proxied (public and required), the gateway's own endpoints (koa), a WebSocket upgrade. */
const TARGETS: Array<{ name: string; request: (marker: string, hostLines: string) => string; reached: (marker: string) => boolean }> = [
  {
    name: 'proxied public',
    request: (m, h) => `GET /api/public/reset?m=${m} HTTP/1.1\r\n${h}Connection: close\r\n\r\n`,
    reached: (m) => stack.up.seen.some((s) => s.url.includes(`m=${m}`)),
  },
  {
    name: 'proxied required',
    request: (m, h) => `GET /api/me?m=${m} HTTP/1.1\r\n${h}Authorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
    reached: (m) => stack.up.seen.some((s) => s.url.includes(`m=${m}`)),
  },
  { name: 'own GET /healthz', request: (m, h) => `GET /healthz?m=${m} HTTP/1.1\r\n${h}Connection: close\r\n\r\n`, reached: () => false },
  {
    name: 'own POST /login',
    request: (m, h) => `POST /login?m=${m} HTTP/1.1\r\n${h}Content-Type: application/json\r\nContent-Length: 25\r\nConnection: close\r\n\r\n{"code":"host-login-1.1"}`,
    reached: () => false,
  },
  { name: 'own GET /session', request: (m, h) => `GET /session?m=${m} HTTP/1.1\r\n${h}Authorization: Bearer ${token}\r\nConnection: close\r\n\r\n`, reached: () => false },
  {
    name: 'WebSocket upgrade',
    request: (m, h) => `GET /ws/room?m=${m} HTTP/1.1\r\n${h}${WS}\r\n`,
    reached: (m) => stack.wsUp.upgrades.some((u) => u.url.includes(`m=${m}`)),
  },
];

async function refused(t: import('ava').ExecutionContext, marker: string, hostLines: string, what: string): Promise<void> {
  for (const [i, target] of TARGETS.entries()) {
    const m = `${marker}-${i}`;
    const reply = await rawRequest(gw.url, target.request(m, hostLines));
    const res = reply.responses[0];
    t.is(res?.status, 400, `${what} → ${target.name}`);
    t.regex(res?.headers.find(([n]) => n === 'content-type')?.[1] ?? '', /^application\/json/, `${what} → ${target.name}`);
    let body: { error?: string; message?: string } = {};
    try {
      body = JSON.parse(res?.body ?? '');
    } catch {
      /* asserted below */
    }
    t.is(body.error, 'bad_host', `${what} → ${target.name}: ${res?.body}`);
    t.is(typeof body.message, 'string');
    t.false(target.reached(m), `${what} → ${target.name}: nothing reaches an upstream`);
  }
}

test('two Host headers are 400 bad_host everywhere (proxied, own endpoints, WebSocket), also when they agree or differ in case', async (t) => {
  const cases: Array<[string, string]> = [
    ['two-differ', 'Host: shop.example\r\nHost: evil.example\r\n'],
    ['two-same', 'Host: shop.example\r\nHost: shop.example\r\n'],
    ['two-case', 'Host: shop.example\r\nhOST: evil.example\r\n'],
    ['two-empty', 'Host: shop.example\r\nHost: \r\n'],
    ['two-apart', 'Host: shop.example\r\nX-Note: between\r\nhost: evil.example\r\n'],
  ];
  for (const [marker, lines] of cases) await refused(t, marker, lines, marker);
});

test('a Host with characters no host name has is 400 bad_host everywhere and never becomes X-Forwarded-Host', async (t) => {
  const bad = [
    'evil.example/reset?x=',
    'evil.example/',
    'evil.example?x=1',
    'evil.example#frag',
    'evil example',
    'a@evil.example',
    'user:pass@evil.example',
    'evil.example\\reset',
    'evil.example,shop.example',
    'evil.example;x=1',
    "evil'.example",
    'evil".example',
    'evil<script>.example',
    '%65vil.example',
    'evil.example:80:80',
    'evil.example:http',
    'evil.example:123456',
    'evil.example:65536',
    ':8080',
    '[::1',
    '[::1]x',
    '[::1]:80x',
    '[evil]',
    '[]',
    `${'a'.repeat(256)}`,
  ];
  for (const [i, host] of bad.entries()) await refused(t, `bad-${i}`, `Host: ${host}\r\n`, JSON.stringify(host));
});

test('ordinary Host values pass and arrive as X-Forwarded-Host, exactly', async (t) => {
  const good = ['shop.example', 'shop.example:8080', 'SHOP.Example.', '127.0.0.1', '127.0.0.1:1', '[::1]', '[::1]:8080', '[2001:db8::192.0.2.1]:443', 'my_host.internal', 'xn--fiq228c.example', 'a-b.example:'];
  for (const [i, host] of good.entries()) {
    const marker = `good-${i}`;
    const reply = await rawRequest(gw.url, `GET /api/public/x?m=${marker} HTTP/1.1\r\nHost:  ${host} \r\nConnection: close\r\n\r\n`);
    t.is(reply.responses[0]?.status, 200, host);
    const seen = stack.up.seen.find((s) => s.url.endsWith(`m=${marker}`));
    t.is(seen?.headers['x-forwarded-host'], host, host);
  }
  // and the gateway's own endpoints answer
  const own = await rawRequest(gw.url, 'GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n');
  t.is(own.responses[0]?.status, 200);
  // HTTP/1.0 without Host stays allowed (the Host header is HTTP/1.1's); the upstream gets no X-Forwarded-Host
  const old = await rawRequest(gw.url, 'GET /api/public/x?m=http10 HTTP/1.0\r\n\r\n');
  t.is(old.responses[0]?.status, 200);
  t.is(stack.up.seen.find((s) => s.url.endsWith('m=http10'))?.headers['x-forwarded-host'], undefined);
});
