import type { RedisConnection } from '../redis/connection.js';
import type { AccessTokenAnswer, WechatClient } from './client.js';
import { WechatError } from './types.js';

/**
 * Where an access_token comes from (access-token.ts decides when): WeChat's `cgi-bin/stable_token` (up
 * to 3 tries on passing failures) or `cgi-bin/token`, or, tokenSource `external`, a Redis key or a URL
 * another system keeps it at. Tokens and secrets are never logged, nor put in error messages.
 */

export type TokenSource = 'stable_token' | 'token' | 'external';

export interface TokenApp {
  appid: string;
  tokenSource?: TokenSource;
  externalToken?: { redisKey?: string; url?: string };
}

/** WeChat's answers to a call made with a token that is not (or no longer) good. */
export const TOKEN_ERRCODES: ReadonlySet<number> = new Set([40001, 40014, 42001]);
export const isTokenError = (err: unknown): boolean =>
  err instanceof WechatError && err.kind === 'errcode' && err.errcode !== undefined && TOKEN_ERRCODES.has(err.errcode);

/** No usable access_token for the app (WeChat refused to give one, the external source has none, ...). */
export class AccessTokenError extends Error {
  constructor(
    readonly appid: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AccessTokenError';
  }
}

const HINTS: Record<number, string> = {
  40013: 'the appid is not valid: check wechat.apps',
  40125: 'the app secret is wrong: check wechat.apps[].secret',
  40164: "this server's IP is not in the app's IP whitelist",
  40243: 'the app secret is frozen',
  45009: "the app's daily quota for this API is spent",
  45011: 'called too often; retry later',
};

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const jitter = (ms: number) => ms * (0.5 + Math.random());

interface Logger {
  warn(obj: object, msg: string): void;
}

/**
 * Asks WeChat for the app's token: `token`, or `stable_token` (force: force_refresh) with up to
 * retryDelays.length more tries, after jittered waits, on passing failures (network, timeouts, -1).
 * A failure is logged with a hint for the errcodes an operator can fix, then thrown as AccessTokenError.
 */
export async function tokenFromWechat(
  wechat: WechatClient,
  appid: string,
  source: 'stable_token' | 'token',
  force: boolean,
  retryDelays: ReadonlyArray<number>,
  log: Logger,
): Promise<AccessTokenAnswer> {
  try {
    if (source === 'token') return await wechat.token(appid);
    for (let attempt = 0; ; attempt++) {
      try {
        return await wechat.stableToken(appid, force);
      } catch (err) {
        const passing = err instanceof WechatError && (err.kind !== 'errcode' || err.errcode === -1);
        if (!passing || attempt >= retryDelays.length) throw err;
        await sleep(jitter(retryDelays[attempt]!));
      }
    }
  } catch (err) {
    const w = err instanceof WechatError ? err : undefined;
    log.warn(
      { appid, api: source, kind: w?.kind, errcode: w?.errcode, errmsg: w?.errmsg, hint: w?.errcode === undefined ? undefined : HINTS[w.errcode] },
      'could not get an access_token from WeChat',
    );
    throw new AccessTokenError(appid, `WeChat ${source} gave no access_token`, { cause: err });
  }
}

/**
 * The token another system keeps: a Redis key (a plain token or JSON {access_token, expires_in}, its
 * TTL a deadline too) or a URL answering that JSON. `expiresAt` only when the source says.
 * Throws AccessTokenError naming only the error's kind: messages of Redis or fetch errors may carry the
 * key's value or the URL's query.
 */
export async function externalToken(
  appid: string,
  ext: { redisKey?: string; url?: string },
  redis: RedisConnection | undefined,
  timeout: number,
  now: number,
): Promise<{ token: string; expiresAt?: number }> {
  let token: unknown;
  let expiresAt: number | undefined;
  try {
    if (ext.redisKey !== undefined) {
      if (!redis) throw new Error('externalToken.redisKey needs session.store: redis');
      const key = ext.redisKey;
      const [value, pttl] = await Promise.all([redis.client.get(key), redis.client.pttl(key)]);
      if (value?.startsWith('{')) ({ token, expiresAt } = parseExternal(JSON.parse(value), now));
      else token = value;
      if (pttl > 0) expiresAt = Math.min(expiresAt ?? Infinity, now + pttl);
    } else if (ext.url !== undefined) {
      const res = await fetch(ext.url, { signal: AbortSignal.timeout(timeout), headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      ({ token, expiresAt } = parseExternal(await res.json(), now));
    }
  } catch (err) {
    throw new AccessTokenError(appid, `the external access_token source failed (${(err as Error)?.name ?? 'error'})`);
  }
  if (typeof token !== 'string' || token === '') throw new AccessTokenError(appid, 'the external access_token source has no token');
  return { token, ...(expiresAt !== undefined ? { expiresAt } : {}) };
}

function parseExternal(body: unknown, now: number): { token: unknown; expiresAt?: number } {
  const o = (body ?? {}) as { access_token?: unknown; expires_in?: unknown };
  const e = Number(o.expires_in);
  return { token: o.access_token, ...(Number.isFinite(e) && e > 0 ? { expiresAt: now + e * 1000 } : {}) };
}
