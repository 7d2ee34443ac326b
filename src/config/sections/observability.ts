import { z } from 'zod';
import { live } from '../live.js';
import { endpointPath, host, port } from '../values.js';

/** metrics: Prometheus's /metrics, on the main listener or a port of its own. */
export const metrics = z
  .strictObject({
    enabled: z.boolean().default(true),
    path: endpointPath.default('/metrics'),
    /** When set, /metrics is served only on this port (and host), not on the main listener. */
    port: port.optional(),
    host: host.default('127.0.0.1'),
  })
  .prefault({});

/** log: the level is set at start; a reload may change the access log. */
export const log = z
  .strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** One JSON line per request at level info (request id, route, status, duration, upstream, user). */
    access: live(z.boolean().default(true)),
    /** The user in access log lines: hash (of appid and openid; the same user, the same hash) or omit. */
    openid: live(z.enum(['hash', 'omit'], { error: 'must be "hash" or "omit"' }).default('hash')),
  })
  .prefault({});
