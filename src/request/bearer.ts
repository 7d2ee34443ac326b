import type { IncomingMessage } from 'node:http';

/** How a request carries a session token: `Authorization: Bearer <token>`, the token shaped as session/tokens.ts makes it. */

/** Length of a token (base64url characters): the user id's 12 bytes and 32 random ones. */
export const TOKEN_LENGTH = 59;

const BEARER = /^Bearer +([A-Za-z0-9_-]{59})$/i;
const TOKEN = /^[A-Za-z0-9_-]{59}$/;

/** Whether a bare string (a cookie's value, say) is shaped like a token: exactly 59 base64url characters. */
export function isToken(value: string): boolean {
  return value.length === TOKEN_LENGTH && TOKEN.test(value);
}

/**
 * The token from `Authorization: Bearer <token>`, or undefined when the header is absent or not exactly
 * one well-formed token (wrong length, other characters, two tokens, padding). The scheme is
 * case-insensitive (RFC 7235). Tokens anywhere else (query string, other headers) are ignored.
 */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || header.length > 200) return undefined;
  return BEARER.exec(header)?.[1];
}

/**
 * The request's Authorization header, every line of it, or undefined when absent or empty. Node keeps
 * only the first of repeated Authorization lines in req.headers, so a second one would pass unseen;
 * joined, two lines are never one well-formed token.
 */
export function authorizationOf(req: IncomingMessage): string | undefined {
  const first = req.headers.authorization;
  if (!first) return undefined;
  const raw = req.rawHeaders;
  let lines = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') lines++;
  }
  return lines > 1 ? req.headersDistinct.authorization!.join(', ') : first;
}
