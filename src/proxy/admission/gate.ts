import type { IncomingMessage, ServerResponse } from 'node:http';
import proxyaddr from 'proxy-addr';
import type { Config } from '../../config/schema.js';
import { sendError } from '../../base/error-answer.js';
import type { Logger } from '../../base/logger.js';
import type { Metrics } from '../../metrics/metrics.js';
import type { Credentials } from '../../request/credentials.js';
import type { Sessions } from '../../session/sessions.js';
import type { Proxy } from '../proxy.js';
import { RouteTable } from '../routes.js';
import { Admission, admit, type Gate } from './admission.js';
import { finisher } from './record.js';

/** What a gate is made of. */
export interface GateDeps {
  config: Config;
  sessions: Sessions;
  log: Logger;
  /** Bearer only, or Bearer and the session cookie (web logins) */
  credentials: Credentials;
  ownCookies: ReadonlySet<string> | undefined;
}

/** The part of a Gate made from a config, the same for HTTP requests and upgrades. */
export function gateOf({ config, sessions, log, credentials, ownCookies }: GateDeps, upgrade: boolean): Omit<Gate, 'admitted' | 'refused'> {
  const routes = new RouteTable(config.routes);
  return {
    routes,
    allowedApps: new Map(routes.all.filter((r) => r.apps).map((r) => [r, new Set(r.apps)] as const)),
    trust: proxyaddr.compile([...config.server.trustedProxies]),
    credentials,
    ownCookies,
    sessions,
    log,
    upgrade,
  };
}

/** The status a finished response is recorded with: 499 when the client left before any answer. */
function statusOf(res: ServerResponse): number {
  return res.headersSent ? res.statusCode : 499;
}

/**
 * The proxied HTTP path (no koa): admission, then the proxy; refusals answered as `{ error, message }`;
 * every request recorded (metrics, access log) once its response is over.
 */
export function httpGateway(deps: GateDeps & { proxy: Proxy; metrics: Metrics }): (req: IncomingMessage, res: ServerResponse) => void {
  const { proxy, log } = deps;
  const finish = finisher(deps.config, deps.metrics, log);
  const gate: Gate = {
    ...gateOf(deps, false),
    admitted(a) {
      const res = a.res!;
      // a chunked body crossed routes[].bodyLimit while the session was looked up: answered already
      if (a.matched.bodyLimit !== undefined && a.req.destroyed) return finish(a, statusOf(res));
      proxy.forward(a.req, res, a.matched, a.clientWantsClose, (upstream) => finish(a, statusOf(res), upstream, a.session));
    },
    refused(a, err) {
      sendError(a.req, a.res!, err, log, a.routeName);
      finish(a, statusOf(a.res!));
    },
  };
  return function gateway(req, res) {
    admit(new Admission(gate, req, res));
  };
}
