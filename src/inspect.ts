import type { Config } from './config/schema.js';
import { ownEndpointFor, ownEndpointMatcher } from './endpoints/match.js';
import { checkPath } from './proxy/path.js';
import { RouteTable } from './proxy/routes.js';

/** check-config's and check-route's answers (the CLI's commands that look at a configuration). */

/** Keys whose values are secrets wherever they stand. */
const SECRET_KEYS = /^(secret|token|password|stateSecret|encodingAESKey)$/i;

type Def = { type: string; shape?: Record<string, Schema>; innerType?: Schema; element?: Schema; defaultValue?: unknown };
type Schema = { _zod: { def: Def } };

const isPlainObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * `raw` (the file as written, before `${ENV}` substitution) with every default the schema fills in
 * added, in the form a file takes: durations and sizes as strings with a unit, `${ENV}` references as
 * written. Keys keep the schema's order; what the schema leaves unset (optional keys) stays out.
 */
function withDefaults(schema: Schema, raw: unknown): unknown {
  const def = schema._zod.def;
  switch (def.type) {
    case 'default':
    case 'prefault':
      // `.prefault` holds the input form ("2s"); `.default` the output, used only where the two are the same
      return withDefaults(def.innerType!, raw === undefined ? structuredClone(def.defaultValue) : raw);
    case 'optional':
      return raw === undefined ? undefined : withDefaults(def.innerType!, raw);
    case 'object': {
      if (!isPlainObject(raw)) return raw;
      const out: Record<string, unknown> = {};
      for (const [key, sub] of Object.entries(def.shape!)) {
        const v = withDefaults(sub, raw[key]);
        if (v !== undefined) out[key] = v;
      }
      for (const [key, v] of Object.entries(raw)) if (!(key in out) && !(key in def.shape!)) out[key] = v;
      return out;
    }
    case 'array':
      return Array.isArray(raw) ? raw.map((x) => withDefaults(def.element!, x)) : raw;
    default:
      return raw;
  }
}

/** The environment variable a secret written into the file is shown as: its key path, upper case. */
function envNameFor(path: (string | number)[]): string {
  return `WXGATE_${path.map(String).join('_').replace(/([a-z])([A-Z])/g, '$1_$2').replace(/[^A-Za-z0-9]+/g, '_').toUpperCase()}`;
}

/**
 * The configuration as a file that check-config accepts again and that loads to the same configuration:
 * the file as written (`raw`, before `${ENV}` substitution) with the defaults filled in. Secrets stay the
 * `${ENV}` references the file has; a secret written into the file itself (and a password in a URL) is
 * shown as a reference to a variable named after its key, listed in `moved` (set it to the value to
 * load the output), so no secret is ever printed.
 */
export function effectiveConfigFile(schema: unknown, raw: unknown): { config: unknown; moved: { key: string; env: string }[] } {
  const moved: { key: string; env: string }[] = [];
  const walk = (v: unknown, path: (string | number)[]): unknown => {
    const key = path[path.length - 1];
    const keyName = typeof key === 'number' ? String(path[path.length - 2] ?? '') : String(key ?? '');
    if (typeof v === 'string') {
      if (v.includes('${')) return v;
      if (SECRET_KEYS.test(keyName)) {
        const env = envNameFor(path);
        moved.push({ key: formatKey(path), env });
        return `\${${env}}`;
      }
      const m = /^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)([^@/]+)(@.*)$/i.exec(v);
      if (m) {
        const env = envNameFor([...path, 'password']);
        moved.push({ key: `${formatKey(path)} (password)`, env });
        return `${m[1]}\${${env}}${m[3]}`;
      }
      return v;
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, [...path, i]));
    if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, [...path, k])]));
    return v;
  };
  return { config: walk(withDefaults(schema as Schema, raw ?? {}), []), moved };
}

function formatKey(path: (string | number)[]): string {
  return path.reduce<string>((out, p) => (typeof p === 'number' ? `${out}[${p}]` : out ? `${out}.${p}` : p), '');
}

/** The path and query the upstream gets: as sent, or with the route's prefix (its segments) removed. */
function upstreamPath(route: { path: string; stripPrefix?: boolean }, target: string): string {
  if (!route.stripPrefix) return target;
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const drop = route.path === '/' ? 0 : route.path.split('/').length - 1;
  const rest = path.split('/').slice(drop + 1).join('/');
  return `/${rest}${q < 0 ? '' : target.slice(q)}`;
}

/** What check-route found; the CLI exits with CHECK_ROUTE_EXIT[outcome]. */
export type RouteOutcome = 'route' | 'own' | 'not_found' | 'method_not_allowed' | 'bad_path';

/** check-route's exit codes (1 and 2 stay the invalid configuration and a usage error). */
export const CHECK_ROUTE_EXIT: Readonly<Record<RouteOutcome, number>> = {
  route: 0, // proxied to a route's upstream
  own: 3, // answered by one of the gateway's own endpoints
  not_found: 4, // 404: no route, no own endpoint
  method_not_allowed: 5, // 405: an own endpoint that does not take this method
  bad_path: 6, // 400: the path is refused before any routing
};

/** What the gateway would do with METHOD PATH: refuse it, answer it itself, or which route, upstream and auth rule. */
export function explainRoute(config: Config, method: string, target: string): { outcome: RouteOutcome; text: string } {
  const m = method.toUpperCase();
  const answer = (outcome: RouteOutcome, text: string) => ({ outcome, text: `${m} ${target}: ${text}` });
  if (!target.startsWith('/')) return answer('bad_path', 'refused, 400 bad_path (the request target must be an absolute path)');
  const checked = checkPath(target);
  if (!checked.ok) return answer('bad_path', `refused, 400 bad_path (${checked.reason})`);
  if (ownEndpointMatcher(config)(target)) {
    const own = ownEndpointFor(config, target);
    if (!own) return answer('not_found', 'no such endpoint of the gateway, 404 not_found (its own path prefix, never proxied)');
    if (!own.methods.includes(m)) {
      return answer('method_not_allowed', `the gateway's own endpoint "${own.route}" does not take ${m}: 405 method_not_allowed (Allow: ${own.methods.join(', ')})`);
    }
    return answer('own', `answered by the gateway itself (its own endpoint "${own.route}", not proxied)`);
  }
  const route = new RouteTable(config.routes).match(checked.matchKey);
  if (!route) return answer('not_found', 'no route, 404 not_found');
  const lines = [
    `route "${route.name}" (path ${route.path})`,
    `  upstream: ${route.upstreams.length > 1 ? `one of ${route.upstreams.join(', ')} (in turn; a failing one skipped for ${route.failTimeout} ms), ` : ''}${route.upstreams.length > 1 ? 'path ' : route.upstream}${upstreamPath(route, target)}`,
    `  auth:     ${route.auth === 'required' ? `required (Bearer token${config.web ? ' or the session cookie' : ''}; 401 without a session)` : 'none (no session needed; identity headers stripped)'}`,
  ];
  if (route.apps) lines.push(`  apps:     ${route.apps.join(', ')} (others 403 app_not_allowed)`);
  lines.push(`  timeout:  ${route.timeout} ms`);
  if (route.bodyLimit !== undefined) lines.push(`  bodyLimit: ${route.bodyLimit} bytes`);
  if (route.forwardPhone) lines.push('  forwards X-Wx-Phone once granted');
  return answer('route', lines.join('\n'));
}
