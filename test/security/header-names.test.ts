/**
 * Who is who, part 2: header names an upstream framework might fold onto the gateway's own. Identity
 * headers spelled with `_`, `.`, `~` or a mix (`X.Openid`, `X~Openid`, `X_Wx.Phone`), and any header
 * name with a character outside `[A-Za-z0-9-]`, never reach an upstream, on the HTTP path and the
 * WebSocket upgrade path alike. Real gateway, real recording upstreams, the WeChat simulator; the odd
 * spellings go over raw sockets so that no client library tidies them up.
 */
import test from 'ava';
import { login, type TestGateway } from '../helpers/gateway.js';
import { rawRequest, request } from '../helpers/http.js';
import { type Seen } from '../helpers/upstream.js';
import { wsConnect } from '../helpers/ws.js';
import { useStack } from '../helpers/stack.js';

const stack = useStack(test, { ws: true });
let gw: TestGateway;
/** the same routes behind a gateway that trusts the test client (127.0.0.1) as its load balancer */
let trustingGw: TestGateway;
let token: string;
let me: { openid: string; appid: string; unionid: string };

test.before(async () => {
  await stack.start();
  gw = await stack.gateway({
    routes: [
      { path: '/api/public', upstream: stack.up.url, auth: 'none' },
      { path: '/api', upstream: stack.up.url, forwardPhone: true },
      { path: '/ws/public', upstream: stack.wsUp.url, auth: 'none' },
      { path: '/ws', upstream: stack.wsUp.url },
    ],
  });
  trustingGw = await stack.gateway({
    server: { host: '127.0.0.1', port: 0, trustedProxies: ['127.0.0.1'] },
    routes: [
      { path: '/api', upstream: stack.up.url, auth: 'none' },
      { path: '/ws', upstream: stack.wsUp.url, auth: 'none' },
    ],
  });
  token = await login(gw.url, 'union-names.1');
  const s = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } });
  if (s.status !== 200 || !s.json.unionid) throw new Error(`no session: ${s.text}`);
  me = { openid: s.json.openid, appid: s.json.appid, unionid: s.json.unionid };
});

/** An identity header's name with every one of `-_.~` taken as the same, and case ignored. */
const folded = (name: string) => name.toLowerCase().replace(/[-_.~]/g, '');
const IDENTITY = new Set(['xopenid', 'xunionid', 'xappid', 'xwxphone']);

/** Identity headers spelled the ways upstream frameworks fold onto the real name. */
const SPELLINGS: Array<[string, string]> = [
  ['X.Openid', 'evil-dot'],
  ['X~Openid', 'evil-tilde'],
  ['x.openid', 'evil-dot-lower'],
  ['X_Openid', 'evil-underscore'],
  ['X.Appid', 'wxevil-dot'],
  ['X~Appid', 'wxevil-tilde'],
  ['X.Unionid', 'evil-union-dot'],
  ['X~UNIONID', 'evil-union-tilde'],
  ['X.Wx.Phone', '+10000000001'],
  ['X_Wx.Phone', '+10000000002'],
  ['X~Wx_Phone', '+10000000003'],
  ['X-Wx.Phone', '+10000000004'],
  ['X.Wx-Phone', '+10000000005'],
  ['XOpenid', 'evil-nodash'],
  ['X-Open-Id', 'evil-split'],
  ['X-App-Id', 'wxevil-split'],
  ['XWX-PHONE', '+10000000006'],
];
/** Other names with characters outside [A-Za-z0-9-]: folded by CGI/WSGI (`_`), or by some framework (`.`, `~`, …). */
const ODD: Array<[string, string]> = [
  ['X_Forwarded_For', '203.0.113.66'],
  ['X.Forwarded.Host', 'evil-host.example'],
  ['X-Real_IP', '203.0.113.67'],
  ['Foo!Bar', 'evil-bang'],
  ["X'Openid", 'evil-quote'],
  ['X*Openid', 'evil-star'],
  ['X+Openid', 'evil-plus'],
  ['X|Openid', 'evil-pipe'],
  ['X^Openid', 'evil-caret'],
  ['X#Openid', 'evil-hash'],
  ['X$Openid', 'evil-dollar'],
  ['X%Openid', 'evil-percent'],
  ['X&Openid', 'evil-amp'],
  ['X`Openid', 'evil-backtick'],
];
const SPOOF = /evil|^\+1000000000|203\.0\.113\.6/;

