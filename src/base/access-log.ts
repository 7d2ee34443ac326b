import { hash, randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Config } from '../config/schema.js';
import type { Identity } from '../session/types.js';
import type { Logger } from './logger.js';

/**
 * The request ids a client (or a load balancer before us) may pass on: a UUID, 8 to 64 hex digits
 * (nginx's $request_id, W3C/Zipkin trace ids), a W3C traceparent, or any other plain id of up to 28
 * characters of `[A-Za-z0-9._:-]` (nanoid, ULID, KSUID, cf-ray). Not a gateway token (59 base64url
 * characters), nor a WeChat login code (32) or anything else that long: a client that puts its token
 * in X-Request-Id by mistake gets a new id, and the token is neither logged nor passed on.
 */
const REQUEST_ID =
  /^(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{8,64}|[0-9A-Fa-f]{2}-[0-9A-Fa-f]{32}-[0-9A-Fa-f]{16}-[0-9A-Fa-f]{2}|[A-Za-z0-9._:-]{1,28})$/;

/** Whether a client's X-Request-Id is one the gateway keeps (REQUEST_ID). */
export function acceptableRequestId(value: string): boolean {
  return value.length <= 64 && REQUEST_ID.test(value);
}

/**
 * The request's id: the X-Request-Id it came with when that has one of the shapes above, else a new
 * UUID (the refused value is dropped, never logged). Either way it is set on the request's headers, so
 * the upstream gets it.
 */
export function requestId(headers: IncomingHttpHeaders): string {
  const given = headers['x-request-id'];
  if (typeof given === 'string' && acceptableRequestId(given)) return given;
  const id = randomUUID();
  headers['x-request-id'] = id;
  return id;
}

export interface AccessEntry {
  id: string;
  route: string;
  method: string;
  /** the path, without the query (which may carry anything) */
  url: string;
  status: number;
  seconds: number;
  upstream?: string;
  who?: Identity;
}

/**
 * log.access: one JSON line per request (msg "request"): request id, route, method, path, status,
 * duration, upstream, and the user as config says: openid hashed (log.openid: hash, the default; the
 * same user gives the same hash, so one user's requests can be followed without their openid in the
 * logs) or left out (omit). Absent when log.access is false.
 */
/** A user in log lines (log.openid: hash): the same user, the same 16 characters; the openid cannot be read back. */
export function logUser(appid: string, openid: string): string {
  return hash('sha256', `wxgate-access-log\n${appid}\n${openid}`, 'base64url').slice(0, 16);
}

export function accessLogger(config: Config, log: Logger): ((e: AccessEntry) => void) | undefined {
  // off, or below the log level (info): nothing at all on the request path, not even the entry object
  if (!config.log.access || !log.isLevelEnabled('info')) return undefined;
  const access = log.child({ part: 'access' });
  const hashes = new WeakMap<Identity, string>();
  const userOf =
    config.log.openid === 'hash'
      ? (who: Identity | undefined) => {
          if (!who) return undefined;
          let h = hashes.get(who);
          if (h === undefined) hashes.set(who, (h = logUser(who.appid, who.openid)));
          return h;
        }
      : () => undefined;
  return (e) => {
    const q = e.url.indexOf('?');
    const path = q < 0 ? e.url : e.url.slice(0, q);
    access.info(
      {
        req_id: e.id,
        route: e.route,
        method: e.method,
        path: path.length > 512 ? `${path.slice(0, 512)}…` : path,
        status: e.status,
        ms: Math.round(e.seconds * 1e4) / 10,
        ...(e.upstream ? { upstream: e.upstream } : {}),
        ...(e.who ? { appid: e.who.appid, user: userOf(e.who) } : {}),
      },
      'request',
    );
  };
}
