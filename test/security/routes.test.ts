/**
 * Who is who, part 3: the path decides which rules apply, and no spelling of a protected path gets
 * through a public route's rules. A protected route and a public one sit side by side on one upstream
 * (as in a real service), so a bypass would show as a protected path reaching it without a session.
 * Every request goes over a raw socket: an HTTP client would normalise "..", "#" or the request target.
 * Serial, so that the last test can look back at everything the upstream saw.
 */
import test from 'ava';
import { login, type TestGateway } from '../helpers/gateway.js';
import { rawRequest, type RawResponse } from '../helpers/http.js';
import { useStack } from '../helpers/stack.js';

const stack = useStack(test);
let gw: TestGateway;
let token: string;

test.before(async () => {
  await stack.start();
  gw = await stack.gateway({
    routes: [
      { path: '/api/public', upstream: stack.up.url, auth: 'none' },
      { path: '/api', upstream: stack.up.url },
      { path: '/public', upstream: stack.up.url, auth: 'none' },
      { path: '/secret', upstream: stack.up.url },
    ],
  });
  token = await login(gw.url, 'routes-user.1');
});

/** One request over a raw socket: `target` is the request target exactly as written on the wire. */
async function send(target: string, opts: { method?: string; host?: string; auth?: boolean } = {}): Promise<RawResponse> {
  const reply = await rawRequest(
    gw.url,
    `${opts.method ?? 'GET'} ${target} HTTP/1.1\r\nHost: ${opts.host ?? 'shop.example'}\r\n` +
      `${opts.auth ? `Authorization: Bearer ${token}\r\n` : ''}Connection: close\r\n\r\n`,
  );
  const res = reply.responses[0];
  if (!res) throw new Error(`no answer to ${target}: ${JSON.stringify(reply.text)}`);
  return res;
}

const json = (res: RawResponse) => JSON.parse(res.body) as { error: string; message: string };

/** Upstream requests whose URL holds this marker. */
const reached = (marker: string) => stack.up.seen.filter((s) => s.url.includes(marker)).map((s) => s.url);

/** Paths not in plain form: refused with 400 bad_path, with or without a session. */
const refused: Array<[string, string]> = [
  ['..', '/api/public/../secret?m=r-dotdot'],
  ['.. at the end', '/public/..?m=r-dotdot-end'],
  ['..  to another top-level prefix', '/public/../secret/x?m=r-dotdot-top'],
  ['%2e%2e', '/api/public/%2e%2e/secret?m=r-enc'],
  ['%2E%2e', '/api/public/%2E%2e/secret?m=r-enc-mixed'],
  ['.%2e', '/public/.%2e/secret?m=r-half'],
  ['%2e.', '/public/%2e./secret?m=r-half2'],
  ['. segment', '/public/./x?m=r-dot'],
  ['%2e segment', '/public/%2e/x?m=r-encdot'],
  ['%2f', '/public%2f..%2fsecret?m=r-slash'],
  ['%2F', '/public%2F..%2Fsecret?m=r-slash-upper'],
  ['%5c', '/public%5c..%5csecret?m=r-backslash'],
  ['%5C', '/api/public%5C..%5Csecret?m=r-backslash-upper'],
  ['double slash at the start', '//secret?m=r-double-start'],
  ['double slash inside', '/public//secret?m=r-double-inside'],
  ['double slash in a protected path', '/api//secret?m=r-double-protected'],
  ['; parameter on the public prefix', '/public;x=1/../secret?m=r-semi'],
  ['; parameter alone', '/api/public;jsessionid=1?m=r-semi-alone'],
  ['%3b (encoded ;)', '/api/public%3bx/secret?m=r-semi-enc'],
  ['malformed escape', '/public/%zz?m=r-malformed'],
  ['truncated escape', '/public/%e0%a4%a?m=r-malformed-utf8'],
  ['encoded NUL', '/public/x%00/../secret?m=r-nul'],
  ['encoded CR LF', '/public/x%0d%0aX-Openid:%20evil?m=r-crlf'],
];

