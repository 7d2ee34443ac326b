import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import test, { type ExecutionContext } from 'ava';
import { buildConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { ERRORS } from '../src/base/errors.js';
import { openapiDocument } from '../src/server/openapi.js';
import { createCipheriv } from 'node:crypto';
import { flatXml, mpSignature } from '../src/wechat/mp-crypto.js';
import { simulatedSessionKey, startSimulator } from '../src/dev/simulator.js';
import { Browser } from './helpers/browser.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request, type Reply } from './helpers/http.js';

/**
 * The OpenAPI document (src/server/openapi.ts, from the endpoint table src/endpoints/) against the real gateway: a gateway in this process with
 * web logins on (Official Account, website QR login, scan-to-login with its demo page), the simulator as
 * WeChat. Every documented operation is driven for real, its success and documented errors, and every
 * answer is checked against the document: the status is one listed for the operation, the content type
 * one listed for that status, its required headers are there and match, and the JSON body validates
 * against the response schema (ajv in strict mode, which refuses keywords it does not know, so the
 * document cannot lean on anything left unchecked); the document itself is checked against the OpenAPI
 * 3.1 schema (@seriousme/openapi-schema-validator). The last test checks every operation was seen
 * answering.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';
const STATE_SECRET = 'state-secret-0123456789-0123456789-abcdef';
const PUBLIC = 'https://m.example.com';
const MP_TOKEN = 'oaToken0123456789';
const SESSION = '__Host-wxgate_session';

type Json = any;
type Sim = Awaited<ReturnType<typeof startSimulator>>;

let sim: Sim;
let gw: TestGateway;
let raw: Record<string, unknown>;
let config: Config;
let doc: Json;

function webConfig(over: Record<string, unknown> = {}) {
  return testConfig({
    apiBase: sim.url,
    wechat: { apiBase: sim.url, oauthBase: sim.url, mpBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
    web: {
      publicUrl: PUBLIC,
      stateSecret: STATE_SECRET,
      mp: { appid: MP, secret: MP_SECRET },
      open: { appid: OPEN, secret: OPEN_SECRET },
      scan: { checkPath: false, envVersion: 'develop', demo: true },
      mpQr: { token: MP_TOKEN, demo: true },
    },
    ...over,
  });
}

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
  raw = webConfig();
  config = buildConfig(raw, 'test');
  doc = openapiDocument(config);
  gw = await startTestGateway(raw);
});
test.after.always(async () => {
  await gw?.close();
  await sim?.close();
});

/* ------------------------------------------------- JSON Schema (2020-12) with ajv, strict: unknown keywords refused */

/** The value at a local reference ("#/components/schemas/Error"); undefined when it does not resolve. */
function resolve(root: Json, ref: string): Json {
  if (!ref.startsWith('#/')) return undefined;
  let at = root;
  for (const part of ref.slice(2).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))) {
    if (at === null || typeof at !== 'object' || !Object.hasOwn(at, part)) return undefined;
    at = at[part];
  }
  return at;
}

const COMPONENT = '#/components/schemas/';
const componentId = (name: string) => `urn:wxgate:schemas:${name}`;
/** A schema with its refs to the document's components made refs to the schemas added to ajv under componentId. */
function rebased(v: Json): Json {
  if (Array.isArray(v)) return v.map(rebased);
  if (!v || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === '$ref' && typeof x === 'string' && x.startsWith(COMPONENT) ? componentId(x.slice(COMPONENT.length)) : rebased(x)]));
}

/** An ajv for one document: its components.schemas added (compiling one with an unknown keyword throws). */
function validatorFor(d: Json): (schema: Json, value: unknown, at: string) => string[] {
  const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true });
  for (const [name, s] of Object.entries<Json>(d.components?.schemas ?? {})) ajv.addSchema(rebased(s), componentId(name));
  const compiled = new Map<string, ValidateFunction>();
  return (schema, value, at) => {
    const key = JSON.stringify(schema);
    let check = compiled.get(key);
    if (!check) compiled.set(key, (check = ajv.compile(rebased(schema))));
    return check(value) ? [] : (check.errors ?? []).map((e) => `${at}${e.instancePath}: ${e.message} (${e.schemaPath})`);
  };
}
const validators = new WeakMap<object, ReturnType<typeof validatorFor>>();
/** Every way `value` breaks `schema` (empty when it validates); `$ref`s point into `d`'s components. */
function validate(schema: Json, value: unknown, d: Json, at = '$'): string[] {
  if (!validators.has(d)) validators.set(d, validatorFor(d));
  return validators.get(d)!(schema, value, at);
}

test('the validator itself: types, required, enum, additionalProperties, allOf, oneOf, $ref into the components, unknown keywords', (t) => {
  const root = { components: { schemas: { A: { type: 'object', required: ['a'], properties: { a: { type: 'integer', minimum: 1 } }, additionalProperties: false } } } };
  const A = { $ref: '#/components/schemas/A' };
  t.deepEqual(validate(A, { a: 1 }, root), []);
  t.is(validate(A, { a: 0 }, root).length, 1);
  t.is(validate(A, { a: 1, b: 2 }, root).length, 1, 'additionalProperties false');
  t.is(validate(A, {}, root).length, 1, 'required');
  t.true(validate(A, [], root).length > 0, 'type');
  t.throws(() => validate({ $ref: '#/components/schemas/Nope' }, 1, root), undefined, 'a $ref that does not resolve');
  t.true(validate({ allOf: [A, { properties: { a: { enum: [2] } } }] }, { a: 1 }, root).length > 0, 'allOf narrows');
  t.true(validate({ oneOf: [{ const: 1 }, { type: 'integer' }] }, 1, root).length > 0, 'oneOf needs exactly one');
  t.deepEqual(validate({ oneOf: [{ const: 1 }, { const: 2 }] }, 2, root), []);
  t.is(validate({ type: 'string', pattern: '^a+$' }, 'ab', root).length, 1);
  t.throws(() => validate({ type: 'string', maxItem: 3 }, 'x', root), { message: /maxItem/ });
});

