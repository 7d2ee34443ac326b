import type { Config } from '../config/schema.js';

/**
 * Which request targets are the gateway's own endpoints (answered by the koa app), so that everything
 * else goes through the routes: HTTP requests (server/app.ts createHandler), upgrades
 * (proxy/websocket.ts) and check-route (config/inspect.ts) ask the same matcher. A path is the gateway's
 * own exactly when @koa/router would match it: case-insensitive, with or without one trailing slash.
 */

/** The gateway's own endpoints: exact paths, and prefixes it answers whatever follows. */
export interface OwnEndpoints {
  paths: readonly string[];
  prefixes: readonly string[];
}

/** Whether a request target is one of the gateway's own endpoints (else it goes through the routes). */
export function ownEndpointMatcher(config: Config, own: OwnEndpoints = ownEndpointsOf(config)): (url: string) => boolean {
  const ownPaths = new Set(own.paths.map((p) => p.toLowerCase()));
  const ownPrefixes = own.prefixes;
  return (url) => {
    const key = ownKey(url);
    return ownPaths.has(key) || (ownPrefixes.length > 0 && ownPrefixes.some((p) => key === p || key.startsWith(`${p}/`)));
  };
}

/** The key a request path is looked up by among the gateway's own endpoints. */
function ownKey(url: string): string {
  let end = url.indexOf('?');
  if (end < 0) end = url.length;
  if (end > 1 && url.charCodeAt(end - 1) === 47 /* / */) end--;
  return url.slice(0, end).toLowerCase();
}

/** The own endpoints of a config (what the koa app in server/app.ts mounts). */
export function ownEndpointsOf(config: Config): OwnEndpoints {
  const e = config.endpoints;
  const paths = [e.login, e.session, e.logout, e.healthz, e.readyz, e.decrypt, e.phone, e.openapi];
  if (config.metrics.enabled && config.metrics.port === undefined) paths.push(config.metrics.path);
  if (config.web?.mpQr) paths.push(config.web.mpQr.eventsPath);
  // the web logins' prefixes (config cross-checks that no route is under them)
  const web = config.web;
  const prefixes = web ? ['/oauth', ...(web.scan ? ['/scan'] : []), ...(web.mpQr ? ['/qr'] : [])] : [];
  return { paths, prefixes };
}
