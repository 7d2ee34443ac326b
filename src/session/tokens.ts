import { createHash, randomBytes } from 'node:crypto';

/** A new opaque session token: 256 bits from the CSPRNG, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** What the store keys a session by (SHA-256, first 192 bits, base64url); the token itself is never stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest().subarray(0, 24).toString('base64url');
}

const BEARER = /^Bearer +([A-Za-z0-9_-]{43})$/i;

/**
 * The token from `Authorization: Bearer <token>`, or undefined when the header is absent or not exactly
 * one well-formed token (wrong length, other characters, two tokens, padding). The scheme is
 * case-insensitive (RFC 7235). Tokens anywhere else (query string, other headers) are ignored.
 */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || header.length > 200) return undefined;
  return BEARER.exec(header)?.[1];
}
