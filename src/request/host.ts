import type { IncomingMessage } from 'node:http';
import { GatewayError } from '../base/errors.js';

/**
 * The Host check every request goes through first, own endpoints (server/app.ts observe), proxied
 * requests and upgrades (proxy/admission/steps.ts) alike: nothing else may build a URL from a bad one.
 */

/**
 * What is wrong with the request's Host, or undefined when nothing is. Refused (400 bad_host, RFC 9112
 * §3.2): more than one Host line (node keeps the first in req.headers and drops the others, so the raw
 * lines are counted), and a value that is not `host[:port]`. The host is an `[IPv6]` literal or a name
 * or IPv4 address of letters, digits and `- . _ ~` (RFC 3986's unreserved characters): its reg-name also
 * allows `%`-escapes and `! $ & ' ( ) * + , ; =`, which no DNS name has and which are exactly what
 * breaks a URL, a header list or a page when an upstream builds one from X-Forwarded-Host (password-
 * reset links, cache keys). The port is up to five digits. An empty Host (HTTP/1.1 allows it) passes,
 * and no X-Forwarded-Host is made from it. One char-code loop over the value and one over the raw
 * header names (their lengths compared first).
 */
export function hostProblem(req: IncomingMessage): 'repeated' | 'invalid' | undefined {
  const raw = req.rawHeaders;
  let lines = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && (name.charCodeAt(0) | 32) === 104 /* h */ && name.toLowerCase() === 'host') lines++;
  }
  if (lines > 1) return 'repeated';
  const host = req.headers.host;
  return host === undefined || host === '' || validHost(host) ? undefined : 'invalid';
}

/** Throws 400 bad_host when the request's Host is repeated or not `host[:port]` (hostProblem). */
export function checkHost(req: IncomingMessage): void {
  const problem = hostProblem(req);
  if (problem === undefined) return;
  throw new GatewayError('bad_host', {
    message: problem === 'repeated' ? 'The request has more than one Host header (RFC 9112 §3.2).' : undefined,
    detail: { reason: `host_${problem}` },
  });
}

/** `host[:port]` as hostProblem accepts it. */
export function validHost(value: string): boolean {
  const n = value.length;
  if (n > 261) return false; // 255 for the name, ":" and five digits
  let i = 0;
  if (value.charCodeAt(0) === 91 /* [ */) {
    // IPv6 (RFC 3986 IP-literal, without IPvFuture and zone ids): hex digits, ":" and "." (an IPv4 tail)
    i = 1;
    let colons = 0;
    for (; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c === 93 /* ] */) break;
      if (c === 58) colons++;
      else if (!((c >= 48 && c <= 57) || ((c | 32) >= 97 && (c | 32) <= 102) || c === 46)) return false;
    }
    if (i === n || colons < 2) return false;
    i++;
  } else {
    for (; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c === 58 /* : */) break;
      const l = c | 32;
      // letters, digits, "-", ".", "_", "~"
      if (!((l >= 97 && l <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126)) return false;
    }
    if (i === 0 || i > 255) return false;
  }
  if (i === n) return true;
  if (value.charCodeAt(i) !== 58 || n - i - 1 > 5) return false;
  for (let j = i + 1; j < n; j++) {
    const c = value.charCodeAt(j);
    if (c < 48 || c > 57) return false;
  }
  return n - i - 1 === 0 || Number(value.slice(i + 1)) <= 65535;
}