for (const [name, target] of refused) {
  test.serial(`a path with ${name} is refused with 400 bad_path and reaches no upstream`, async (t) => {
    const marker = /m=([\w-]+)/.exec(target)![1]!;
    for (const auth of [false, true]) {
      const res = await send(target, { auth });
      t.is(res.status, 400, `${target} (session: ${auth})`);
      t.deepEqual(Object.keys(json(res)).sort(), ['error', 'message']);
      t.is(json(res).error, 'bad_path');
    }
    t.deepEqual(reached(marker), []);
  });
}

test.serial('a raw backslash in the path never reaches the upstream', async (t) => {
  // node may refuse it itself (400 without a body); if it passes, the gateway's path check does
  const res = await send('/public\\..\\secret?m=r-raw-backslash');
  t.is(res.status, 400);
  t.deepEqual(reached('m=r-raw-backslash'), []);
});

test.serial('case games are held to the stricter route: /API/secret needs a session like /api/secret', async (t) => {
  for (const target of ['/API/secret?m=c1', '/Api/Secret?m=c2', '/SECRET/x?m=c3', '/Secret?m=c4', '/%61pi/secret?m=c5', '/api/%53ecret?m=c6', '/%53ECRET?m=c7']) {
    const res = await send(target);
    t.is(res.status, 401, target);
    t.is(json(res).error, 'unauthorized', target);
  }
  t.deepEqual(reached('m=c'), []);
  // a public prefix in another case is still the public route, and the upstream gets the bytes as sent
  for (const target of ['/API/PUBLIC/x?m=cp1', '/Public/x?m=cp2', '/api/%70ublic/x?m=cp3']) {
    t.is((await send(target)).status, 200, target);
    t.deepEqual(reached(target.slice(target.indexOf('?'))), [target]);
  }
});

test.serial('trailing dots never turn a path into a public one or a protected one into nothing', async (t) => {
  // still under /api: needs a session
  for (const target of ['/api/secret.?m=d1', '/api/secret..?m=d2', '/api/public.?m=d3', '/api/public./x?m=d4', '/api/public%2e/x?m=d5']) {
    const res = await send(target);
    t.is(res.status, 401, target);
    t.is(json(res).error, 'unauthorized', target);
  }
  // a dotted top-level segment is no route at all (there is no catch-all here)
  for (const target of ['/api./secret?m=d6', '/secret.?m=d7', '/secret./x?m=d8', '/public./x?m=d9']) {
    const res = await send(target);
    t.is(res.status, 404, target);
    t.is(json(res).error, 'not_found', target);
  }
  t.deepEqual(reached('m=d'), []);
  // with a session, the upstream gets exactly the dotted path that was authorized
  t.is((await send('/api/secret.?m=d10', { auth: true })).status, 200);
  t.deepEqual(reached('m=d10'), ['/api/secret.?m=d10']);
});

test.serial('Unicode look-alikes of a protected prefix are no route, not a way around it', async (t) => {
  // "ſecret" (U+017F, upper-cases to S) and "secret" with a Kelvin sign K: neither is /secret, neither is public
  for (const target of ['/%C5%BFecret?m=u1', '/%E2%84%AAey?m=u2', '/api/%C5%BFecret?m=u3']) {
    const res = await send(target);
    t.true(res.status === 404 || res.status === 401, `${target}: ${res.status}`);
  }
  t.deepEqual(reached('m=u'), []);
});

test.serial('absolute-form request targets are refused, whatever they name', async (t) => {
  const targets = [
    'http://evil/api/secret?m=a1',
    'http://evil/api/public/x?m=a2',
    'http://shop.example/secret?m=a3',
    'http://a@evil/public/x?m=a4',
    `${gw.url}/public/x?m=a5`,
    'https://evil/public/x?m=a6',
  ];
  for (const target of targets) {
    for (const auth of [false, true]) {
      const res = await send(target, { host: 'evil', auth });
      t.is(res.status, 400, target);
      t.is(json(res).error, 'bad_path', target);
    }
  }
  t.deepEqual(reached('m=a'), []);
});