/* ------------------------------------------------------------------------------ checking real answers */

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

/** The document's path template for a concrete path ("/scan/tickets/abc" → "/scan/tickets/{id}"). */
function templateOf(d: Json, path: string): string | undefined {
  const pathname = path.split('?')[0]!;
  if (Object.hasOwn(d.paths, pathname)) return pathname;
  return Object.keys(d.paths).find((tpl) => new RegExp(`^${tpl.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`).test(pathname));
}

const mediaType = (header: string | undefined) => (header ?? '').split(';')[0]!.trim().toLowerCase();

/** What a real answer breaks of the document's operation (empty when it fits). */
function conformance(d: Json, method: string, path: string, res: Reply): string[] {
  const tpl = templateOf(d, path);
  if (!tpl) return [`${path} is not a documented path`];
  const op = d.paths[tpl][method.toLowerCase()];
  if (!op) return [`${method} ${tpl} is not a documented operation`];
  const response = op.responses[String(res.status)] ?? op.responses.default;
  if (!response) return [`${method} ${tpl} answered ${res.status} (${res.text.slice(0, 120)}), which is not among ${Object.keys(op.responses).join(', ')}`];
  const errs: string[] = [];
  const where = `${method} ${tpl} ${res.status}`;
  for (const [name, h] of Object.entries<Json>(response.headers ?? {})) {
    const got = res.headers[name.toLowerCase()];
    if (got === undefined) {
      if (h.required) errs.push(`${where}: header ${name} is required`);
      continue;
    }
    for (const v of Array.isArray(got) ? got : [got]) errs.push(...validate(h.schema ?? {}, v, d, `${where} header ${name}`));
  }
  const content = response.content as Record<string, Json> | undefined;
  if (!content) {
    if (res.text !== '') errs.push(`${where}: a body (${res.text.slice(0, 80)}) where none is documented`);
    return errs;
  }
  const type = mediaType(res.headers['content-type']);
  const media = content[type];
  if (!media) return [...errs, `${where}: content type ${type || '(none)'} is not among ${Object.keys(content).join(', ')}`];
  if (type === 'application/json' || type.endsWith('+json')) {
    if (res.json === undefined) errs.push(`${where}: the body is not JSON`);
    else errs.push(...validate(media.schema, res.json, d, where));
  } else {
    errs.push(...validate(media.schema ?? {}, res.text, d, where));
  }
  return errs;
}

/** Operations seen answering, and with which statuses: "post /login" → {200, 400, ...}. */
const seen = new Map<string, Set<number>>();

interface CallOpts {
  headers?: Record<string, string>;
  body?: unknown;
  /** sends it as this browser, with its cookies, and keeps the ones it is given */
  browser?: Browser;
  /** another gateway than the shared one */
  base?: string;
  /** the document to check against (default: the shared gateway's) */
  d?: Json;
}

/** Sends a request (through `browser` when given, keeping its cookies), checks the answer against `d`, records it. */
async function call(
  t: ExecutionContext,
  method: string,
  path: string,
  opts: CallOpts = {},
): Promise<Reply> {
  const d = opts.d ?? doc;
  const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  const headers = { accept: 'application/json', ...(body !== undefined && typeof opts.body !== 'string' ? { 'content-type': 'application/json' } : {}), ...opts.headers };
  const res = opts.browser
    ? await opts.browser.go(path, { method, headers, body })
    : await request(opts.base ?? gw.url, { method, path, headers, body });
  t.deepEqual(conformance(d, method, path, res), [], `${method} ${path} → ${res.status} ${res.text.slice(0, 200)}`);
  if (d === doc) {
    const key = `${method.toLowerCase()} ${templateOf(d, path)}`;
    seen.set(key, (seen.get(key) ?? new Set()).add(res.status));
  }
  return res;
}

/** The call, and its status and error code as expected. */
async function expect(t: ExecutionContext, status: number, error: string | undefined, method: string, path: string, opts: CallOpts = {}) {
  const res = await call(t, method, path, opts);
  t.is(res.status, status, `${method} ${path}: ${res.text.slice(0, 200)}`);
  if (error !== undefined) t.is(res.json?.error ?? (/<code>([a-z_]+)<\/code>/.exec(res.text)?.[1]), error, `${method} ${path}`);
  return res;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
let users = 0;
const user = (name: string) => `${name}${++users}`;

async function devEncrypt(body: object): Promise<{ encryptedData: string; iv: string; rawData: string; signature: string }> {
  const res = await request(sim.url, { method: 'POST', path: '/dev/encrypt', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`dev/encrypt: ${res.status} ${res.text}`);
  return res.json;
}

/** authorize → the simulator's approval (as `name`) → the callback URL the browser is sent to. */
async function toCallback(t: ExecutionContext, b: Browser, flow: 'mp' | 'open', name: string, opts: { deny?: boolean } = {}) {
  const start = await expect(t, 302, undefined, 'GET', `/oauth/${flow}/authorize?redirect=/`, { browser: b });
  const q = new URLSearchParams(new URL(start.headers.location!).search);
  q.set('user', name);
  if (opts.deny) q.set('deny', '1');
  const approved = await request(sim.url, { path: `/connect/approve?${q}` });
  if (approved.status !== 302) throw new Error(`approve: ${approved.status} ${approved.text}`);
  const back = new URL(approved.headers.location!);
  return { callback: back.pathname + back.search, state: back.searchParams.get('state')! };
}

async function webLogin(t: ExecutionContext, flow: 'mp' | 'open', name: string): Promise<Browser> {
  const b = new Browser(gw.url);
  const { callback } = await toCallback(t, b, flow, name);
  await expect(t, 302, undefined, 'GET', callback, { browser: b });
  t.truthy(b.jar.get(SESSION), 'a session cookie');
  return b;
}

/* ---------------------------------------------------------------------------------- the document itself */

/** Every $ref anywhere in `v`. */
function refs(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) v.forEach((x) => refs(x, out));
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k === '$ref' && typeof x === 'string') out.push(x);
      else refs(x, out);
    }
  }
  return out;
}

