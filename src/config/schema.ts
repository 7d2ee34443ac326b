import { z } from 'zod';
import { withCheck } from './checks.js';
import { crossCheck } from './cross-checks.js';
import { admin, dev } from './sections/admin.js';
import { audit, events } from './sections/events.js';
import { limits } from './sections/limits.js';
import { log, metrics } from './sections/observability.js';
import { routes } from './sections/routes.js';
import { endpoints, server } from './sections/server.js';
import { session } from './sections/session.js';
import { web } from './sections/web.js';
import { wechat } from './sections/wechat.js';

export { routeNameFromPath } from './sections/routes.js';
export { mpQrApp } from './sections/web.js';
export { DEFAULT_API_BASE, DEFAULT_MP_BASE, DEFAULT_OAUTH_BASE } from './sections/wechat.js';

/**
 * The configuration file's schema, assembled from its sections (src/config/sections/), each with its
 * keys, defaults, checks and reload marks (live.ts); the checks that span sections are cross-checks.ts.
 */
export const configSchema = withCheck(
  z.strictObject({ server, endpoints, wechat, session, routes, web, limits, metrics, admin, events, audit, log, dev }),
  crossCheck,
);

type Parsed = z.output<typeof configSchema>;
/** A route as loaded: `upstreams` are its targets (trailing "/" dropped), `upstream` the first of them. */
export type RouteConfig = Omit<Parsed['routes'][number], 'upstream'> & { name: string; upstream: string; upstreams: readonly string[] };
/** The validated, defaulted configuration (durations in ms, sizes in bytes). */
export type Config = Omit<Parsed, 'routes' | 'wechat'> & {
  routes: RouteConfig[];
  wechat: Omit<Parsed['wechat'], 'apiBase' | 'oauthBase' | 'mpBase'> & { apiBase: string; oauthBase: string; mpBase: string };
};
export type AppConfig = Config['wechat']['apps'][number];
