import { z } from 'zod';
import { live } from '../live.js';
import { list, obj, withCheck, type Report } from '../checks.js';
import { appid, duration, httpUrl, size } from '../values.js';

/** Route prefixes: absolute, no trailing slash (except "/"), no dot segments, empty segments or escapes. */
const routePath = z
  .string({ error: 'must be a path prefix such as "/api"' })
  .refine((p) => p === '/' || /^(\/[A-Za-z0-9_~\-!$&'()*+,=:@]+(\.[A-Za-z0-9_~\-!$&'()*+,=:@]+)*)+$/.test(p), {
    error: 'must be a path prefix such as "/api": starts with "/", no trailing "/", no "." or ".." segments, no "//", "%", "?", "#" or ";"',
  });

const ROUTE_NAME = /^[a-zA-Z_][a-zA-Z0-9_.-]*$/;

/** Request headers routes[].headers may not set, and why (lower-case names). */
const RESERVED_HEADERS: ReadonlyArray<[RegExp, string]> = [
  [/^x[-_](openid|unionid|appid|wx[-_]phone)$/, 'is an identity header: the gateway sets it from the session'],
  [/^(connection|keep-alive|proxy-connection|te|trailer|upgrade|proxy-authorization|proxy-authenticate|expect)$/, 'is a hop-by-hop header (it concerns one connection, not the upstream)'],
  [/^(host|content-length|transfer-encoding)$/, 'frames the request: the gateway sets it'],
  [/^(authorization|cookie)$/, "carries the client's credentials to the gateway: the gateway strips it and does not send one of its own"],
  [/^sec-websocket-/, 'belongs to the WebSocket handshake between the client and the upstream'],
];
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** routes[].headers: { Name: value }; names are HTTP tokens, none the gateway sets or strips itself. */
const routeHeaders = z
  .record(
    z.string(),
    z
      .union([z.string(), z.number()], { error: 'must be a string' })
      .transform(String)
      .refine((v) => HEADER_VALUE.test(v), { error: 'must not contain control characters (CR, LF, NUL)' }),
  )
  .superRefine((headers, ctx) => {
    const seen = new Set<string>();
    for (const name of Object.keys(headers)) {
      const lower = name.toLowerCase();
      if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'is not a valid header name (letters, digits and !#$%&\'*+-.^_`|~ only)' });
      else if (seen.has(lower)) ctx.addIssue({ code: 'custom', path: [name], message: 'is given twice (header names are case-insensitive)' });
      else {
        const reserved = RESERVED_HEADERS.find(([re]) => re.test(lower));
        if (reserved) ctx.addIssue({ code: 'custom', path: [name], message: `cannot be set: it ${reserved[1]}` });
      }
      seen.add(lower);
    }
  });

const upstreams = z.array(httpUrl).min(1, { error: 'must list at least one URL' }).refine((l) => new Set(l.map((u) => u.replace(/\/+$/, ''))).size === l.length, { error: 'lists the same URL twice' });

const route = z.strictObject({
  name: z.string().regex(ROUTE_NAME, { error: 'must be letters, digits, "_", "." or "-"' }).optional(),
  path: routePath,
  /** One URL, or a list of them (targets, taken in turn; one whose connection fails is skipped for failTimeout). */
  upstream: z.union([httpUrl, upstreams], { error: (iss) => (iss.input === undefined ? 'is required' : 'must be an http(s) URL or a list of them') }),
  /** How long a target whose connection failed (refused, connect timeout, reset) is skipped; "0s" = never. */
  failTimeout: duration(0).prefault('10s'),
  /** Send the path without the route's prefix ("/api/v1/x" on "/api/v1" → "/x"). */
  stripPrefix: z.boolean().optional(),
  /** Extra request headers the upstream gets, replacing a client header of the same name. */
  headers: routeHeaders.optional(),
  /** WebSocket upgrades on this route: a socket is closed after maxLifetime. */
  websocket: z.strictObject({ maxLifetime: duration().prefault('1h') }).prefault({}),
  auth: z.enum(['required', 'none'], { error: 'must be "required" or "none"' }).default('required'),
  /** The upstream must start answering within this time (idle time between bytes). */
  timeout: duration().prefault('30s'),
  /** Only sessions of these apps pass (403 app_not_allowed for others); absent = every configured app. */
  apps: z.array(appid).min(1, { error: 'must list at least one appid (leave "apps" out to allow every app)' }).optional(),
  /** Send the phone number the user granted (POST /wx/phone) as X-Wx-Phone (E.164); absent until they have. */
  forwardPhone: z.boolean().optional(),
  /** Largest request body passed to the upstream (413 beyond it); absent = no limit. */
  bodyLimit: size.optional(),
});

/** routes: what is proxied where; a reload may change them all. */
export const routes = live(withCheck(z.array(route), checkRoutes).default([]));

export function routeNameFromPath(path: string): string {
  return path === '/' ? 'root' : path.slice(1).replace(/[^A-Za-z0-9_.-]/g, '_');
}

/** Paths (case-insensitively) and names once each; what needs a session says so. */
function checkRoutes(value: unknown, report: Report): void {
  const paths = new Map<string, number>();
  const names = new Map<string, number>();
  list(value).forEach((raw, i) => {
    const r = obj(raw);
    if (r.forwardPhone === true && r.auth === 'none') report([i, 'forwardPhone'], 'needs auth: required (without a session there is no phone number)');
    if (Array.isArray(r.apps) && r.auth === 'none') report([i, 'apps'], 'needs auth: required (without a session there is no app to check)');
    if (typeof r.path !== 'string') return;
    const prev = paths.get(r.path.toLowerCase());
    if (prev !== undefined) report([i, 'path'], `duplicates routes[${prev}].path "${r.path}"`);
    else paths.set(r.path.toLowerCase(), i);
    const name = typeof r.name === 'string' ? r.name : routeNameFromPath(r.path);
    const prevName = names.get(name);
    if (prevName !== undefined) report([i, 'name'], `duplicates the name of routes[${prevName}] ("${name}")`);
    else names.set(name, i);
  });
}