/**
 * What is wrong with the document: against the OpenAPI 3.1 schema (@seriousme/openapi-schema-validator),
 * then what that schema cannot say: every $ref resolves, every component schema compiles in strict ajv,
 * operationIds are unique, path parameters match the templates, security requirements name schemes.
 */
async function structuralProblems(d: Json): Promise<string[]> {
  const out: string[] = [];
  if (typeof d.openapi !== 'string' || !/^3\.1\.\d+$/.test(d.openapi)) out.push(`openapi is ${d.openapi}, not 3.1.x`);
  const checked = await new Validator().validate(JSON.parse(JSON.stringify(d)));
  if (!checked.valid) out.push(`not valid OpenAPI: ${JSON.stringify(checked.errors).slice(0, 2000)}`);
  if (!d.paths || typeof d.paths !== 'object') return [...out, 'no paths'];
  for (const r of refs(d)) if (resolve(d, r) === undefined) out.push(`$ref ${r} does not resolve`);
  const schemes = new Set(Object.keys(d.components?.securitySchemes ?? {}));
  try {
    validatorFor(d);
  } catch (err) {
    out.push(`components.schemas: ${(err as Error).message}`);
  }
  const ids = new Set<string>();
  for (const [path, item] of Object.entries<Json>(d.paths)) {
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const where = `${method} ${path}`;
      if (typeof op.operationId !== 'string' || ids.has(op.operationId)) out.push(`${where}: operationId missing or not unique`);
      ids.add(op.operationId);
      for (const [status, r] of Object.entries<Json>(op.responses ?? {})) {
        for (const [type, media] of Object.entries<Json>(r.content ?? {})) if (!media.schema) out.push(`${where} ${status} ${type}: no schema`);
      }
      const params: Json[] = op.parameters ?? [];
      for (const p of params) if (p.in === 'path' && !templated.includes(p.name)) out.push(`${where}: path parameter ${p.name} is not in the path`);
      for (const name of templated) if (!params.some((p) => p.in === 'path' && p.name === name)) out.push(`${where}: {${name}} has no path parameter`);
      for (const req of op.security ?? []) for (const name of Object.keys(req)) if (!schemes.has(name)) out.push(`${where}: security scheme ${name} is not defined`);
    }
  }
  return out;
}

test.serial('the document is valid OpenAPI 3.1 in structure: info, paths, operations with responses, every $ref resolves', async (t) => {
  t.deepEqual(await structuralProblems(doc), []);
  t.deepEqual(await structuralProblems(JSON.parse(JSON.stringify(doc))), [], 'the same after a JSON round trip (as served)');
  t.deepEqual(doc.components.schemas.Error.properties.error.enum, Object.keys(ERRORS), "the Error schema's codes are the catalogue's");
  t.deepEqual(
    Object.keys(doc.paths).sort(),
    [
      '/healthz', '/login', '/logout', '/metrics', '/readyz', '/session', '/wx/decrypt', '/wx/phone',
      '/oauth/mp/authorize', '/oauth/mp/callback', '/oauth/open/authorize', '/oauth/open/callback', '/oauth/web/authorize',
      '/scan/tickets', '/scan/tickets/{id}', '/scan/tickets/{id}/scanned', '/scan/tickets/{id}/confirm', '/scan/tickets/{id}/cancel', '/scan/demo',
      '/qr/tickets', '/qr/tickets/{id}', '/qr/demo', '/wx/mp/events',
      ...(typeof (config.endpoints as { openapi?: unknown }).openapi === 'string' ? [(config.endpoints as { openapi?: string }).openapi!] : []),
    ].sort(),
  );
  t.deepEqual(doc.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: 'The token from POST /login.' });
  t.like(doc.components.securitySchemes.sessionCookie, { type: 'apiKey', in: 'cookie', name: SESSION });
  t.deepEqual(doc.paths['/session'].get.security, [{ bearer: [] }, { sessionCookie: [] }]);
  t.deepEqual(doc.paths['/login'].post.security, []);
  t.deepEqual(doc.servers, [{ url: PUBLIC }]);
  // every error response of every operation lists codes of its own status only
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    for (const [method, op] of Object.entries<Json>(item)) {
      for (const [status, r] of Object.entries<Json>(op.responses)) {
        if (Number(status) < 400) continue;
        const codes: string[] = r.content['application/json'].schema.allOf[1].properties.error.enum;
        t.true(codes.length > 0);
        for (const c of codes) t.is(ERRORS[c as keyof typeof ERRORS].status as number, Number(status), `${method} ${path} ${status}: ${c}`);
      }
    }
  }
});

test.serial('the document contains no configured secret', async (t) => {
  const adminToken = 'admin-token-0123456789-0123456789';
  const redisPassword = 'redis-password-0123456789';
  const cfg = buildConfig(
    {
      ...raw,
      admin: { port: 0, token: adminToken },
      session: { store: 'redis', redis: { url: `redis://:${redisPassword}@127.0.0.1:6390` } },
    },
    'test',
  );
  const text = JSON.stringify(openapiDocument(cfg));
  for (const secret of [SECRET, MP_SECRET, OPEN_SECRET, STATE_SECRET, MP_TOKEN, adminToken, redisPassword, '6390']) t.false(text.includes(secret), secret);
  t.deepEqual(await structuralProblems(JSON.parse(text)), []);
});

