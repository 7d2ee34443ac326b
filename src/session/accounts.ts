import { hash } from 'node:crypto';
import { userId } from './tokens.js';
import type { Identity } from './types.js';

/** Length of an account id: a kind letter and 16 base64url characters (96 bits). */
export const ACCOUNT_ID_LENGTH = 17;
const ACCOUNT_ID = /^[ui][A-Za-z0-9_-]{16}$/;

/**
 * The person behind an identity, as upstreams see it (X-User-Id): one id for every identity WeChat gives
 * the same unionid (the apps share an Open Platform account), else one per (appid, openid).
 *   "u" + the first 96 bits of SHA-256("union\nUNIONID"), base64url   with a unionid
 *   "i" + userId(appid, openid) (see tokens.ts)                        without
 * Derived, never assigned: every replica computes the same id with no lookup, and it survives a flushed
 * store. Two identities share an id exactly when they have the same unionid; they never merge otherwise.
 * Not a secret (anyone who knows the unionid, or the appid and openid, can compute it).
 */
export function accountId(who: Identity): string {
  if (who.unionid) return `u${hash('sha256', `union\n${who.unionid}`, 'buffer').toString('base64url', 0, 12)}`;
  return `i${userId(who.appid, who.openid)}`;
}

export function isAccountId(id: string): boolean {
  return id.length === ACCOUNT_ID_LENGTH && ACCOUNT_ID.test(id);
}
