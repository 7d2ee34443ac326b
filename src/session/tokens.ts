import { hash, randomBytes } from 'node:crypto';
import { TOKEN_LENGTH } from '../request/bearer.js';

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

/** base64url's alphabet: a character's 6-bit value (BASE64URL_VALUE) and back (BASE64URL_CHAR). */
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const BASE64URL_VALUE = new Uint8Array(128);
const BASE64URL_CHAR = new Uint8Array(64);
for (let i = 0; i < 64; i++) {
  BASE64URL_VALUE[BASE64URL.charCodeAt(i)] = i;
  BASE64URL_CHAR[i] = BASE64URL.charCodeAt(i);
}
/** hashToken's work space: used and read back within one synchronous call, so one serves every call. */
const scratch = Buffer.allocUnsafeSlow(TOKEN_HASH_LENGTH);

/**
 * What the store keys a session by: the token's user id (its first 16 characters) followed by the first
 * 128 bits of the token's SHA-256, base64url (38 characters); the token itself is never stored.
 *
 * Runs on every authenticated request, so it is built for cost (1.2 µs against 2.4 µs in `npm run
 * bench:micro`; BENCHMARKS.md, "Two deletes, the token's hash"): one-shot crypto.hash() straight to a base64url string (a digest as a Buffer
 * costs three times as much: every Buffer it returns is a new native allocation), the id's characters and
 * the digest's first 21 characters copied as bytes into a scratch buffer, and the 22nd made from the
 * digest's character (its top 2 bits: 128 bits are 21 characters and 2 bits), then read out as one flat
 * new string. Slicing the token or the digest instead (or concatenating the pieces) would keep the
 * longer strings alive behind every cached session's key; the raw token above all.
 *
 * A string of another length than a token's is hashed the plain way, with the same result for any
 * token-shaped string: the fast path writes exactly 16 + 22 characters, never a byte left from the call
 * before.
 */
export function hashToken(token: string): string {
  if (token.length !== TOKEN_LENGTH) return hashTokenPlain(token);
  const digest = hash('sha256', token, 'base64url');
  scratch.write(token, 0, UID_LENGTH, 'latin1');
  scratch.write(digest, UID_LENGTH, 21, 'latin1');
  scratch[UID_LENGTH + 21] = BASE64URL_CHAR[BASE64URL_VALUE[digest.charCodeAt(21)]! & 0b110000]!;
  return scratch.toString('latin1', 0, TOKEN_HASH_LENGTH);
}

/** hashToken the plain way: the digest as bytes, the id decoded beside it, the whole encoded once. */
export function hashTokenPlain(token: string): string {
  const d = hash('sha256', token, 'buffer');
  d.copy(d, 12, 0, 16);
  d.write(token.slice(0, UID_LENGTH), 0, 12, 'base64url');
  return d.toString('base64url', 0, 28);
}