test.serial('the paths follow the configuration: endpoints moved, metrics on their own port, no web logins', async (t) => {
  const cfg = buildConfig(
    testConfig({ apiBase: 'http://127.0.0.1:1', endpoints: { login: '/api/wx-login', phone: '/api/phone' }, metrics: { port: 0 } }),
    'test',
  );
  const d = openapiDocument(cfg) as Json;
  t.deepEqual(await structuralProblems(d), []);
  t.truthy(d.paths['/api/wx-login']?.post, 'login moved');
  t.is(d.paths['/login'], undefined);
  t.truthy(d.paths['/api/phone']?.post);
  t.is(d.paths['/wx/phone'], undefined);
  t.is(d.paths['/metrics'], undefined, 'metrics are on their own listener');
  t.false(Object.keys(d.paths).some((p) => p.startsWith('/oauth') || p.startsWith('/scan')), 'no web logins');
  t.is(d.components.securitySchemes.sessionCookie, undefined);
  t.is(d.components.securitySchemes.bearer.description, 'The token from POST /api/wx-login.');
  t.deepEqual(d.paths['/session'].get.security, [{ bearer: [] }]);
  t.is(d.paths['/logout'].post.responses['403'], undefined, 'no CSRF without cookies');
  t.is(d.paths['/wx/decrypt'].post.responses['403'], undefined, 'no web sessions to refuse');

  const http = openapiDocument(buildConfig(webConfig({ web: { publicUrl: 'http://127.0.0.1:8080', cookie: { name: 'sid', csrf: 'double-submit' }, scan: {} } }), 'test')) as Json;
  t.is(http.components.securitySchemes.sessionCookie.name, 'sid', 'the bare name on http');
  t.truthy(http.paths['/scan/tickets']);
  t.is(http.paths['/scan/demo'], undefined, 'the demo page is off unless configured');
  t.is(http.paths['/oauth/mp/authorize'], undefined);
  t.true(http.paths['/logout'].post.parameters.some((p: Json) => p.name === 'X-CSRF-Token'), 'double-submit: X-CSRF-Token');
  t.deepEqual(await structuralProblems(http), []);
});

/* ------------------------------------------------------------------- every operation, against the gateway */

test.serial('POST /login: success (with and without open data) and its documented errors', async (t) => {
  const name = user('ann');
  const ok = await expect(t, 200, undefined, 'POST', '/login', { body: { code: `${name}.1` } });
  t.regex(ok.json.token, /^[A-Za-z0-9_-]{59}$/);
  const data = await devEncrypt({ appid: APPID, code: `${name}.2`, data: { nickName: 'Ann' } });
  const withData = await expect(t, 200, undefined, 'POST', '/login', { body: { code: `${name}.2`, appid: APPID, ...data } });
  t.deepEqual(withData.json.data, { nickName: 'Ann' });
  await expect(t, 200, undefined, 'POST', '/login', { body: { code: `${name}.3` }, headers: { 'x-wx-appid': APPID } });

  const cases: Array<[number, string, unknown, Record<string, string>?]> = [
    [400, 'invalid_request', {}],
    [400, 'invalid_request', { code: 'a b' }],
    [400, 'invalid_json', '{"code":'],
    [400, 'unknown_appid', { code: 'x1', appid: 'wxffffffffffffffff' }],
    [400, 'invalid_request', { code: 'x1', encryptedData: 'AAAA' }],
    [400, 'signature_invalid', { code: `${user('bob')}.1`, ...data, rawData: '{"nickName":"Eve"}' }],
    [413, 'payload_too_large', { code: 'x1', pad: 'p'.repeat(5000) }],
    [415, 'unsupported_media_type', 'code=x1', { 'content-type': 'application/x-www-form-urlencoded' }],
    [401, 'code_invalid', { code: 'fail-40029' }],
    [401, 'code_used', { code: 'fail-40163' }],
    [403, 'user_blocked', { code: 'fail-40226' }],
    [429, 'wechat_rate_limited', { code: 'fail-45011' }],
    [502, 'wechat_error', { code: 'fail-61234' }],
    [502, 'wechat_error', { code: 'garbage' }],
    [503, 'wechat_unavailable', { code: 'fail--1' }],
    [504, 'wechat_timeout', { code: 'slow-1500' }],
  ];
  for (const [status, error, body, headers] of cases) await expect(t, status, error, 'POST', '/login', { body, headers });
  const used = `${user('cy')}.1`;
  await login(gw.url, used);
  const again = await expect(t, 200, undefined, 'POST', '/login', { body: { code: used } });
  t.truthy(again.json.token, 'the same code again within its life: the same answer');
});

test.serial('GET /session and POST /logout: Bearer and cookie, CSRF, and their errors', async (t) => {
  const token = await login(gw.url, `${user('dee')}.1`);
  const s = await expect(t, 200, undefined, 'GET', '/session', { headers: bearer(token) });
  t.is(s.json.appid, APPID);
  await expect(t, 401, 'unauthorized', 'GET', '/session');
  await expect(t, 401, 'unauthorized', 'GET', '/session', { headers: bearer('A'.repeat(59)) });
  await expect(t, 400, 'invalid_request', 'POST', '/logout', { headers: bearer(token), body: { all: 'yes' } });
  await expect(t, 400, 'invalid_json', 'POST', '/logout', { headers: { ...bearer(token), 'content-type': 'application/json' }, body: '[1]' });
  await expect(t, 415, 'unsupported_media_type', 'POST', '/logout', { headers: { ...bearer(token), 'content-type': 'text/plain' }, body: 'x' });
  await expect(t, 401, 'unauthorized', 'POST', '/logout', { body: '' });
  await expect(t, 401, 'unauthorized', 'POST', '/logout', { headers: bearer('nope'), body: { all: true } });
  await expect(t, 204, undefined, 'POST', '/logout', { headers: bearer(token) });
  await expect(t, 401, 'unauthorized', 'GET', '/session', { headers: bearer(token) });
  const other = await login(gw.url, `${user('eli')}.1`);
  await expect(t, 204, undefined, 'POST', '/logout', { headers: bearer(other), body: { all: true } });

  const b = await webLogin(t, 'mp', user('fay'));
  const web = await expect(t, 200, undefined, 'GET', '/session', { browser: b });
  t.is(web.json.appid, MP);
  await expect(t, 403, 'csrf_failed', 'POST', '/logout', { browser: b });
  const out = await expect(t, 204, undefined, 'POST', '/logout', { browser: b, headers: { origin: PUBLIC } });
  t.truthy(out.headers['set-cookie'], 'the cookie is deleted');
  await expect(t, 401, 'unauthorized', 'GET', '/session', { browser: b });
});

