/**
 * The one classifier of failed upstream requests, for proxied requests and WebSocket upgrades alike
 * (the proxy's client, proxy/upstream-client.ts, names its failures with undici's codes, as undici
 * does for upgrades): the `kind` label of wxgate_upstream_errors_total, and whether the failure
 * happened before a connection existed (so nothing reached the upstream and another target may be tried).
 */

export type UpstreamFailure = 'refused' | 'reset' | 'timeout' | 'other';

export function classify(err: Error & { code?: string }): UpstreamFailure {
  switch (err.code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'refused';
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'timeout';
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    default:
      return 'other';
  }
}

/** No connection was made (refused, unreachable, or the connect timed out): nothing reached the upstream. */
export function connectFailed(err: Error & { code?: string }, kind: UpstreamFailure = classify(err)): boolean {
  return kind === 'refused' || err.code === 'UND_ERR_CONNECT_TIMEOUT';
}

/** The error code a failure is answered with: 504 upstream_timeout or 502 upstream_unavailable. */
export function failureAnswer(kind: UpstreamFailure): 'upstream_timeout' | 'upstream_unavailable' {
  return kind === 'timeout' ? 'upstream_timeout' : 'upstream_unavailable';
}
