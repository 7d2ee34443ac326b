/**
 * X-Request-Id from the client is kept only in the shapes request ids have (UUID, hex, W3C traceparent,
 * short plain ids); anything else, above all a session token a client put there by mistake, is
 * replaced by a new UUID and appears in no log line, no upstream request and no answer. Proxied routes,
 * the gateway's own endpoints and WebSocket upgrades.
 */
import test from 'ava';
import { login, type TestGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { wsConnect } from '../helpers/ws.js';
import { useStack } from '../helpers/stack.js';

const stack = useStack(test, { ws: true });
let gw: TestGateway;
let token: string;
let other: string;

test.before(async () => {
  await stack.start();
  gw = await stack.gateway(
    {
      routes: [
        { path: '/api/public', upstream: stack.up.url, auth: 'none' },
        { path: '/api', upstream: stack.up.url },
        { path: '/ws', upstream: stack.wsUp.url },
      ],
    },
    { logLevel: 'trace' },
  );
  token = await login(gw.url, 'reqid-user.1');
  other = await login(gw.url, 'reqid-other.1');
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Ids that must never be kept: tokens (the user's own, another's), token-like and over-long ids. */
const refusedIds = () => [
  other,
  token,
  `${token}x`,
  `req-${other}`,
  other.slice(0, 40),
  'G'.repeat(29),
  'abcDEF123-'.repeat(4),
  '0'.repeat(65),
  'req id with spaces',
  'x'.repeat(128),
];

test('a token (or any long or odd value) in X-Request-Id is replaced by a new UUID and is in no log line, upstream request or answer: proxied and own endpoints', async (t) => {
  for (const [i, bad] of refusedIds().entries()) {
    const proxied = await request(gw.url, { path: `/api/orders?m=rid-${i}`, headers: { authorization: `Bearer ${token}`, 'x-request-id': bad } });
    t.is(proxied.status, 200, bad);
    const seen = stack.up.seen.find((s) => s.url.endsWith(`m=rid-${i}`))!;
    t.regex(String(seen.headers['x-request-id']), UUID, `${i}: the upstream gets a new id`);
    t.false(seen.rawHeaders.some((v) => v.includes(bad)), `${i}: the refused value is not passed on`);

    const own = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}`, 'x-request-id': bad } });
    t.is(own.status, 200);
    t.regex(String(own.headers['x-request-id']), UUID, `${i}: own endpoints answer with a new id`);
    t.false(JSON.stringify(own.headers).includes(bad));

    const ws = await wsConnect(gw.url, `/ws/room?m=rid-ws-${i}`, { Authorization: `Bearer ${token}`, 'X-Request-Id': bad });
    t.is(ws.status, 101);
    if ('ws' in ws) ws.ws.terminate();
    const upgrade = stack.wsUp.upgrades.find((u) => u.url.endsWith(`m=rid-ws-${i}`))!;
    t.regex(String(upgrade.headers['x-request-id']), UUID, `${i}: the WebSocket upstream gets a new id`);
  }
  const logs = gw.logs.join('\n');
  for (const bad of refusedIds()) t.false(logs.includes(bad), `never logged: ${bad.slice(0, 12)}…`);
  t.false(logs.includes(token.slice(16)), "no part of the token's random part is logged");
  const ids = gw.logs.map((l) => JSON.parse(l) as { msg?: string; req_id?: string }).filter((l) => l.msg === 'request');
  t.true(ids.length >= refusedIds().length * 2);
  for (const l of ids) t.false(l.req_id === token || l.req_id === other);
});

test('request ids in the usual shapes are kept, passed on and logged: UUID, hex trace ids, W3C traceparent, short plain ids', async (t) => {
  const kept = [
    '3f2b8c9e-1d4a-4f6b-9c2e-7a8b9c0d1e2f',
    '3F2B8C9E-1D4A-4F6B-9C2E-7A8B9C0D1E2F',
    '4bf92f3577b34da6a3ce929d0e0e4736',
    'a3ce929d0e0e4736',
    'c'.repeat(64),
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    'lb-42.a',
    '01ARZ3NDEKTSV4RRFFQ69G5FAV',
    'V1StGXR8_Z5jdHi6B-myT',
    '7d2e8c1f9a3b4c5d-SJC',
    'a'.repeat(28),
  ];
  for (const [i, id] of kept.entries()) {
    const res = await request(gw.url, { path: `/api/public/x?m=keep-${i}`, headers: { 'x-request-id': id } });
    t.is(res.status, 200, id);
    t.is(stack.up.seen.find((s) => s.url.endsWith(`m=keep-${i}`))?.headers['x-request-id'], id, id);
    const own = await request(gw.url, { path: '/healthz', headers: { 'x-request-id': id } });
    t.is(own.headers['x-request-id'], id, id);
    const ws = await wsConnect(gw.url, `/ws/room?m=keep-ws-${i}`, { Authorization: `Bearer ${token}`, 'X-Request-Id': id });
    if ('ws' in ws) ws.ws.terminate();
    t.is(stack.wsUp.upgrades.find((u) => u.url.endsWith(`m=keep-ws-${i}`))?.headers['x-request-id'], id, `${id} (WebSocket)`);
  }
  const logged = new Set(gw.logs.map((l) => (JSON.parse(l) as { req_id?: string }).req_id));
  for (const id of kept) t.true(logged.has(id), id);
});

test('a WebSocket upgrade keeps its request id even when Connection names X-Request-Id', async (t) => {
  const id = '9c1e5d2a-0b3f-4c6d-8e7f-a1b2c3d4e5f6';
  const ws = await wsConnect(gw.url, '/ws/room?m=ws-conn-rid', { Authorization: `Bearer ${token}`, 'X-Request-Id': id, Connection: 'Upgrade, X-Request-Id' });
  t.is(ws.status, 101);
  if ('ws' in ws) ws.ws.terminate();
  t.is(stack.wsUp.upgrades.find((u) => u.url.endsWith('m=ws-conn-rid'))?.headers['x-request-id'], id);
});