test.serial('POST /wx/decrypt: success and its documented errors', async (t) => {
  const name = user('gus');
  const token = await login(gw.url, `${name}.1`);
  const made = await devEncrypt({ appid: APPID, user: name, data: { city: 'Guangzhou' } });
  const ok = await expect(t, 200, undefined, 'POST', '/wx/decrypt', { headers: bearer(token), body: made });
  t.deepEqual(ok.json, { data: { city: 'Guangzhou' } });
  await expect(t, 400, 'signature_invalid', 'POST', '/wx/decrypt', { headers: bearer(token), body: { ...made, signature: 'a'.repeat(40) } });
  const other = await devEncrypt({ appid: APPID, code: `${user('x')}.1`, data: { a: 1 } });
  await expect(t, 400, 'decrypt_failed', 'POST', '/wx/decrypt', { headers: bearer(token), body: { encryptedData: other.encryptedData, iv: other.iv } });
  await expect(t, 400, 'invalid_request', 'POST', '/wx/decrypt', { headers: bearer(token), body: { iv: made.iv } });
  await expect(t, 400, 'invalid_json', 'POST', '/wx/decrypt', { headers: { ...bearer(token), 'content-type': 'application/json' }, body: '{' });
  await expect(t, 413, 'payload_too_large', 'POST', '/wx/decrypt', { headers: bearer(token), body: { ...made, pad: 'p'.repeat(5000) } });
  await expect(t, 401, 'unauthorized', 'POST', '/wx/decrypt', { body: made });
  // a second login rotates the key: the first device's old data is stale
  await login(gw.url, `${name}.2`);
  await expect(t, 401, 'session_key_stale', 'POST', '/wx/decrypt', { headers: bearer(token), body: made });
  // a web OAuth session: not a mini-program's (and without Origin, CSRF first)
  const b = await webLogin(t, 'open', user('hal'));
  await expect(t, 403, 'csrf_failed', 'POST', '/wx/decrypt', { browser: b, body: made });
  await expect(t, 403, 'app_not_allowed', 'POST', '/wx/decrypt', { browser: b, body: made, headers: { origin: PUBLIC } });
});

test.serial('POST /wx/decrypt: a watermark of another app is 400 watermark_mismatch', async (t) => {
  // made here with the user's session_key (the simulator's is deterministic), watermarked for another app
  const name = user('ivy');
  const token = await login(gw.url, `${name}.1`);
  const key = Buffer.from(simulatedSessionKey(APPID, `${name}.1`), 'base64');
  const iv = Buffer.alloc(16, 3);
  const c = createCipheriv('aes-128-cbc', key, iv);
  const encryptedData = Buffer.concat([c.update(JSON.stringify({ a: 1, watermark: { appid: MP, timestamp: 1 } })), c.final()]).toString('base64');
  await expect(t, 400, 'watermark_mismatch', 'POST', '/wx/decrypt', { headers: bearer(token), body: { encryptedData, iv: iv.toString('base64') } });
});

test.serial('POST /wx/phone: success and its documented errors', async (t) => {
  const name = user('jo');
  const token = await login(gw.url, `${name}.1`);
  const ok = await expect(t, 200, undefined, 'POST', '/wx/phone', { headers: bearer(token), body: { code: `phone-13800138000@${name}` } });
  t.deepEqual(ok.json, { phoneNumber: '13800138000', purePhoneNumber: '13800138000', countryCode: '86', source: 'wechat' });
  // within limits.phone.window: the kept number, WeChat not asked
  const kept = await expect(t, 200, undefined, 'POST', '/wx/phone', { headers: bearer(token), body: { code: 'fail-40029' } });
  t.is(kept.json.source, 'kept');
  // force: WeChat is asked, and its errors are answered
  const cases: Array<[number, string, unknown]> = [
    [400, 'phone_code_invalid', { code: `phone-13800138000@${name}`, force: true }],
    [400, 'phone_code_invalid', { code: 'fail-40029', force: true }],
    [400, 'invalid_request', { code: '' }],
    [400, 'invalid_request', { code: 'fail-40029', force: 'yes' }],
    [400, 'invalid_json', '{"code"'],
    [429, 'wechat_rate_limited', { code: 'fail-45011', force: true }],
    [502, 'wechat_error', { code: 'fail-61234', force: true }],
    [503, 'wechat_unavailable', { code: 'fail--1', force: true }],
  ];
  for (const [status, error, body] of cases) {
    await expect(t, status, error, 'POST', '/wx/phone', { headers: { ...bearer(token), 'content-type': 'application/json' }, body });
  }
  await expect(t, 401, 'unauthorized', 'POST', '/wx/phone', { body: { code: 'phone-13800138000' } });
  const b = await webLogin(t, 'mp', user('kim'));
  await expect(t, 403, 'app_not_allowed', 'POST', '/wx/phone', { browser: b, body: { code: 'phone-13800138000' }, headers: { origin: PUBLIC } });
});

