import { ownEndpointMatcher } from '../server/app.js';
import { checkPath } from '../proxy/path.js';
import { RouteTable } from '../proxy/routes.js';
import type { Config } from './schema.js';

/** Keys whose values are secrets wherever they stand. */
const SECRET_KEYS = /^(secret|token|password|stateSecret)$/i;

/**
 * The configuration as loaded (defaults filled in, durations in ms, sizes in bytes) with every secret
 * masked: app and web secrets, the admin token, the state secret, and passwords inside URLs.
 */
export function maskSecrets(config: Config): unknown {
  const walk = (v: unknown, key: string): unknown => {
    if (typeof v === 'string') {
      if (SECRET_KEYS.test(key)) return '***';
      return maskUrlPassword(v);
    }
    if (Array.isArray(v)) return v.map((x) => walk(x, key));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
    return v;
  };
  return walk(config, '');
}

function maskUrlPassword(s: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) return s;
  try {
    const u = new URL(s);
    if (!u.password) return s;
    u.password = '***';
    return u.toString();
  } catch {
    return s;
  }
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

/** What the gateway would do with METHOD PATH: refuse it, answer it itself, or which route, upstream and auth rule. */
export function explainRoute(config: Config, method: string, target: string): string {
  const m = method.toUpperCase();
  if (!target.startsWith('/')) return `${m} ${target}: refused, 400 bad_path (the request target must be an absolute path)`;
  const checked = checkPath(target);
  if (!checked.ok) return `${m} ${target}: refused, 400 bad_path (${checked.reason})`;
  if (ownEndpointMatcher(config)(target)) return `${m} ${target}: answered by the gateway itself (an own endpoint, not proxied)`;
  const route = new RouteTable(config.routes).match(checked.matchKey);
  if (!route) return `${m} ${target}: no route, 404 not_found`;
  const lines = [
    `${m} ${target}: route "${route.name}" (path ${route.path})`,
    `  upstream: ${route.upstreams.length > 1 ? `one of ${route.upstreams.join(', ')} (in turn; a failing one skipped for ${route.failTimeout} ms), ` : ''}${route.upstreams.length > 1 ? 'path ' : route.upstream}${upstreamPath(route, target)}`,
    `  auth:     ${route.auth === 'required' ? `required (Bearer token${config.web ? ' or the session cookie' : ''}; 401 without a session)` : 'none (no session needed; identity headers stripped)'}`,
  ];
  if (route.apps) lines.push(`  apps:     ${route.apps.join(', ')} (others 403 app_not_allowed)`);
  lines.push(`  timeout:  ${route.timeout} ms`);
  if (route.bodyLimit !== undefined) lines.push(`  bodyLimit: ${route.bodyLimit} bytes`);
  if (route.forwardPhone) lines.push('  forwards X-Wx-Phone once granted');
  return lines.join('\n');
}