function head(path: string, extra: string, lines: Array<[string, string]>): string {
  return `GET ${path} HTTP/1.1\r\nHost: shop.example\r\n${lines.map(([n, v]) => `${n}: ${v}\r\n`).join('')}${extra}Connection: close\r\n\r\n`;
}

function seenOnce(marker: string): Seen {
  const all = stack.up.seen.filter((s) => s.url.includes(`m=${marker}`));
  if (all.length !== 1) throw new Error(`the upstream saw ${all.length} requests for ${marker}`);
  return all[0]!;
}

/** Every header name the upstream got with a character outside [a-z0-9-] (case aside). */
const oddNames = (names: string[]) => names.filter((n) => /[^A-Za-z0-9-]/.test(n));
/** The upstream's identity header lines (any spelling, folded), sorted: [folded name, value]. */
function identityOf(pairs: Array<[string, string]>): Array<[string, string]> {
  return pairs
    .filter(([n]) => IDENTITY.has(folded(n)))
    .map(([n, v]): [string, string] => [folded(n), v])
    .sort(([a], [b]) => a.localeCompare(b));
}
function pairsOf(raw: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

test('HTTP: identity spellings with "." "~" "_" and any odd header name never reach the upstream, on required and public routes', async (t) => {
  for (const [marker, path, extra] of [
    ['names-required', '/api/me', `Authorization: Bearer ${token}\r\n`],
    ['names-public', '/api/public/feed', ''],
  ] as const) {
    const reply = await rawRequest(gw.url, head(`${path}?m=${marker}`, extra, [...SPELLINGS, ...ODD]));
    t.is(reply.responses[0]?.status, 200, marker);
    const seen = seenOnce(marker);
    const pairs = pairsOf(seen.rawHeaders);
    t.deepEqual(oddNames(pairs.map(([n]) => n)), [], `${marker}: no header name outside [A-Za-z0-9-]`);
    t.deepEqual(
      identityOf(pairs),
      marker === 'names-required'
        ? [
            ['xappid', me.appid],
            ['xopenid', me.openid],
            ['xunionid', me.unionid],
          ]
        : [],
      marker,
    );
    t.false(
      pairs.some(([, v]) => SPOOF.test(v)),
      `${marker}: no spoofed value arrives under any name`,
    );
  }
});

test('HTTP: ordinary headers with plain names still pass (only odd names are dropped)', async (t) => {
  const reply = await rawRequest(
    gw.url,
    head('/api/public/ok?m=names-plain', '', [
      ['X-Custom-Header', 'kept-1'],
      ['Accept-Language', 'zh-CN'],
      ['X-Trace-7', 'kept-2'],
      ['X_Custom_Header', 'dropped-1'],
    ]),
  );
  t.is(reply.responses[0]?.status, 200);
  const seen = seenOnce('names-plain');
  t.is(seen.headers['x-custom-header'], 'kept-1');
  t.is(seen.headers['accept-language'], 'zh-CN');
  t.is(seen.headers['x-trace-7'], 'kept-2');
  t.is(seen.headers.x_custom_header, undefined);
});

test('WebSocket: identity spellings with "." "~" "_" and any odd header name never reach the upstream, on required and public routes', async (t) => {
  for (const [marker, path, auth] of [
    ['ws-names-required', '/ws/room', { Authorization: `Bearer ${token}` }],
    ['ws-names-public', '/ws/public/room', {}],
  ] as const) {
    const headers: Record<string, string> = { ...auth };
    for (const [n, v] of [...SPELLINGS, ...ODD]) headers[n] = v;
    const a = await wsConnect(gw.url, `${path}?m=${marker}`, headers);
    t.is(a.status, 101, marker);
    if ('ws' in a) a.ws.terminate();
    const u = stack.wsUp.upgrades.find((x) => x.url.includes(`m=${marker}`));
    t.truthy(u, `${marker} reached the upstream`);
    const pairs = Object.entries(u!.headers).map(([n, v]): [string, string] => [n, String(v)]);
    t.deepEqual(oddNames(pairs.map(([n]) => n)), [], `${marker}: no header name outside [A-Za-z0-9-]`);
    t.deepEqual(
      identityOf(pairs),
      marker === 'ws-names-required'
        ? [
            ['xappid', me.appid],
            ['xopenid', me.openid],
            ['xunionid', me.unionid],
          ]
        : [],
      marker,
    );
    t.false(
      pairs.some(([, v]) => SPOOF.test(v)),
      `${marker}: no spoofed value arrives under any name`,
    );
  }
});

/** Forwarding headers an untrusted client may send, each with a value that must not arrive anywhere. */
const FORWARDING: Array<[string, string]> = [
  ['X-Forwarded-For', '203.0.113.61'],
  ['X-Forwarded-Proto', 'https-evil'],
  ['X-Forwarded-Host', 'evil-xfh.example'],
  ['X-Forwarded-Prefix', '/evil-prefix'],
  ['X-Forwarded-Port', '4431'],
  ['X-Forwarded-Uri', '/evil-uri'],
  ['X-Forwarded-Server', 'evil-server'],
  ['X-Forwarded-Ssl', 'on-evil'],
  ['X-Forwarded-Scheme', 'https-evil-scheme'],
  ['X-Forwarded-Path', '/evil-path'],
  ['X-Forwarded-Method', 'evil-method'],
  ['X-Forwarded', 'for=evil-xf'],
  ['Forwarded', 'for=203.0.113.62;host=evil-fwd.example;proto=https'],
  ['X-Real-IP', '203.0.113.63'],
  ['X-Client-IP', '203.0.113.64'],
  ['True-Client-IP', '203.0.113.65'],
  ['CF-Connecting-IP', '203.0.113.66'],
  ['X-Cluster-Client-IP', '203.0.113.67'],
  ['X-Original-URL', '/evil-original'],
  ['X-Rewrite-URL', '/evil-rewrite'],
  ['X-Original-Host', 'evil-orig-host.example'],
  ['X-Host', 'evil-xhost.example'],
  ['Front-End-Https', 'on-evil-fe'],
  ['X_Forwarded_Prefix', '/evil-underscore-prefix'],
  ['X.Forwarded.Port', '4432'],
  ['X_Original_URL', '/evil-underscore-original'],
  ['X-Forwarded_Host', 'evil-mixed.example'],
];
// the spoofed ports match whole values only: a random X-Request-Id may hold "4431"
const FWD_SPOOF = /evil|203\.0\.113\.6|^443[12]$/;
/** Names (lower case, folded) of the forwarding class; the gateway's own X-Forwarded-For/-Proto/-Host are compared apart. */
const isForwardingName = (n: string) =>
  /^(x-?forwarded|forwarded$|x-?real-?ip$|x-?client-?ip$|true-?client-?ip$|cf-?connecting-?ip$|x-?cluster-?client-?ip$|x-?original|x-?rewrite|x-?host$|front-?end-?https$)/.test(n.toLowerCase().replace(/[_.~]/g, '-'));

test('HTTP, untrusted peer: every forwarding header the client sent is removed; the upstream gets the gateway\'s own X-Forwarded-For/-Proto/-Host', async (t) => {
  for (const [marker, path, extra] of [
    ['fwd-required', '/api/me', `Authorization: Bearer ${token}\r\n`],
    ['fwd-public', '/api/public/feed', ''],
  ] as const) {
    const reply = await rawRequest(gw.url, head(`${path}?m=${marker}`, extra, FORWARDING));
    t.is(reply.responses[0]?.status, 200, marker);
    const seen = seenOnce(marker);
    const pairs = pairsOf(seen.rawHeaders);
    t.deepEqual(
      pairs.filter(([n]) => isForwardingName(n)).map(([n, v]) => [n.toLowerCase(), v]).sort(),
      [
        ['x-forwarded-for', '127.0.0.1'],
        ['x-forwarded-host', 'shop.example'],
        ['x-forwarded-proto', 'http'],
      ],
      marker,
    );
    t.false(
      pairs.some(([, v]) => FWD_SPOOF.test(v)),
      `${marker}: no spoofed value arrives under any name`,
    );
  }
});

test('WebSocket, untrusted peer: every forwarding header the client sent is removed; the upstream gets the gateway\'s own X-Forwarded-For/-Proto/-Host', async (t) => {
  const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
  for (const [n, v] of FORWARDING) headers[n] = v;
  const a = await wsConnect(gw.url, '/ws/room?m=ws-fwd-untrusted', headers);
  t.is(a.status, 101);
  if ('ws' in a) a.ws.terminate();
  const u = stack.wsUp.upgrades.find((x) => x.url.includes('m=ws-fwd-untrusted'))!;
  t.truthy(u);
  const pairs = Object.entries(u.headers).map(([n, v]): [string, string] => [n, String(v)]);
  t.deepEqual(
    pairs.filter(([n]) => isForwardingName(n)).sort(),
    [
      ['x-forwarded-for', '127.0.0.1'],
      ['x-forwarded-host', new URL(gw.url).host],
      ['x-forwarded-proto', 'http'],
    ],
  );
  t.false(pairs.some(([, v]) => FWD_SPOOF.test(v)));
});

/** What a trusted load balancer sends: its forwarding headers pass, X-Forwarded-For gets the peer appended. */
const FROM_BALANCER: Array<[string, string]> = [
  ['X-Forwarded-For', '198.51.100.7'],
  ['X-Forwarded-Proto', 'https'],
  ['X-Forwarded-Host', 'shop.example'],
  ['X-Forwarded-Prefix', '/shop'],
  ['X-Forwarded-Port', '443'],
  ['Forwarded', 'for=198.51.100.7;proto=https'],
  ['X-Real-IP', '198.51.100.7'],
  ['X-Original-URL', '/evil-original'],
  ['X-Rewrite-URL', '/evil-rewrite'],
  ['X_Forwarded_Prefix', '/evil-underscore-prefix'],
  ['X.Forwarded.Host', 'evil-dot.example'],
];
const TRUSTED_EXPECTED = [
  ['forwarded', 'for=198.51.100.7;proto=https'],
  ['x-forwarded-for', '198.51.100.7, 127.0.0.1'],
  ['x-forwarded-host', 'shop.example'],
  ['x-forwarded-port', '443'],
  ['x-forwarded-prefix', '/shop'],
  ['x-forwarded-proto', 'https'],
  ['x-real-ip', '198.51.100.7'],
];

test('HTTP, trusted proxy: its X-Forwarded-* and Forwarded pass (X-Forwarded-For appended to); X-Original-URL / X-Rewrite-URL and odd spellings never do', async (t) => {
  const reply = await rawRequest(trustingGw.url, head('/api/x?m=fwd-trusted', '', FROM_BALANCER));
  t.is(reply.responses[0]?.status, 200);
  const pairs = pairsOf(seenOnce('fwd-trusted').rawHeaders);
  t.deepEqual(
    pairs.filter(([n]) => isForwardingName(n)).map(([n, v]) => [n.toLowerCase(), v]).sort(),
    TRUSTED_EXPECTED,
  );
  t.false(pairs.some(([, v]) => /evil/.test(v)));
});

test('WebSocket, trusted proxy: its X-Forwarded-* and Forwarded pass (X-Forwarded-For appended to); X-Original-URL / X-Rewrite-URL and odd spellings never do', async (t) => {
  const headers: Record<string, string> = {};
  for (const [n, v] of FROM_BALANCER) headers[n] = v;
  const a = await wsConnect(trustingGw.url, '/ws/room?m=ws-fwd-trusted', headers);
  t.is(a.status, 101);
  if ('ws' in a) a.ws.terminate();
  const u = stack.wsUp.upgrades.find((x) => x.url.includes('m=ws-fwd-trusted'))!;
  const pairs = Object.entries(u.headers).map(([n, v]): [string, string] => [n, String(v)]);
  t.deepEqual(pairs.filter(([n]) => isForwardingName(n)).sort(), TRUSTED_EXPECTED);
  t.false(pairs.some(([, v]) => /evil/.test(v)));
});