test.serial('health, readiness and metrics', async (t) => {
  t.deepEqual((await expect(t, 200, undefined, 'GET', '/healthz')).json, { status: 'ok' });
  t.deepEqual((await expect(t, 200, undefined, 'GET', '/readyz')).json, { status: 'ok', store: 'memory' });
  const m = await expect(t, 200, undefined, 'GET', '/metrics', { headers: { accept: 'text/plain' } });
  t.regex(m.text, /wxgate_logins_total/);
});

test.serial('OAuth (Official Account and website): authorize and callback, success and documented errors, JSON and HTML', async (t) => {
  for (const flow of ['mp', 'open'] as const) {
    const b = await webLogin(t, flow, user(`lee-${flow}`));
    t.truthy(b.jar.get(SESSION));
    await expect(t, 400, 'redirect_not_allowed', 'GET', `/oauth/${flow}/authorize?redirect=${encodeURIComponent('https://evil.example/')}`);
    const page = await expect(t, 400, 'redirect_not_allowed', 'GET', `/oauth/${flow}/authorize?redirect=//evil.example`, { headers: { accept: 'text/html' } });
    t.regex(String(page.headers['content-type']), /^text\/html/);
    await expect(t, 400, 'state_invalid', 'GET', `/oauth/${flow}/callback?code=abc&state=forged`);
  }
  const b = new Browser(gw.url);
  const { callback, state } = await toCallback(t, b, 'mp', user('max'));
  await expect(t, 400, 'bad_request', 'GET', `/oauth/mp/callback?code=${encodeURIComponent('a b')}&state=${encodeURIComponent(state)}`, { browser: b });
  await expect(t, 302, undefined, 'GET', callback, { browser: b });
  await expect(t, 302, undefined, 'GET', callback, { browser: b, headers: { accept: 'text/html' } });
  await expect(t, 400, 'state_used', 'GET', `/oauth/mp/callback?code=other-code&state=${encodeURIComponent(state)}`, { browser: b });

  const c = new Browser(gw.url);
  const bad = await toCallback(t, c, 'mp', user('ned'));
  await expect(t, 401, 'code_invalid', 'GET', `/oauth/mp/callback?code=fail-40029&state=${encodeURIComponent(bad.state)}`, { browser: c });

  const d = new Browser(gw.url);
  const denied = await toCallback(t, d, 'open', user('oli'), { deny: true });
  await expect(t, 403, 'login_denied', 'GET', denied.callback, { browser: d });
  await expect(t, 403, 'login_denied', 'GET', denied.callback, { browser: d, headers: { accept: 'text/html,application/xhtml+xml' } });
  const snap = new Browser(gw.url);
  const snapshot = await toCallback(t, snap, 'mp', `snapshot-${user('pat')}`);
  await expect(t, 403, 'login_denied', 'GET', snapshot.callback, { browser: snap });
});

test.serial('scan to log in: tickets, long poll, confirm and cancel, success and documented errors; the demo page', async (t) => {
  const ticket = (await expect(t, 201, undefined, 'POST', '/scan/tickets')).json as { ticket: string; secret: string };
  const phone = await login(gw.url, `${user('quinn')}.1`);
  const pc = new Browser(gw.url);
  const poll = (tk: { ticket: string; secret: string }, secret = tk.secret) =>
    call(t, 'GET', `/scan/tickets/${tk.ticket}?wait=0`, { browser: pc, headers: { 'x-scan-secret': secret } });
  t.deepEqual((await poll(ticket)).json, { status: 'pending' });
  await expect(t, 404, 'ticket_not_found', 'GET', `/scan/tickets/${ticket.ticket}`, { headers: { 'x-scan-secret': 'x'.repeat(43) } });
  await expect(t, 404, 'ticket_not_found', 'GET', `/scan/tickets/${ticket.ticket}`);
  await expect(t, 401, 'unauthorized', 'POST', `/scan/tickets/${ticket.ticket}/confirm`);
  await expect(t, 404, 'ticket_not_found', 'POST', '/scan/tickets/not-a-ticket/confirm', { headers: bearer(phone) });
  await expect(t, 404, 'ticket_not_found', 'POST', `/scan/tickets/${'A'.repeat(22)}/confirm`, { headers: bearer(phone) });
  const mpUser = await webLogin(t, 'mp', user('rae'));
  await expect(t, 403, 'app_not_allowed', 'POST', `/scan/tickets/${ticket.ticket}/confirm`, { browser: mpUser, headers: { origin: PUBLIC } });
  await expect(t, 403, 'app_not_allowed', 'POST', `/scan/tickets/${ticket.ticket}/confirm`, { headers: bearer(mpUser.jar.get(SESSION)!) });
  await expect(t, 403, 'csrf_failed', 'POST', `/scan/tickets/${ticket.ticket}/confirm`, { browser: mpUser });
  await expect(t, 401, 'unauthorized', 'POST', `/scan/tickets/${ticket.ticket}/scanned`);
  t.deepEqual((await expect(t, 200, undefined, 'POST', `/scan/tickets/${ticket.ticket}/scanned`, { headers: bearer(phone) })).json, { status: 'scanned' });
  t.deepEqual((await poll(ticket)).json, { status: 'scanned' });
  const confirmed = await expect(t, 200, undefined, 'POST', `/scan/tickets/${ticket.ticket}/confirm`, { headers: bearer(phone) });
  t.deepEqual(confirmed.json, { status: 'confirmed' });
  await expect(t, 409, 'ticket_already_confirmed', 'POST', `/scan/tickets/${ticket.ticket}/scanned`, { headers: bearer(phone) });
  await expect(t, 409, 'ticket_already_confirmed', 'POST', `/scan/tickets/${ticket.ticket}/confirm`, { headers: bearer(phone) });
  await expect(t, 409, 'ticket_already_confirmed', 'POST', `/scan/tickets/${ticket.ticket}/cancel`, { headers: bearer(phone) });
  const done = await poll(ticket);
  t.is(done.json.status, 'confirmed');
  t.truthy(pc.jar.get(SESSION), 'the PC has its session cookie');
  t.is((await expect(t, 200, undefined, 'GET', '/session', { browser: pc })).json.openid, (await request(gw.url, { path: '/session', headers: bearer(phone) })).json.openid);
  await expect(t, 409, 'ticket_used', 'GET', `/scan/tickets/${ticket.ticket}`, { headers: { 'x-scan-secret': ticket.secret } });

  const second = (await expect(t, 201, undefined, 'POST', '/scan/tickets')).json as { ticket: string; secret: string };
  await expect(t, 403, 'csrf_failed', 'POST', `/scan/tickets/${second.ticket}/cancel`, { browser: pc });
  await expect(t, 403, 'app_not_allowed', 'POST', `/scan/tickets/${second.ticket}/cancel`, { browser: pc, headers: { origin: PUBLIC } });
  t.deepEqual((await expect(t, 200, undefined, 'POST', `/scan/tickets/${second.ticket}/cancel`, { headers: bearer(phone) })).json, { status: 'cancelled' });
  await expect(t, 409, 'ticket_cancelled', 'POST', `/scan/tickets/${second.ticket}/cancel`, { headers: bearer(phone) });
  await expect(t, 409, 'ticket_cancelled', 'POST', `/scan/tickets/${second.ticket}/confirm`, { headers: bearer(phone) });
  await expect(t, 409, 'ticket_cancelled', 'GET', `/scan/tickets/${second.ticket}`, { headers: { 'x-scan-secret': second.secret } });
  await expect(t, 401, 'unauthorized', 'POST', `/scan/tickets/${second.ticket}/cancel`, { headers: bearer('A'.repeat(59)) });

  const demo = await expect(t, 200, undefined, 'GET', '/scan/demo', { headers: { accept: 'text/html' } });
  t.regex(demo.text, /Scan to log in/);
});

