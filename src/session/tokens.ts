import { hash, randomBytes } from 'node:crypto';

/** Length of a user id (base64url characters): 12 bytes. */
export const UID_LENGTH = 16;
/** Length of a token hash: the user id (16 characters) and 128 bits of the token's SHA-256 (22). */
export const TOKEN_HASH_LENGTH = 38;

/**
 * A user's id in the store: the first 96 bits of SHA-256("appid\nopenid"), base64url (16 characters).
 * Not a secret (anyone who knows the appid and openid can compute it); it only lets the store find the
 * user's record from a token.
 */
export function userId(appid: string, openid: string): string {
  return hash('sha256', `${appid}\n${openid}`, 'buffer').toString('base64url', 0, 12);
}

/**
 * A new opaque session token for the user: their id's 12 bytes followed by 256 bits from the CSPRNG,
 * base64url (59 characters). The randomness is all in the last 32 bytes; the id only tells the store
 * where to look.
 */
export function newToken(who: { appid: string; openid: string }): string {
  const b = randomBytes(44);
  hash('sha256', `${who.appid}\n${who.openid}`, 'buffer').copy(b, 0, 0, 12);
  return b.toString('base64url');
}

/**
 * What the store keys a session by: the token's user id (its first 16 characters) followed by the first
 * 128 bits of the token's SHA-256, base64url (38 characters); the token itself is never stored.
 * One-shot crypto.hash() (no Hash object per request) into a buffer, the user id decoded into the same
 * buffer and the whole encoded from it at once: a flat string, where slicing the token or the digest's
 * encoding (or concatenating the two) would keep the longer strings alive behind every cached session's
 * key. (12 bytes are exactly 16 base64url characters, so the id's characters come out unchanged.)
 */
export function hashToken(token: string): string {
  const d = hash('sha256', token, 'buffer');
  d.copy(d, 12, 0, 16);
  d.write(token.slice(0, UID_LENGTH), 0, 12, 'base64url');
  return d.toString('base64url', 0, 28);
}
