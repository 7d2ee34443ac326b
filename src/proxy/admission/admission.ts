import type { IncomingMessage, ServerResponse } from 'node:http';
import { requestId } from '../../base/access-log.js';
import type { Credentials } from '../../request/credentials.js';
import type { ActiveSession, Sessions } from '../../session/sessions.js';
import { hashOnce } from '../../session/tokens.js';
import type { TrustFn } from '../headers.js';
import type { Route, RouteTable } from '../routes.js';
import type { Logger } from '../../base/logger.js';
import { AFTER_SESSION, BEFORE_SESSION, type Step } from './steps.js';

/**
 * Admission: what every request the gateway does not answer itself goes through before it is sent on,
 * HTTP requests and WebSocket upgrades alike: the ordered steps of ./steps.ts around the session
 * lookup. A session the LRU holds is found synchronously, so such a request runs every step and
 * reaches the proxy in the same tick, without a promise; per request, one Admission object is made.
 */

/** What admission needs of a config, made once per (re)load; and what is done with its outcome. */
export interface Gate {
  readonly routes: RouteTable;
  /** routes[].apps as Sets; routes without `apps` are not in here and cost nothing per request */
  readonly allowedApps: ReadonlyMap<Route, ReadonlySet<string>>;
  readonly trust: TrustFn;
  readonly credentials: Credentials;
  /** the gateway's own cookie names (web logins), kept from the upstream */
  readonly ownCookies: ReadonlySet<string> | undefined;
  readonly sessions: Sessions;
  readonly log: Logger;
  /** a WebSocket upgrade (no body; a cookie session needs an allowed Origin) rather than an HTTP request */
  readonly upgrade: boolean;
  /** every step passed: send it on */
  admitted(a: Admission): void;
  /** a step refused it (threw): answer the error */
  refused(a: Admission, err: unknown): void;
}

/** One request on its way through the steps: the request, and what the steps found out about it. */
export class Admission {
  readonly start = process.hrtime.bigint();
  /** X-Request-Id: the client's when acceptable, else a new one (base/access-log.ts) */
  readonly id: string;
  route: Route | undefined = undefined;
  routeName = 'unmatched';
  /** the request's peer is one of server.trustedProxies */
  trusted = false;
  /** the client's Connection header says close */
  clientWantsClose = false;
  /** the session token the request carries (a route with auth: required), and where it came from */
  token: string | undefined = undefined;
  via: 'bearer' | 'cookie' | undefined = undefined;
  session: ActiveSession | undefined = undefined;

  constructor(
    readonly gate: Gate,
    readonly req: IncomingMessage,
    /** the HTTP request's response; undefined for an upgrade */
    readonly res: ServerResponse | undefined,
  ) {
    this.id = requestId(req.headers);
  }

  /** The route matched; only steps after the route step read it. */
  get matched(): Route {
    return this.route!;
  }
}

/** Runs a request through the steps: synchronously when its session is in the LRU (or none is needed). */
export function admit(a: Admission): void {
  try {
    run(a, BEFORE_SESSION);
  } catch (err) {
    a.gate.refused(a, err);
    return;
  }
  if (a.token === undefined) return afterSession(a);
  // the connection remembers its last token's hash: an app's keep-alive connection sends the same one
  const socket = a.req.socket;
  const found = a.gate.sessions.authenticate(a.token, socket ? hashOnce(socket, a.token) : undefined);
  if (!(found instanceof Promise)) {
    a.session = found;
    return afterSession(a);
  }
  found.then(
    (session) => {
      a.session = session;
      afterSession(a);
    },
    (err: unknown) => a.gate.refused(a, err),
  );
}

function afterSession(a: Admission): void {
  try {
    run(a, AFTER_SESSION);
    a.gate.admitted(a);
  } catch (err) {
    a.gate.refused(a, err);
  }
}

function run(a: Admission, steps: readonly Step[]): void {
  for (let i = 0; i < steps.length; i++) steps[i]!(a);
}