test.serial('follow-QR login: tickets, long poll, the server URL check and pushes, success and documented errors', async (t) => {
  const tk = (await expect(t, 201, undefined, 'POST', '/qr/tickets')).json as { ticket: string; secret: string; qr: string };
  const pc = new Browser(gw.url);
  const poll = () => call(t, 'GET', `/qr/tickets/${tk.ticket}?wait=0`, { browser: pc, headers: { 'x-scan-secret': tk.secret } });
  t.deepEqual((await poll()).json, { status: 'pending' });
  await expect(t, 404, 'ticket_not_found', 'GET', `/qr/tickets/${tk.ticket}`);
  const signed = (extra: Record<string, string> = {}, at = Math.floor(Date.now() / 1000)) => {
    const timestamp = String(at);
    const nonce = String(++users);
    return new URLSearchParams({ signature: mpSignature(MP_TOKEN, timestamp, nonce), timestamp, nonce, ...extra });
  };
  const check = await expect(t, 200, undefined, 'GET', `/wx/mp/events?${signed({ echostr: '123456' })}`);
  t.is(check.text, '123456');
  await expect(t, 400, 'bad_request', 'GET', `/wx/mp/events?${signed()}`);
  await expect(t, 403, 'mp_signature_invalid', 'GET', '/wx/mp/events?echostr=1');
  await expect(t, 403, 'mp_replayed', 'GET', `/wx/mp/events?${signed({ echostr: '1' }, 1_000_000)}`);
  const openid = 'oOpenapiUser0123456789abcdef';
  const ticket = new URL(tk.qr).searchParams.get('ticket')!;
  const ev = flatXml([['ToUserName', 'gh_1'], ['FromUserName', openid], ['CreateTime', Math.floor(Date.now() / 1000)], ['MsgType', 'event'], ['Event', 'subscribe'], ['EventKey', `qrscene_${tk.ticket}`], ['Ticket', ticket]]);
  const xml = { 'content-type': 'text/xml' };
  await expect(t, 400, 'mp_message_invalid', 'POST', `/wx/mp/events?${signed()}`, { headers: xml, body: 'not xml' });
  await expect(t, 403, 'mp_signature_invalid', 'POST', '/wx/mp/events', { headers: xml, body: ev });
  await expect(t, 413, 'payload_too_large', 'POST', `/wx/mp/events?${signed()}`, { headers: xml, body: `<xml><A>${'x'.repeat(65 * 1024)}</A></xml>` });
  const pushed = await expect(t, 200, undefined, 'POST', `/wx/mp/events?${signed()}`, { headers: xml, body: ev });
  t.is(pushed.text, 'success');
  t.is((await poll()).json.status, 'confirmed');
  t.is((await expect(t, 200, undefined, 'GET', '/session', { browser: pc })).json.openid, openid);
  await expect(t, 409, 'ticket_used', 'GET', `/qr/tickets/${tk.ticket}`, { headers: { 'x-scan-secret': tk.secret } });
  const demo = await expect(t, 200, undefined, 'GET', '/qr/demo', { headers: { accept: 'text/html' } });
  t.regex(demo.text, /Follow to log in/);
});

test.serial('scan to log in: an expired ticket is 410 for the phone and the PC', async (t) => {
  const short = webConfig({ web: { publicUrl: PUBLIC, scan: { checkPath: false, ticketTtl: '1s' } } });
  const g = await startTestGateway(short);
  try {
    const d = openapiDocument(buildConfig(short, 'test'));
    const tk = await call(t, 'POST', '/scan/tickets', { base: g.url, d });
    t.is(tk.status, 201);
    const token = await login(g.url, `${user('sam')}.1`);
    await new Promise((r) => setTimeout(r, 1100));
    const confirm = await call(t, 'POST', `/scan/tickets/${tk.json.ticket}/confirm`, { base: g.url, d, headers: bearer(token) });
    t.like(confirm, { status: 410, json: { error: 'ticket_expired' } });
    const poll = await call(t, 'GET', `/scan/tickets/${tk.json.ticket}`, { base: g.url, d, headers: { 'x-scan-secret': tk.json.secret } });
    t.like(poll, { status: 410, json: { error: 'ticket_expired' } });
  } finally {
    await g.close();
  }
});

