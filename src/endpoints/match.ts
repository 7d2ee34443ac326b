import type { Config } from '../config/schema.js';
import { ownEndpoints, type OwnEndpoint } from './table.js';

/**
 * Which request targets are the gateway's own (the table's paths and prefixes), as @koa/router matches
 * them: case-insensitive, with or without one trailing slash; ":id" is one segment.
 */

/** The key a request path is looked up by among the gateway's own endpoints. */
function ownKey(url: string): string {
  let end = url.indexOf('?');
  if (end < 0) end = url.length;
  if (end > 1 && url.charCodeAt(end - 1) === 47 /* / */) end--;
  return url.slice(0, end).toLowerCase();
}

/** Whether a request target is one of the gateway's own endpoints (else it goes through the routes). */
export function ownEndpointMatcher(config: Config): (url: string) => boolean {
  const { endpoints, prefixes } = ownEndpoints(config);
  // under a prefix anything is the gateway's own: the rows with a parameter are all there
  const ownPaths = new Set(endpoints.filter((e) => !e.path.includes(':')).map((e) => e.path.toLowerCase()));
  return (url) => {
    const key = ownKey(url);
    return ownPaths.has(key) || (prefixes.length > 0 && prefixes.some((p) => key === p || key.startsWith(`${p}/`)));
  };
}

/** The own endpoint a target names, with every method it takes (GET takes HEAD too); undefined when none. */
export function ownEndpointFor(config: Config, target: string): { route: string; methods: string[] } | undefined {
  const segs = ownKey(target).split('/');
  const fits = (e: OwnEndpoint) => {
    const want = e.path.toLowerCase().split('/');
    return want.length === segs.length && want.every((w, i) => (w.startsWith(':') ? segs[i] !== '' : w === segs[i]));
  };
  const rows = ownEndpoints(config).endpoints.filter(fits);
  if (rows.length === 0) return undefined;
  return { route: rows[0]!.route, methods: allowed(rows) };
}

/** The methods a path's rows take, as the Allow header lists them. */
export function allowed(rows: OwnEndpoint[]): string[] {
  return [...new Set(rows.flatMap((e) => (e.method === 'GET' ? ['GET', 'HEAD'] : [e.method])))];
}
