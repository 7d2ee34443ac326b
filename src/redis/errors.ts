import { GatewayError, type Answerable } from '../base/errors.js';
/**
 * What a Redis failure becomes: StoreUnavailableError (answered 503, never taken for "not found"), with a
 * message fit for logs: no command arguments, no token-like strings.
 */

/** Thrown by a store that cannot answer (down, slow, refusing writes). The gateway answers 503, never 401. */
export class StoreUnavailableError extends Error implements Answerable {
  readonly warn = 'session store unavailable';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
  gatewayError(): GatewayError {
    return new GatewayError('session_store_unavailable', { headers: { 'Retry-After': '1' } });
  }
}

/**
 * An error's message fit for logs and for StoreUnavailableError: first line only, no command arguments
 * (Redis echoes them in some errors), no long token-like strings (hashes, session keys, openids).
 */
export function safeMessage(err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err);
  return (raw.split('\n')[0] ?? '')
    .replace(/(with args beginning with:).*$/i, '$1 …')
    .replace(/[A-Za-z0-9+/_=-]{24,}/g, '…')
    .slice(0, 200);
}

/** A copy of a Redis error without what ioredis attaches to it (the command and its arguments). */
export function safeCause(err: unknown): Error {
  const e = new Error(safeMessage(err));
  if (err instanceof Error) e.name = err.name;
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string') Object.assign(e, { code });
  return e;
}

/** Redis refusing our credentials: reconnecting will not help until they match. */
export const AUTH_REFUSED = /^(WRONGPASS|NOAUTH|ERR invalid password)/;
