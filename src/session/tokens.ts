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

/** hashToken's work space: written and read back within one synchronous call, so one serves every call. */
const scratch = Buffer.allocUnsafeSlow(28);

/**
 * What the store keys a session by: the token's user id (its first 16 characters) followed by the first
 * 128 bits of the token's SHA-256, base64url (38 characters); the token itself is never stored.
 *
 * Runs on every authenticated request. The digest comes from one-shot crypto.hash() as a latin1 ('binary') string:
 * asked for as a Buffer it costs three times as much, since every Buffer it returns is a new native allocation
 * (`npm run bench:micro`; BENCHMARKS.md, "Two deletes, the token's hash"). Its bytes and the decoded user
 * id go into a scratch buffer, laid out as before (the digest's first 12 bytes under the id, for a string
 * whose first 16 characters decode to fewer), and the key is encoded from it at once: a flat new string,
 * where slicing the token or the digest's encoding (or concatenating the two) would keep the longer
 * strings, the raw token above all, alive behind every cached session's key. (12 bytes are exactly 16
 * base64url characters, so the id's characters come out unchanged.)
 */
export function hashToken(token: string): string {
  const digest = hash('sha256', token, 'binary'); // 'binary' is latin1: one character a byte
  scratch.write(digest, 0, 12, 'latin1');
  scratch.write(digest, 12, 16, 'latin1');
  scratch.write(token.slice(0, UID_LENGTH), 0, 12, 'base64url');
  return scratch.toString('base64url', 0, 28);
}

const kToken = Symbol('wxgate.lastToken');
const kHash = Symbol('wxgate.lastTokenHash');
/** Where hashOnce keeps the last token it hashed and its key: a client connection (a socket). */
type Memo = { [kToken]?: string; [kHash]?: string };

/**
 * hashToken, remembered on `holder` for the next call with the same token. The proxy passes the
 * request's connection: a keep-alive connection from an app carries its user's token request after
 * request, so a warm request's SHA-256 (about 3% of its CPU in `npm run bench:profile -- auth`) is
 * made once per connection. Another token on the same connection (a load balancer's connection shared
 * by many users) is compared, found different and hashed; the key is a function of the token alone, so
 * a remembered one is never another token's. Only the connection holds the token, and only as long as
 * it lives: the request had it anyway.
 */
export function hashOnce(holder: object, token: string): string {
  const m = holder as Memo;
  if (m[kToken] === token) return m[kHash]!;
  const h = hashToken(token);
  m[kToken] = token;
  m[kHash] = h;
  return h;
}