test.serial('another configuration, served for real: login moved, metrics elsewhere, the login rate limit documented and answered', async (t) => {
  const other = testConfig({ apiBase: sim.url, endpoints: { login: '/api/wx-login' }, metrics: { port: 0 }, limits: { login: { perIp: 2, window: '1m' } } });
  const g = await startTestGateway(other);
  try {
    const d = openapiDocument(buildConfig(other, 'test')) as Json;
    t.deepEqual(d.paths['/api/wx-login'].post.responses['429'].content['application/json'].schema.allOf[1].properties.error.enum, ['wechat_rate_limited', 'rate_limited']);
    t.deepEqual(await structuralProblems(d), []);
    const opts = { base: g.url, d, body: { code: `${user('tia')}.1` } };
    t.is((await call(t, 'POST', '/api/wx-login', opts)).status, 200);
    t.is((await call(t, 'POST', '/api/wx-login', { ...opts, body: { code: 'fail-40029' } })).status, 401);
    const limited = await call(t, 'POST', '/api/wx-login', { ...opts, body: { code: `${user('tia')}.2` } });
    t.like(limited, { status: 429, json: { error: 'rate_limited' } });
    t.like(await request(g.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: '{"code":"x1"}' }), { status: 404, json: { error: 'not_found' } }, '/login is not served there');
    t.is((await request(g.url, { path: '/metrics' })).status, 404);
  } finally {
    await g.close();
  }
});

test.serial('the one browser entry (/oauth/web/authorize) and the embedded QR: success and documented errors', async (t) => {
  const wechat = { 'user-agent': 'Mozilla/5.0 (iPhone) MicroMessenger/8.0.47 NetType/WIFI' };
  t.regex((await expect(t, 302, undefined, 'GET', '/oauth/web/authorize?redirect=/', { headers: wechat })).headers.location!, /\/connect\/oauth2\/authorize\?/);
  t.regex((await expect(t, 302, undefined, 'GET', '/oauth/web/authorize?redirect=/&embed=1&style=white')).headers.location!, /\/connect\/qrconnect\?.*login_type=jssdk/);
  await expect(t, 400, 'redirect_not_allowed', 'GET', `/oauth/web/authorize?redirect=${encodeURIComponent('/.//evil.example')}`);
  await expect(t, 400, 'bad_request', 'GET', '/oauth/web/authorize?redirect=/&style=red');
  await expect(t, 400, 'bad_request', 'GET', '/oauth/open/authorize?redirect=/&self_redirect=maybe');
  // the callback inside an iframe (self_redirect=true) sends the top window there
  const framed = await expect(t, 200, undefined, 'GET', '/oauth/open/callback?code=abc&state=x', { headers: { 'sec-fetch-dest': 'iframe', accept: 'text/html' } });
  t.regex(framed.text, /window\.top\.location\.replace\("\/oauth\/open\/callback\?code=abc&state=x"\)/);
  await expect(t, 400, 'redirect_not_allowed', 'GET', '/oauth/web/authorize?redirect=//evil.example', { headers: { accept: 'text/html' } });
  // nothing fits: a gateway with the Official Account login only, outside WeChat
  const only = webConfig({ web: { publicUrl: PUBLIC, stateSecret: STATE_SECRET, mp: { appid: MP, secret: MP_SECRET } } });
  const g = await startTestGateway(only);
  try {
    const d = openapiDocument(buildConfig(only, 'test'));
    t.deepEqual(await structuralProblems(d), []);
    await expect(t, 400, 'web_login_unavailable', 'GET', '/oauth/web/authorize?redirect=/', { base: g.url, d });
    await expect(t, 302, undefined, 'GET', '/oauth/web/authorize?redirect=/', { base: g.url, d, headers: wechat });
  } finally {
    await g.close();
  }
});

test.serial('GET /openapi.json serves the document of the running configuration (needs endpoints.openapi wired in app.ts)', async (t) => {
  const res = await request(gw.url, { path: '/openapi.json', headers: { accept: 'application/json' } });
  t.is(res.status, 200, res.text.slice(0, 200));
  t.regex(String(res.headers['content-type']), /^application\/json/);
  t.deepEqual(res.json, JSON.parse(JSON.stringify(doc)));
  t.deepEqual(conformance(doc, 'GET', '/openapi.json', res), []);
  seen.set('get /openapi.json', new Set([res.status]));
});

test.serial('every documented operation was seen answering: a success each, and an error for each that documents client errors', (t) => {
  const missing: string[] = [];
  const lines: string[] = [];
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    for (const [method, op] of Object.entries<Json>(item)) {
      const key = `${method} ${path}`;
      const statuses = seen.get(key) ?? new Set<number>();
      const documented = Object.keys(op.responses).map(Number);
      if (![...statuses].some((s) => s < 400)) missing.push(`${key}: no success seen`);
      if (documented.some((s) => s >= 400 && s < 500) && ![...statuses].some((s) => s >= 400)) missing.push(`${key}: no error seen`);
      lines.push(`${key}: seen ${[...statuses].sort().join(',')} of ${documented.join(',')}`);
    }
  }
  t.log(lines.join('\n'));
  t.deepEqual(missing, []);
});

test.serial('nothing secret went into the log while the document was exercised', (t) => {
  for (const line of gw.logs) for (const s of [SECRET, MP_SECRET, OPEN_SECRET, STATE_SECRET]) t.false(line.includes(s));
});
