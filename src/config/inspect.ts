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
    `  upstream: ${route.upstream}${target}`,
    `  auth:     ${route.auth === 'required' ? `required (Bearer token${config.web ? ' or the session cookie' : ''}; 401 without a session)` : 'none (no session needed; identity headers stripped)'}`,
  ];
  if (route.apps) lines.push(`  apps:     ${route.apps.join(', ')} (others 403 app_not_allowed)`);
  lines.push(`  timeout:  ${route.timeout} ms`);
  if (route.bodyLimit !== undefined) lines.push(`  bodyLimit: ${route.bodyLimit} bytes`);
  if (route.forwardPhone) lines.push('  forwards X-Wx-Phone once granted');
  return lines.join('\n');
}