test.serial('OPTIONS * is refused with 400 JSON, and targets without a leading slash with 400', async (t) => {
  for (const method of ['OPTIONS', 'GET', 'POST']) {
    const res = await send('*', { method, auth: true });
    t.is(res.status, 400, `${method} *`);
    t.is(json(res).error, 'bad_path');
  }
  // node's parser refuses these itself (400 without a body)
  for (const target of ['?m=np1', 'secret?m=np2', 'public/x?m=np3']) t.is((await send(target, { auth: true })).status, 400, target);
  t.is(stack.up.seen.filter((s) => s.method === 'OPTIONS' || s.url.includes('m=np')).length, 0);
});

test.serial('CONNECT is never tunnelled: the connection is closed and nothing reaches an upstream', async (t) => {
  const before = stack.up.seen.length;
  for (const target of ['evil.example:443', `127.0.0.1:${new URL(stack.up.url).port}`]) {
    const reply = await rawRequest(gw.url, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nAuthorization: Bearer ${token}\r\n\r\nGET /secret?m=tunnelled HTTP/1.1\r\nHost: x\r\n\r\n`);
    t.true(reply.closedByServer, target);
    t.false(/^HTTP\/1\.1 2/.test(reply.text), `${target}: no 2xx, so no tunnel`);
  }
  t.is(stack.up.seen.length, before);
  t.deepEqual(reached('m=tunnelled'), []);
});

test.serial('a # fragment never takes part in routing', async (t) => {
  for (const target of ['/public/x#/../../secret', '/public#/../secret?m=f1', '/secret#/public', '/api/public/x#frag?m=f2']) {
    for (const auth of [false, true]) {
      const res = await send(target, { auth });
      t.is(res.status, 400, target);
      t.is(json(res).error, 'bad_path', target);
    }
  }
  t.false(stack.up.seen.some((s) => s.url.includes('#')));
  t.deepEqual(reached('m=f'), []);
});

test.serial('a public prefix in the query string never makes a protected path public', async (t) => {
  const targets = [
    '/secret?x=/public&m=q1',
    '/secret?/public&m=q2',
    '/secret?m=q3&x=/public/../',
    '/api/secret?next=/api/public/&m=q4',
    '/api/secret?/api/public?m=q5',
    '/api/secret?%2f..%2fapi%2fpublic&m=q6',
    '/secret?m=q7#/public',
  ];
  for (const target of targets) {
    const res = await send(target);
    t.true(res.status === 401 || res.status === 400, `${target}: ${res.status}`);
    t.true(['unauthorized', 'bad_path'].includes(json(res).error), target);
  }
  t.deepEqual(reached('m=q'), []);
  // and a protected prefix in a public path's query does not matter either: the query reaches the upstream unchanged
  t.is((await send('/public/x?next=/secret/../admin&y=%2e%2e%2f&m=q8')).status, 200);
  t.deepEqual(reached('m=q8'), ['/public/x?next=/secret/../admin&y=%2e%2e%2f&m=q8']);
});

test.serial('a request that passes reaches the upstream with exactly the path and query it was authorized on', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['/api/secret/orders?m=e1', true],
    ['/api/secret/%41b%20c/%E4%BD%A0%E5%A5%BD?m=e3&x=1&x=2&y=%2F..%2F&z=%00', true],
    ['/secret?m=e4&&&==?/?', true],
    ['/public/a/b/c.json?m=e5&q=%3Cscript%3E', false],
    ['/API/Public/X?m=e6', false],
    ['/public/%252e%252e/secret?m=e7', false], // double-encoded dots are just text to a single decode
    ['/api/public/%252e%252e%252fsecret?m=e8', false],
  ];
  for (const [target, auth] of cases) {
    const res = await send(target, { auth });
    const marker = /m=(e\d+)/.exec(target)![1]!;
    t.is(res.status, 200, target);
    t.deepEqual(reached(`m=${marker}`), [target], `${target}: the upstream saw exactly what was authorized`);
    t.is(JSON.parse(res.body).url, target);
  }
});

test.serial('without a session nothing but the public prefixes reached the upstream in this whole file', async (t) => {
  t.true(stack.up.seen.length > 0);
  for (const s of stack.up.seen) {
    const authed = s.headers['x-openid'] !== undefined;
    if (!authed) t.regex(safeDecode(s.url.split('?')[0]!), /^\/(api\/)?public(\/|$)/i, `${s.url} reached the upstream without a session`);
  }
});

function safeDecode(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}
